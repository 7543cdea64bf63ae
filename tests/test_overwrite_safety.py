"""No writer loses a user's files: an index, a retriever, a trained model, a model cache,
a checkpoints folder or a report is written only where nothing of the user's is.

Each writer is pointed at a planted user file and at a planted user directory (with a
file inside): both survive byte for byte and the writer raises ``OverwriteError``,
with or without ``overwrite=True``. A former ricl output is replaced when allowed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ricl
from eval.report import write_report
from ricl import models
from ricl.cli import main
from ricl.errors import OverwriteError
from ricl.io import MARKER, atomic_dir
from training.train import train_retriever

USER_BYTES = b"\\documentclass{article} % my thesis, three years of work\n"


@pytest.fixture(scope="module")
def corpus():
    records = [{"text": f"question {i} about {topic}", "label": topic}
               for i, topic in enumerate(["cats", "dogs", "rivers", "stars"] * 5)]
    return ricl.Corpus.from_records(records, input="text", output="label")


@pytest.fixture(scope="module")
def builder(corpus):
    return ricl.PromptBuilder(corpus, retriever="bm25", k=2).index()


def _user_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_bytes(USER_BYTES)
    return path


def _user_dir(tmp_path: Path) -> Path:
    path = tmp_path / "mydir"
    path.mkdir()
    (path / "thesis.tex").write_bytes(USER_BYTES)
    return path


def _assert_untouched(user_file: Path, user_dir: Path) -> None:
    assert user_file.read_bytes() == USER_BYTES
    assert sorted(p.name for p in user_dir.iterdir()) == ["thesis.tex"]
    assert (user_dir / "thesis.tex").read_bytes() == USER_BYTES


def _bm25_save(corpus, path, overwrite):
    ricl.BM25Retriever().index(corpus).save(path, overwrite=overwrite)


def _dense_save(corpus, path, overwrite, backend="exact"):
    vectors = np.random.default_rng(0).normal(size=(len(corpus), 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ricl.DenseRetriever(backend=backend).index(corpus, embeddings=vectors).save(
        path, overwrite=overwrite)


WRITERS = {
    "PromptBuilder.save": lambda b, c, path, overwrite: b.save(path, overwrite=overwrite),
    "BM25Retriever.save": lambda b, c, path, overwrite: _bm25_save(c, path, overwrite),
    "DenseRetriever.save": lambda b, c, path, overwrite: _dense_save(c, path, overwrite),
    "DenseRetriever.save (chroma)":
        lambda b, c, path, overwrite: _dense_save(c, path, overwrite, backend="chroma"),
}


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("overwrite", [False, True])
def test_index_writers_refuse_a_user_file_or_directory(writer, overwrite, tmp_path, builder, corpus):
    user_file, user_dir = _user_file(tmp_path), _user_dir(tmp_path)

    with pytest.raises(OverwriteError, match=r"notes\.txt is an existing file.*another path"):
        WRITERS[writer](builder, corpus, user_file, overwrite)
    with pytest.raises(OverwriteError, match=r"mydir is a directory ricl did not write.*thesis\.tex"):
        WRITERS[writer](builder, corpus, user_dir, overwrite)

    _assert_untouched(user_file, user_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydir", "notes.txt"]  # no temp left


@pytest.mark.parametrize("writer", WRITERS)
def test_index_writers_write_into_a_new_or_empty_dir_and_replace_their_own_output(
        writer, tmp_path, builder, corpus):
    (tmp_path / "empty").mkdir()
    WRITERS[writer](builder, corpus, tmp_path / "empty", False)
    WRITERS[writer](builder, corpus, tmp_path / "new" / "index", False)
    WRITERS[writer](builder, corpus, tmp_path / "new" / "index", False)  # re-save: replaced

    for path in (tmp_path / "empty", tmp_path / "new" / "index"):
        marker = json.loads((path / MARKER).read_text())
        assert marker["format"] == 1 and marker["kind"] in ("prompt-builder", "retriever")
        loaded = (ricl.PromptBuilder.load(path).retriever if writer == "PromptBuilder.save"
                  else ricl.load_retriever(path))
        assert len(loaded.corpus) == len(corpus)


def test_another_kind_of_ricl_output_is_replaced_only_with_overwrite(tmp_path, builder, corpus):
    retriever_dir = tmp_path / "index"
    ricl.BM25Retriever().index(corpus).save(retriever_dir)

    with pytest.raises(OverwriteError, match="holds a ricl retriever, not a prompt-builder.*"
                                             "overwrite=True"):
        builder.save(retriever_dir)
    assert ricl.load_retriever(retriever_dir).kind == "bm25"  # still the retriever

    builder.save(retriever_dir, overwrite=True)
    assert ricl.PromptBuilder.load(retriever_dir).k == 2


def test_a_directory_with_a_forged_or_broken_marker_is_still_the_users(tmp_path, builder):
    user_dir = _user_dir(tmp_path)
    (user_dir / MARKER).write_text("not json")
    with pytest.raises(OverwriteError, match="did not write"):
        builder.save(user_dir, overwrite=True)
    assert (user_dir / "thesis.tex").read_bytes() == USER_BYTES


def test_an_index_saved_before_markers_existed_is_refused_with_a_hint(tmp_path, builder):
    legacy = tmp_path / "old-index"
    builder.save(legacy)
    (legacy / MARKER).unlink()  # as ricl wrote it before this change
    with pytest.raises(OverwriteError, match="older than these markers, delete it yourself"):
        builder.save(legacy, overwrite=True)
    assert ricl.PromptBuilder.load(legacy).k == 2  # still there, still loads


def test_cli_index_refuses_a_user_directory_and_says_so(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"input": f"text {i}", "output": "a"}) + "\n"
                            for i in range(5)))
    user_dir = _user_dir(tmp_path)
    user_file = _user_file(tmp_path)
    for out in (user_dir, user_file):
        for flags in ([], ["--overwrite"]):
            code = main(["index", str(data), "--out", str(out), "--retriever", "bm25", *flags])
            assert code == 2
            assert "ricl index: error:" in capsys.readouterr().err
    _assert_untouched(user_file, user_dir)
    assert main(["index", str(data), "--out", str(tmp_path / "idx"), "--retriever", "bm25"]) == 0
    assert main(["index", str(data), "--out", str(tmp_path / "idx"), "--retriever", "bm25"]) == 0


# -- the trained model, its checkpoints folder, the model cache ------------------------------


@pytest.mark.parametrize("overwrite", [False, True])
def test_training_refuses_a_user_file_or_directory_before_training(overwrite, tmp_path, corpus):
    user_file, user_dir = _user_file(tmp_path), _user_dir(tmp_path)
    never_read = tmp_path / "feedback.jsonl"  # the check comes first: no feedback needed

    for out in (user_file, user_dir):
        with pytest.raises(OverwriteError, match="another path"):
            train_retriever(never_read, corpus, out, overwrite=overwrite)
    # the checkpoints folder beside out_dir is checked too: it is deleted after training
    (tmp_path / "model.checkpoints").mkdir()
    (tmp_path / "model.checkpoints" / "thesis.tex").write_bytes(USER_BYTES)
    with pytest.raises(OverwriteError, match=r"model\.checkpoints is a directory ricl did not write"):
        train_retriever(never_read, corpus, tmp_path / "model", overwrite=overwrite)

    _assert_untouched(user_file, user_dir)
    assert (tmp_path / "model.checkpoints" / "thesis.tex").read_bytes() == USER_BYTES
    assert not (tmp_path / "model").exists()


def test_training_over_a_saved_index_needs_overwrite(tmp_path, builder, corpus):
    from training.feedback import FeedbackError

    builder.save(tmp_path / "index")
    with pytest.raises(OverwriteError, match="holds a ricl prompt-builder, not a trained-retriever"):
        train_retriever(tmp_path / "feedback.jsonl", corpus, tmp_path / "index")
    # with overwrite=True the output path is accepted; this run then stops at its missing feedback
    with pytest.raises((FeedbackError, FileNotFoundError, ricl.errors.RiclError)) as caught:
        train_retriever(tmp_path / "feedback.jsonl", corpus, tmp_path / "index", overwrite=True)
    assert not isinstance(caught.value, OverwriteError)
    assert ricl.PromptBuilder.load(tmp_path / "index").k == 2  # untouched until training succeeds


def test_cli_train_refuses_a_user_directory(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"input": "a question", "output": "a"}) + "\n")
    user_dir = _user_dir(tmp_path)
    code = main(["train", str(tmp_path / "feedback.jsonl"), "--corpus", str(data),
                 "--out", str(user_dir), "--overwrite"])
    assert code == 2 and "did not write" in capsys.readouterr().err
    assert (user_dir / "thesis.tex").read_bytes() == USER_BYTES


def test_the_model_cache_never_replaces_a_file_and_never_rebuilds_a_directory(tmp_path):
    user_file, user_dir = _user_file(tmp_path), _user_dir(tmp_path)

    with pytest.raises(OverwriteError, match=r"notes\.txt is an existing file"):
        models.build_dir_atomically(user_file, lambda tmp: pytest.fail("checked before building"))
    assert models.build_dir_atomically(user_dir, lambda tmp: pytest.fail("must not build")) == user_dir

    _assert_untouched(user_file, user_dir)
    built = models.build_dir_atomically(tmp_path / "cache", lambda tmp: (tmp / "w.bin").write_text("w"))
    assert json.loads((built / MARKER).read_text()) == {"format": 1, "kind": "model-cache"}
    assert built.stat().st_mode & 0o777 == 0o755  # readable by other users of a shared cache


def test_atomic_dir_checks_before_the_caller_does_any_work(tmp_path):
    user_dir = _user_dir(tmp_path)
    work = []
    with pytest.raises(OverwriteError):
        with atomic_dir(user_dir, "retriever"):
            work.append("hours of encoding")
    assert work == []


# -- the report, written into a directory shared with the user --------------------------------


def _results(run_dir: Path) -> Path:
    """A results file with one zero-shot and one few-shot cell, as the grid writes them."""
    rows = []
    for selector, k in (("zero-shot", 0), ("similarity", 2)):
        method = selector if k == 0 else f"bm25 + {selector}"
        name = f"sst2__{selector}__k{k}.jsonl"
        (run_dir / "predictions").mkdir(parents=True, exist_ok=True)
        predictions = [{"id": f"s-{i}", "gold": "positive", "correct": i % 2 == 0,
                        "prediction": "positive" if i % 2 == 0 else "negative"} for i in range(4)]
        (run_dir / "predictions" / name).write_text(
            "".join(json.dumps(p) + "\n" for p in predictions))
        rows.append({"suite": "sst2", "retriever": "none" if k == 0 else "bm25",
                     "selector": selector, "k": k, "seed": None, "n_test": 4, "pool_size": 10,
                     "calibrate": False, "normalize": "sum", "method": method,
                     "task": "classification", "metric": "accuracy", "uses_lm": True, "n": 4,
                     "accuracy": 0.5, "value": 0.5, "stderr": 0.25,
                     "label_counts": {"positive": 2, "negative": 2},
                     "gold_counts": {"positive": 4, "negative": 0},
                     "predictions": f"predictions/{name}"})
    path = run_dir / "results.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_report_writes_beside_the_users_files_and_refuses_to_replace_them(tmp_path):
    results = _results(tmp_path)
    thesis = tmp_path / "thesis.tex"
    thesis.write_bytes(USER_BYTES)
    (tmp_path / "report.md").write_bytes(USER_BYTES)  # the user's own report.md

    with pytest.raises(OverwriteError, match=r"already holds report\.md.*Nothing was written"):
        write_report(results)
    assert (tmp_path / "report.md").read_bytes() == USER_BYTES
    assert not list(tmp_path.glob("*.png"))  # no plot written either: all or nothing
    assert not list(tmp_path.glob(".ricl-staging*"))

    (tmp_path / "report.md").unlink()
    report = write_report(results)
    assert report == tmp_path / "report.md" and "# ICL evaluation report" in report.read_text()
    assert thesis.read_bytes() == USER_BYTES
    assert write_report(results) == report  # its own files are replaced on a rerun

    report.write_text("my notes on the results\n")  # edited by the user: theirs now
    with pytest.raises(OverwriteError, match="changed since"):
        write_report(results)
    assert report.read_text() == "my notes on the results\n"


def test_report_refuses_a_user_directory_in_a_plots_place_and_a_file_as_out_dir(tmp_path):
    results = _results(tmp_path / "run")
    (tmp_path / "out" / "accuracy_vs_k.png").mkdir(parents=True)
    (tmp_path / "out" / "accuracy_vs_k.png" / "thesis.tex").write_bytes(USER_BYTES)
    with pytest.raises(OverwriteError, match=r"accuracy_vs_k\.png"):
        write_report(results, tmp_path / "out")
    assert (tmp_path / "out" / "accuracy_vs_k.png" / "thesis.tex").read_bytes() == USER_BYTES
    assert not (tmp_path / "out" / "report.md").exists()

    user_file = _user_file(tmp_path)
    with pytest.raises(OverwriteError, match=r"notes\.txt is an existing file"):
        write_report(results, user_file)
    assert user_file.read_bytes() == USER_BYTES


# -- the feedback file, which score_candidates starts over when resume=False -----------------


@pytest.mark.parametrize("resume", [True, False])
def test_scoring_never_starts_over_a_file_that_is_not_a_feedback_file(resume, tmp_path, corpus):
    from training.feedback import score_candidates

    user_file, user_dir = _user_file(tmp_path), _user_dir(tmp_path)
    for out in (user_file, user_dir):
        with pytest.raises(OverwriteError, match="feedback file"):
            score_candidates(corpus, corpus, "Q: {input}\nA: {output}", out, retriever="bm25",
                             n_candidates=2, resume=resume, progress=False)
    _assert_untouched(user_file, user_dir)


def test_a_grid_or_study_never_writes_into_a_users_directory(tmp_path):
    from eval.experiments.position import _Store
    from eval.grid.store import GridStore

    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("chapter one")
    for open_store in (GridStore, _Store):
        with pytest.raises(OverwriteError, match="did not write"):
            open_store(user)
    assert sorted(p.name for p in user.iterdir()) == ["thesis.tex"]
    assert (user / "thesis.tex").read_text() == "chapter one"

    run = GridStore(tmp_path / "run")  # new: created and marked, and accepted again later
    assert GridStore(run.out_dir).out_dir == run.out_dir
    with pytest.raises(OverwriteError, match="grid-run"):
        _Store(run.out_dir)  # another kind of ricl output is not a study's to add to
