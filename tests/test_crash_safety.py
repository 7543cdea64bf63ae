"""kill -9 in real processes: while saving an index (the directory holds the old index or
the new one, complete, and loads), while scoring feedback (the resumed file loses and
repeats no query) and while training (the rerun resumes from the last whole checkpoint)."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import ricl
from ricl.cli import main
from training.feedback import read_feedback
from training.train import read_card

WRITER = textwrap.dedent("""
    import sys
    import ricl
    from eval.suites import load_suite

    out = sys.argv[1]
    suite = load_suite("trec", n_test=10, pool_size=1500, seed=0)
    builders = []
    for size in (1500, 1200):  # two different indexes, saved in turn
        corpus = ricl.Corpus.from_records(suite.pool[:size], input="text", output="label")
        builder = ricl.PromptBuilder(corpus, retriever="bm25", k=4, tokenizer=None)
        builder.index()
        builders.append(builder)
    saves = 0
    while True:
        builders[saves % 2].save(out)
        saves += 1
        print(saves, flush=True)
""")


def _kill_after_first_write(script: str, out: Path, delay: float) -> None:
    """Run ``script`` on ``out`` until it reports one whole write, then kill -9 it ``delay``
    seconds later, most likely in the middle of the next one."""
    writer = subprocess.Popen([sys.executable, "-c", script, str(out)],
                              stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    assert writer.stdout.readline().strip()  # at least one complete write happened
    time.sleep(delay)
    writer.send_signal(signal.SIGKILL)
    writer.wait()


@pytest.mark.subprocess
def test_kill_9_during_index_save_leaves_a_loadable_index(tmp_path):
    out = tmp_path / "idx"
    rng = random.Random(0)
    for attempt in range(6):
        _kill_after_first_write(WRITER, out, rng.uniform(0.0, 0.4))
        loaded = ricl.PromptBuilder.load(out)
        assert len(loaded.corpus) in (1500, 1200)
        assert loaded.retriever.search(["Who wrote Hamlet ?"], n=3).rows[0].size == 3
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "idx"]
    assert len(leftovers) <= 1  # at most the temp dir of the last killed writer


FILE_WRITER = textwrap.dedent("""
    import gzip, sys
    from ricl.io import atomic_file

    out, writes = sys.argv[1], 0
    while True:  # alternate two versions, each streamed line by line through gzip
        version = writes % 2
        with atomic_file(out) as tmp, gzip.open(tmp, "wt") as stream:
            for i in range(200_000):
                stream.write(f"{version} {i}\\n")
        writes += 1
        print(writes, flush=True)
""")


@pytest.mark.subprocess
def test_kill_9_during_a_streamed_file_write_leaves_a_whole_version(tmp_path):
    import gzip

    from ricl.io import atomic_write_text

    out = tmp_path / "lines.gz"
    rng = random.Random(1)
    for attempt in range(4):
        _kill_after_first_write(FILE_WRITER, out, rng.uniform(0.0, 0.3))
        lines = gzip.decompress(out.read_bytes()).decode().splitlines()
        assert len(lines) == 200_000 and len({line.split()[0] for line in lines}) == 1
    # the next write to the same path removes temporary files of killed writers
    atomic_write_text(out, "done\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lines.gz"]
    assert out.read_text() == "done\n"


# -- kill -9 during feedback scoring and training, real processes ------------------------------

RICL = [sys.executable, "-c", "import sys; from ricl.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def score_args(tmp_path_factory, trec):
    data = tmp_path_factory.mktemp("pool") / "pool.jsonl"
    data.write_text("".join(json.dumps({"question": r["text"], "type": r["label"]}) + "\n"
                            for r in trec.pool[:80]))
    corpus = ["--corpus", str(data), "--input", "question", "--output", "type"]
    score = ["score", *corpus, "--template", "Question: {question}\nType: {type}",
             "--n-queries", "16", "-L", "4", "--chunk-size", "1", "--batch-size", "8", "--quiet"]
    return corpus, score


@pytest.fixture(scope="module")
def reference_feedback(tmp_path_factory, score_args):
    """The feedback file of one uninterrupted run."""
    path = tmp_path_factory.mktemp("reference") / "feedback.jsonl"
    assert main([*score_args[1], "--out", str(path)]) == 0
    return path


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _kill_when(process: subprocess.Popen, ready, rng: random.Random, timeout: float = 300) -> None:
    """SIGKILL the process a random moment after ``ready()`` first holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the process ended before it could be killed"
        assert time.monotonic() < deadline, "the process made no progress"
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.5))
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.lm
@pytest.mark.subprocess
def test_kill_9_during_feedback_scoring_resumes_without_loss_or_duplicates(tmp_path, score_args,
                                                                            reference_feedback):
    _, expected = read_feedback(reference_feedback)
    path, rng = tmp_path / "feedback.jsonl", random.Random(1)
    interrupted = 0  # kills that left scoring unfinished: the resume below has work to do
    for attempt in range(3):
        before = _lines(path)
        scorer = subprocess.Popen([*RICL, *score_args[1], "--out", str(path)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # killed once it has written something new: mid-chunk, mid-batch or mid-write
        _kill_when(scorer, lambda: _lines(path) > max(before, 1), rng)
        assert scorer.returncode == -signal.SIGKILL  # killed, not finished
        _, partial = read_feedback(path)  # a torn last line is ignored, never an error
        assert [r.query_id for r in partial] == [r.query_id for r in expected[:len(partial)]]
        if len(partial) == len(expected):
            break
        interrupted += 1
    assert interrupted >= 1, "every kill came after the last query: nothing was resumed"
    assert main([*score_args[1], "--out", str(path)]) == 0  # resume to the end
    _, resumed = read_feedback(path)
    assert [r.query_id for r in resumed] == [r.query_id for r in expected]  # none lost, none twice
    for got, want in zip(resumed, expected):
        assert got.candidates == want.candidates
        np.testing.assert_allclose(got.lm_scores, want.lm_scores, atol=1e-4)
        assert got.zero_shot == pytest.approx(want.zero_shot, abs=1e-4)


@pytest.mark.lm
@pytest.mark.subprocess
def test_kill_9_during_training_resumes_from_the_last_whole_checkpoint(tmp_path, score_args,
                                                                       reference_feedback):
    train = ["train", str(reference_feedback), *score_args[0], "--loss", "contrastive",
             "--epochs", "2", "--batch-size", "4", "--lr", "1e-4", "--checkpoint-every", "2",
             "--seed", "3", "--quiet"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([*train, "--out", str(whole)]) == 0
    checkpoints = tmp_path / "killed.checkpoints"
    trainer = subprocess.Popen([*RICL, *train, "--out", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # killed after its first whole checkpoint, possibly while it writes the next one
    _kill_when(trainer, lambda: (checkpoints / "checkpoint-2" / "trainer_state.json").is_file(),
               random.Random(2))
    assert not killed.exists()
    assert main([*train, "--out", str(killed)]) == 0
    assert read_card(killed)["steps"] == read_card(whole)["steps"]
    assert read_card(killed)["final_loss"] == pytest.approx(read_card(whole)["final_loss"], abs=1e-5)
    assert not checkpoints.exists()
