"""The grid runner end to end with the real LM on a tiny TREC split, and its resume."""

import json
import shutil
from types import SimpleNamespace

import pytest

from eval.grid import KEY_FIELDS, RESULTS, plan_cells, read_jsonl, row_key, run_grid
from eval.metrics import knn_vote
from eval.report import write_report
from eval.suites import load_suite
from ricl.errors import ConfigError

GRID = dict(retrievers=["bm25"], selectors=["similarity", "random"], ks=[0, 2], seeds=2,
            n_test=8, pool_size=200, progress=False)


class CountingLM:
    """The real LM, counting LM calls; raises on call number ``fail_at`` (an interruption)."""

    def __init__(self, lm, fail_at=None):
        self.lm, self.fail_at, self.calls = lm, fail_at, 0
        self.tokenizer = lm.tokenizer

    def _count(self):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")

    def score_choices(self, *args, **kwargs):
        self._count()
        return self.lm.score_choices(*args, **kwargs)

    def score(self, *args, **kwargs):
        self._count()
        return self.lm.score(*args, **kwargs)

    def generate(self, *args, **kwargs):
        self._count()
        return self.lm.generate(*args, **kwargs)


@pytest.fixture(scope="module")
def lm():
    """The real LM on one thread: these prompts are tiny, and when other jobs share the
    two cores a second torch thread makes every forward pass several times slower."""
    import torch

    from ricl.lm import TransformersLM

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield TransformersLM()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_trec():
    return load_suite("trec", n_test=8, pool_size=200)


@pytest.fixture(scope="module")
def grid(tmp_path_factory, lm, tiny_trec):
    out = tmp_path_factory.mktemp("grid")
    counting = CountingLM(lm)
    rows = run_grid([tiny_trec], out_dir=out, lm=counting, calibrate=True, **GRID)
    return out, rows, counting


def test_plan_runs_zero_shot_once_and_seeds_only_for_random():
    from eval.grid import SuiteRun

    suite = SimpleNamespace(name="toy", pool=[{"id": "p", "text": "a", "label": "x"}],
                            test=[{"id": "t", "text": "b", "label": "x"}], labels=("x", "y"),
                            template="{text} -> {output}")
    cells = plan_cells([SuiteRun(suite, 1, {"bm25": "bm25", "dense": "dense"})],
                       ["bm25", "dense"], ["similarity", "random", "dpp"], [0, 4, 8], [0, 1, 2],
                       n_test=1, calibrate=False, normalize="sum")
    methods = [(c.method, c.k, c.seed) for c in cells]
    assert methods.count(("zero-shot", 0, None)) == 1
    assert methods.count(("majority", None, None)) == 1
    assert sum(m == "bm25 + random" for m, _, _ in methods) == 2 * 3  # ks x seeds
    assert sum(m == "dense + dpp" for m, _, _ in methods) == 2  # deterministic: once per k
    assert [(k, s) for m, k, s in methods if m == "dense + knn-vote"] == [(4, None), (8, None)]
    assert len(cells) == 1 + 1 + 2 * 2 * (1 + 3 + 1 + 1)
    assert len({c.name for c in cells}) == len(cells)

    both = plan_cells([SuiteRun(suite, 1, {"dense": "dense"})], ["dense"], ["similarity"], [8],
                      [0], n_test=1, calibrate=False, normalize="sum", formats=["text", "chat"])
    methods = [c.method for c in both]
    assert methods == ["majority", "dense + similarity", "dense + similarity (chat)",
                       "dense + knn-vote"]  # the layout is an LM cell's, not the vote's
    assert len({c.key for c in both}) == len({c.name for c in both}) == 4
    old_row = {name: getattr(both[1], name) for name in KEY_FIELDS if name != "format"}
    assert row_key(old_row) == both[1].key  # a row from before formats reads as text

    orders = plan_cells([SuiteRun(suite, 1, {"dense": "dense"})], ["dense"], ["similarity"],
                        [0, 8], [0], n_test=1, calibrate=False, normalize="sum",
                        orders=["similar-last", "similar-first"])
    assert [c.method for c in orders] == [
        "majority", "zero-shot", "dense + similarity", "dense + similarity (similar-first)",
        "dense + knn-vote"]  # an order is an LM cell with demos' dimension, not zero-shot's
    assert len({c.key for c in orders}) == len({c.name for c in orders}) == 5
    assert orders[2].name == both[1].name  # the default order keeps the files it had
    older = {name: getattr(orders[2], name) for name in KEY_FIELDS if name != "order"}
    assert row_key(older) == orders[2].key  # a row from before orders reads as similar-last


