import json
import subprocess
import sys

from ricl.cli import main


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


def test_console_script_lists_suites():
    result = subprocess.run([sys.executable, "-m", "ricl.cli", "suites"], capture_output=True,
                            text=True, check=True)
    assert "| trec | 5869 |" in result.stdout
