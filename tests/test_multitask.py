"""One retriever for several suites (UDR): pooled feedback behind task instructions,
rounds of re-mining, and the instruction applied again at inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ricl
from eval.suites import load_suite
from retrievers import DenseRetriever
from ricl.errors import ConfigError
from training.feedback import read_feedback
from training.multitask import SUITE_INSTRUCTIONS, Task, train_udr
from training.train import read_card

pytestmark = pytest.mark.lm


def _task(name: str, n_pool: int = 50, n_queries: int = 4) -> Task:
    suite = load_suite(name, n_test=10, pool_size=n_pool, seed=0)
    corpus = suite.corpus()
    return Task(name, corpus, list(corpus)[:n_queries], suite.template, SUITE_INSTRUCTIONS[name])


@pytest.fixture(scope="module")
def udr(tmp_path_factory):
    from ricl.lm import TransformersLM

    work = tmp_path_factory.mktemp("udr")
    tasks = [_task("trec"), _task("sst2")]
    options = dict(rounds=2, n_candidates=3, lm=TransformersLM(batch_size=8), progress=False,
                   epochs=2, batch_size=4, lr=1e-4, seed=0)
    out = train_udr(tasks, work / "work", work / "model", **options)
    return tasks, work, out, options


def test_one_model_learns_every_task_behind_its_instruction(udr):
    tasks, work, out, _ = udr
    card = read_card(out)

    assert card["loss"] == "distill" and card["query_prompts"] == {
        "trec": SUITE_INSTRUCTIONS["trec"], "sst2": SUITE_INSTRUCTIONS["sst2"]}
    assert [t["name"] for t in card["tasks"]] == ["trec", "sst2"]
    # round 2 trains on from round 1
    assert Path(card["base_model"]).resolve() == (work / "work" / "round-1").resolve()
    # round 2's candidates come from round 1's model, under each task's instruction
    header, _ = read_feedback(work / "work" / "trec" / "feedback-r2-q4-L3.jsonl")
    assert "round-1" in header["retriever"] and SUITE_INSTRUCTIONS["trec"] in header["retriever"]
    assert read_feedback(work / "work" / "sst2" / "feedback-r1-q4-L3.jsonl")[0]["retriever"] == "bm25"


def test_the_instruction_is_put_before_queries_at_inference_and_kept_in_a_saved_index(udr, tmp_path):
    tasks, _, out, _ = udr
    trec = tasks[0]
    query = "Who wrote Hamlet ?"
    retriever = DenseRetriever(model=str(out), query_prompt_name="trec").index(trec.corpus)
    by_hand = retriever.encode([SUITE_INSTRUCTIONS["trec"] + query])
    np.testing.assert_allclose(retriever.encode_queries([query]), by_hand, atol=1e-6)
    plain = retriever.encode([query])
    assert not np.allclose(plain, by_hand, atol=1e-3)

    # a multi-task model will not guess the task
    with pytest.raises(ConfigError, match="trained with task instructions"):
        DenseRetriever(model=str(out)).index(trec.corpus).search([query], 2)
    unseen = DenseRetriever(model=str(out), query_prompt="Classify the sentence: ").index(trec.corpus)
    np.testing.assert_allclose(unseen.encode_queries([query]),
                               unseen.encode(["Classify the sentence: " + query]), atol=1e-6)

    builder = ricl.PromptBuilder(trec.corpus, retriever=str(out), k=2, template=trec.template,
                                 retriever_options={"query_prompt_name": "trec"})
    prompt = builder.build(query)
    builder.save(tmp_path / "index")
    again = ricl.PromptBuilder.load(tmp_path / "index").build(query)
    assert [d.id for d in again.demos] == [d.id for d in prompt.demos]
    assert ([d.id for d in prompt.demos] ==
            [trec.corpus[int(r)].id for r in retriever.search([query], 2).rows[0]][::-1])


def test_a_rerun_finds_every_step_done(udr):
    tasks, work, out, options = udr
    files = sorted((work / "work").rglob("feedback-*.jsonl"))
    stamps = [p.stat().st_mtime_ns for p in files] + [(out / "training_card.json").stat().st_mtime_ns]

    assert train_udr(tasks, work / "work", work / "model", **options) == work / "model"

    assert [p.stat().st_mtime_ns for p in files] + [
        (out / "training_card.json").stat().st_mtime_ns] == stamps
    with pytest.raises(ConfigError, match="two tasks"):
        train_udr(tasks[:1], work / "work", work / "other", **options)


def test_train_multitask_from_the_command_line(tmp_path, capsys):
    from ricl.cli import main

    assert main(["train-multitask", "--suite", "trec", "sst2", "--pool-size", "40", "--n-queries", "3",
                 "-L", "2", "--rounds", "1", "--max-steps", "1", "--batch-size", "2",
                 "--instruction", "sst2=Is the review positive or negative? ",
                 "--work", str(tmp_path / "work"), "--out", str(tmp_path / "model"), "--quiet"]) == 0
    assert "2 suites, 1 rounds" in capsys.readouterr().out
    assert read_card(tmp_path / "model")["query_prompts"]["sst2"] == "Is the review positive or negative? "
    assert main(["train-multitask", "--suite", "trec", "sst2", "--instruction", "agnews=x",
                 "--work", str(tmp_path / "w"), "--out", str(tmp_path / "m")]) == 2