def test_grid_refuses_an_unknown_order(tmp_path):
    with pytest.raises(ConfigError, match="order='best-first' is unknown"):
        run_grid(["trec"], ["bm25"], ["similarity"], [8], 1, 8, tmp_path / "grid",
                 order=["similar-last", "best-first"])
    assert not (tmp_path / "grid").exists()  # refused before anything is written


@pytest.mark.lm
def test_grid_writes_rows_and_predictions_per_cell(grid, tiny_trec):
    out, rows, counting = grid
    cells = [(r["method"], r["k"], r["seed"]) for r in rows]
    assert cells == [("majority", None, None), ("zero-shot", 0, None),
                     ("bm25 + similarity", 2, None), ("bm25 + random", 2, 0),
                     ("bm25 + random", 2, 1), ("bm25 + knn-vote", 2, None)]
    assert counting.calls == 4  # one batched LM call per LM cell, none for the baselines
    assert read_jsonl(out / RESULTS) == rows
    test_ids = [r["id"] for r in tiny_trec.test]
    for row in rows:
        assert row["n"] == 8 and 0.0 <= row["value"] <= 1.0
        assert sum(row["label_counts"].values()) == 8
        predictions = read_jsonl(out / row["predictions"])
        assert [p["id"] for p in predictions] == test_ids
        assert row["value"] == pytest.approx(sum(p["correct"] for p in predictions) / 8)
        if row["uses_lm"]:
            assert row["calibrated"]["label_counts"] and "calibrated_prediction" in predictions[0]
            assert set(predictions[0]["scores"]) == set(tiny_trec.labels)
            assert all(len(p["demo_ids"]) == row["k"] for p in predictions)
    by = {(r["method"], r["seed"]): read_jsonl(out / r["predictions"]) for r in rows}
    seed0, seed1 = by[("bm25 + random", 0)], by[("bm25 + random", 1)]
    assert [p["demo_ids"] for p in seed0] != [p["demo_ids"] for p in seed1]
    # the kNN vote row votes over exactly the similarity cell's demos
    similar = by[("bm25 + similarity", None)]
    knn = by[("bm25 + knn-vote", None)]
    assert [p["demo_ids"] for p in knn] == [p["demo_ids"] for p in similar]
    for p in knn:
        demos = [SimpleNamespace(output=o, score=s, rank=i)
                 for i, (o, s) in enumerate(zip(p["demo_labels"], p["demo_scores"]))]
        assert p["prediction"] == knn_vote(demos)

    report = write_report(out / RESULTS, out / "report")
    text = report.read_text()
    assert "| bm25 + similarity |" in text and "## Contextual calibration" in text
    assert (out / "report" / "accuracy_vs_k.png").stat().st_size > 5000


@pytest.mark.lm
def test_a_rerun_skips_finished_cells_and_redoes_a_deleted_one(grid, tmp_path, lm, tiny_trec):
    out = tmp_path / "run"
    shutil.copytree(grid[0], out)
    again = CountingLM(lm)
    rows = run_grid([tiny_trec], out_dir=out, lm=again, calibrate=True, **GRID)
    assert again.calls == 0
    assert rows == grid[1]

    similar = next(r for r in rows if r["method"] == "bm25 + similarity")
    (out / similar["predictions"]).unlink()
    redo = CountingLM(lm)
    rows = run_grid([tiny_trec], out_dir=out, lm=redo, calibrate=True, **GRID)
    assert redo.calls == 1
    assert len(read_jsonl(out / RESULTS)) == len(rows)  # replaced, not duplicated
    assert [r["value"] for r in rows] == [r["value"] for r in grid[1]]


@pytest.mark.lm
def test_an_interrupted_grid_resumes_where_it_stopped(tmp_path, lm, tiny_trec):
    settings = dict(GRID, selectors=["similarity"], seeds=1, n_test=4)
    first = CountingLM(lm, fail_at=2)  # zero-shot finishes; bm25 + similarity is interrupted
    with pytest.raises(KeyboardInterrupt):
        run_grid([tiny_trec], out_dir=tmp_path, lm=first, **settings)
    finished = read_jsonl(tmp_path / RESULTS)
    assert [r["method"] for r in finished] == ["majority", "zero-shot"]

    second = CountingLM(lm)
    rows = run_grid([tiny_trec], out_dir=tmp_path, lm=second, **settings)
    assert second.calls == 1  # only the interrupted cell
    assert [r["method"] for r in rows] == ["majority", "zero-shot", "bm25 + similarity",
                                           "bm25 + knn-vote"]
    assert rows[:2] == finished
    assert not list(tmp_path.glob("**/.*.tmp-*"))  # no temporary files left behind


