import json
import subprocess
import sys

import pytest

from ricl.cli import main
from training.feedback import HEADER_KEY


def test_index_then_prompt_from_the_command_line(tmp_path, trec, capsys):
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps({"question": r["text"], "type": r["label"]}) + "\n"
                            for r in trec.pool[:150]))
    out = tmp_path / "idx"
    assert main(["index", str(data), "--out", str(out), "--input", "question", "--output", "type",
                 "--retriever", "bm25", "-k", "3",
                 "--template", "Question: {question}\nType: {type}"]) == 0
    assert main(["prompt", str(out), "Who invented the telephone ?", "--json"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    prompt = json.loads(printed)
    assert prompt["text"].endswith("Question: Who invented the telephone ?\nType:")
    assert len(prompt["demos"]) == 3


def test_errors_are_one_line_messages_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no label here"}\n')
    code = main(["index", str(bad), "--out", str(tmp_path / "x"), "--input", "text",
                 "--output", "label", "--retriever", "bm25"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no output field 'label'" in err and "Traceback" not in err


@pytest.mark.subprocess
def test_console_script_lists_suites():
    result = subprocess.run([sys.executable, "-m", "ricl.cli", "suites"], capture_output=True,
                            text=True, check=True)
    assert "| trec | 5869 |" in result.stdout


@pytest.mark.lm
def test_score_train_then_index_with_the_trained_retriever(tmp_path, trec, capsys):
    """The LM-feedback loop from the shell: score (bfloat16), rerun resumes, train, index."""
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps({"question": r["text"], "type": r["label"]}) + "\n"
                            for r in trec.pool[:60]))
    corpus = ["--corpus", str(data), "--input", "question", "--output", "type"]
    feedback = tmp_path / "feedback.jsonl"
    score = ["score", *corpus, "--template", "Question: {question}\nType: {type}",
             "--n-queries", "6", "-L", "3", "--dtype", "bfloat16", "--out", str(feedback),
             "--quiet"]
    assert main(score) == 0
    lines = [json.loads(line) for line in feedback.read_text().splitlines()]
    assert "bfloat16" in lines[0][HEADER_KEY]["lm"] and len(lines) == 1 + 6
    assert main(score) == 0  # a rerun finds every query done and appends nothing
    assert len(feedback.read_text().splitlines()) == 1 + 6
    model = tmp_path / "retriever"
    assert main(["train", str(feedback), *corpus, "--loss", "distill", "--max-steps", "2",
                 "--batch-size", "3", "--out", str(model), "--quiet"]) == 0
    assert "trained retriever in" in capsys.readouterr().out
    index = tmp_path / "idx"
    assert main(["index", str(data), "--out", str(index), "--input", "question", "--output",
                 "type", "--retriever", str(model), "-k", "2"]) == 0
    assert main(["prompt", str(index), "Who wrote Hamlet ?", "--json"]) == 0
    prompt = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(prompt["demos"]) == 2