def _qa_suite(task):
    """A hand-made suite with the schema of the QA suites (a few real-world facts)."""
    facts = [("What is the capital of France?", "Paris", ["Paris"]),
             ("What is the capital of Italy?", "Rome", ["Rome", "Roma"]),
             ("What is the capital of Japan?", "Tokyo", ["Tokyo"]),
             ("What is the capital of Germany?", "Berlin", ["Berlin"]),
             ("What is the capital of Spain?", "Madrid", ["Madrid"]),
             ("Who wrote Hamlet?", "William Shakespeare", ["Shakespeare", "William Shakespeare"])]
    records = []
    for i, (question, label, answers) in enumerate(facts):
        others = [f[1] for f in facts if f[1] != label][:2]
        records.append({"id": f"q{i}", "question": question, "label": label, "answers": answers,
                        "choices": sorted([label] + others)})
    from eval.suites import Suite

    return Suite(name=f"toy-{task}", task=task, input_fields=("question",), labels=(),
                 template="Question: {question}\nAnswer: {output}",
                 metric="exact_match_f1" if task == "open_qa" else "accuracy",
                 pool=tuple(records[:4]), test=tuple(records[4:]), source="hand-made",
                 license="facts", notes="")


@pytest.mark.lm
@pytest.mark.parametrize("task", ["open_qa", "multiple_choice"])
def test_qa_and_multiple_choice_cells(tmp_path, lm, task):
    rows = run_grid([_qa_suite(task)], ["bm25"], ["similarity"], [2], 1, 2, tmp_path, lm=lm,
                    progress=False)
    assert [r["method"] for r in rows] == ["bm25 + similarity"]  # no label baselines here
    row = rows[0]
    predictions = read_jsonl(tmp_path / row["predictions"])
    assert len(predictions) == 2 and row["n"] == 2
    if task == "open_qa":
        assert row["metric"] == "exact_match" and 0 <= row["exact_match"] <= row["f1"] <= 1
        assert predictions[1]["gold"] == ["Shakespeare", "William Shakespeare"]
        assert all(isinstance(p["prediction"], str) for p in predictions)
    else:
        assert row["metric"] == "accuracy"
        assert all(p["prediction"] in p["choices"] and len(p["scores"]) == 3 for p in predictions)
    assert json.loads((tmp_path / RESULTS).read_text().splitlines()[0])["task"] == task
    report = write_report(tmp_path / RESULTS).read_text()
    assert f"| bm25 + similarity | **{row['value']:.3f}**" in report


def test_content_free_prompts_keep_the_demos_and_replace_the_query(trec_corpus, trec_queries, bm25):
    import ricl
    from ricl.inference import CONTENT_FREE, content_free_prompts

    builder = ricl.PromptBuilder(trec_corpus, retriever=bm25, selector="similarity", k=3,
                                 template="Question: {input}\nAnswer type: {output}")
    prompt = builder.build(trec_queries[0])
    variants = content_free_prompts([prompt], builder.template, ["text"])[0]
    head = prompt.text[:prompt.text.rindex("Question: ")]
    assert variants == [head + f"Question: {cf}\nAnswer type:" for cf in CONTENT_FREE]
    assert all(variant.count("Answer type: ") == 3 for variant in variants)  # the 3 demos


@pytest.mark.lm
def test_eval_command_runs_a_grid_and_writes_the_report(tmp_path, capsys, monkeypatch, lm):
    import argparse

    from eval.commands import register

    monkeypatch.setattr("ricl.lm.TransformersLM", lambda dtype="float32": lm)  # the loaded default LM

    parser = argparse.ArgumentParser(prog="ricl")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--suite", "trec", "--retriever", "bm25", "--selector",
                              "similarity", "-k", "0", "1", "--n-test", "3", "--pool-size", "50",
                              "--out", str(tmp_path), "--quiet"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "4 cells in" in out and "bm25 + similarity" in out
    assert (tmp_path / "report.md").is_file() and (tmp_path / "bars_k1.png").is_file()
