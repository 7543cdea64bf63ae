"""Set-level LM feedback (CEIL): sampled subsets scored by the real LM, a file that
survives a kill, and refusals that name what to do."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import ricl
import training.set_feedback
from ricl.errors import ConfigError
from ricl.lm import TransformersLM
from training.feedback import FeedbackError, read_feedback, score_candidates
from training.set_feedback import read_set_feedback, sample_subsets, score_sets

N, K, M = 5, 3, 4  # candidates, demos per subset, subsets per query


def test_subsets_are_distinct_seeded_by_query_and_shown_most_relevant_last():
    drawn = sample_subsets(10, 4, 8, seed=0, query_id="q1")

    assert len(set(drawn)) == 8 and all(len(set(s)) == 4 for s in drawn)
    # candidate indices are in retrieval order (best first): shown in descending index
    assert all(list(s) == sorted(s, reverse=True) for s in drawn)
    assert sample_subsets(10, 4, 8, seed=0, query_id="q1") == drawn
    assert sample_subsets(10, 4, 8, seed=1, query_id="q1") != drawn
    assert sample_subsets(10, 4, 8, seed=0, query_id="q2") != drawn
    # few subsets exist: drawn from the full list, still distinct
    assert len(set(sample_subsets(5, 3, math.comb(5, 3), seed=0, query_id="q1"))) == 10


@pytest.fixture(scope="module")
def lm(local) -> TransformersLM:
    return local  # the default LM, float32, shared by the session


@pytest.fixture(scope="module")
def set_feedback(tmp_path_factory, pool, queries, trec, lm):
    path = tmp_path_factory.mktemp("sets") / "sets.jsonl"
    score_sets(pool, queries, trec.template, path, n_candidates=N, k=K, n_subsets=M, lm=lm,
               chunk_size=2, progress=False)
    return path


@pytest.mark.lm
def test_every_subset_is_scored_as_the_prompt_it_would_be(set_feedback, pool, queries, trec, lm):
    header, records = read_set_feedback(set_feedback)

    assert (header["k"], header["n_subsets"], header["n_candidates"]) == (K, M, N)
    assert sorted(r.query_id for r in records) == sorted(q["id"] for q in queries)
    template = ricl.Template(trec.template)
    by_id = {example.id: example for example in pool}
    prompts, answers, expected = [], [], []
    for record in records:
        assert record.query_id not in record.candidates and len(record.candidates) == N
        assert len(set(record.subsets)) == M
        for subset, score in zip(record.subsets, record.lm_scores):
            shown = [record.candidates[i] for i in subset]
            # ascending retriever score: the most relevant demo sits next to the query
            assert [record.retriever_scores[i] for i in subset] == sorted(
                record.retriever_scores[i] for i in subset)
            demos = [template.render_demo(by_id[c].fields("label")) for c in shown]
            prompts.append(template.join(demos, template.render_query({"input": record.query,
                                                                       "text": record.query})))
            answers.append(" " + record.answer)
            expected.append(score)
    # The shared-leading-demo KV cache gives the numbers of scoring each whole prompt.
    np.testing.assert_allclose(expected, lm.score(prompts, answers), atol=2e-3, rtol=0)
    # The subsets differ in what the LM makes of them.
    assert all(max(r.lm_scores) - min(r.lm_scores) > 1e-3 for r in records)


@pytest.mark.lm
def test_a_killed_set_scoring_run_resumes_to_the_same_file(tmp_path, monkeypatch, pool, queries, trec,
                                                            lm, set_feedback):
    expected = set_feedback.read_bytes()
    path = tmp_path / "sets.jsonl"
    score_chunk = training.set_feedback._score_set_chunk
    calls = []

    def killed_after_one_chunk(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt("killed")
        calls.append(1)
        return score_chunk(*args, **kwargs)

    options = dict(n_candidates=N, k=K, n_subsets=M, lm=lm, chunk_size=2, progress=False)
    monkeypatch.setattr(training.set_feedback, "_score_set_chunk", killed_after_one_chunk)
    with pytest.raises(KeyboardInterrupt):
        score_sets(pool, queries, trec.template, path, **options)
    monkeypatch.setattr(training.set_feedback, "_score_set_chunk", score_chunk)
    assert path.read_bytes() == b"".join(expected.splitlines(keepends=True)[:3])
    lines = expected.split(b"\n")  # then killed mid-line in the next chunk
    path.write_bytes(b"\n".join(lines[:4]) + b"\n" + lines[4][:30])

    score_sets(pool, queries, trec.template, path, **options)

    assert path.read_bytes() == expected


@pytest.mark.lm
def test_files_of_the_other_kind_or_other_settings_are_refused(tmp_path, set_feedback, pool, queries,
                                                               trec, lm):
    with pytest.raises(ConfigError, match="n_subsets"):
        score_sets(pool, queries, trec.template, set_feedback, n_candidates=N, k=K, n_subsets=M + 1,
                   lm=lm, progress=False)
    # per-demo feedback is neither resumed nor wiped as set feedback, and the other way round
    with pytest.raises(ConfigError, match="holds set feedback .*, not per-demo feedback"):
        score_candidates(pool, queries, trec.template, set_feedback, n_candidates=N, lm=lm,
                         resume=False, progress=False)
    with pytest.raises(FeedbackError, match="set feedback written by training.score_sets"):
        read_feedback(set_feedback)
    per_demo = tmp_path / "per-demo.jsonl"
    per_demo.write_text(json.dumps({"__feedback__": {"version": 1}}) + "\n")
    with pytest.raises(ConfigError, match="holds per-demo feedback .*, not set feedback"):
        score_sets(pool, queries, trec.template, per_demo, n_candidates=N, k=K, n_subsets=M, lm=lm,
                   progress=False)
    with pytest.raises(ConfigError, match="distinct subsets"):
        score_sets(pool, queries, trec.template, tmp_path / "x.jsonl", n_candidates=4, k=2,
                   n_subsets=7, lm=lm, progress=False)
    with pytest.raises(ConfigError, match="k=6"):
        score_sets(pool, queries, trec.template, tmp_path / "x.jsonl", n_candidates=5, k=6,
                   n_subsets=1, lm=lm, progress=False)


@pytest.mark.lm
def test_ceil_training_lowers_the_loss_and_the_model_serves_the_dpp_selector(tmp_path, set_feedback,
                                                                              pool, trec):
    from ricl.selectors import DPP_SCALE
    from training.train import read_card, train_retriever

    out = train_retriever(set_feedback, pool, tmp_path / "ceil", loss="ceil", epochs=4, batch_size=2,
                          lr=1e-4, seed=0)

    card = read_card(out)
    assert card["loss"] == "ceil" and card["steps"] == 12
    assert (card["selector"], card["dpp_scale"], card["k"], card["n_subsets"]) == ("dpp", DPP_SCALE, K, M)
    assert card["final_loss"] < card["initial_loss"]
    builder = ricl.PromptBuilder(pool, retriever=str(out), selector="dpp", k=3, template=trec.template)
    assert len(builder.build(trec.test[0]["text"]).demos) == 3
    # set feedback trains only the set loss, and the other way round
    with pytest.raises(FeedbackError, match="holds set feedback"):
        train_retriever(set_feedback, pool, tmp_path / "epr", loss="contrastive")
    with pytest.raises(ConfigError, match="scale"):
        train_retriever(set_feedback, pool, tmp_path / "bad", loss="ceil", scale=0)


@pytest.mark.lm
def test_score_sets_and_train_ceil_from_the_command_line(tmp_path, trec, capsys):
    from ricl.cli import main
    from training.train import read_card

    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps({"id": r["id"], "question": r["text"], "type": r["label"]}) + "\n"
                            for r in trec.pool[:40]))
    corpus = ["--corpus", str(data), "--input", "question", "--output", "type"]
    sets = tmp_path / "sets.jsonl"
    assert main(["score", "--sets", *corpus, "--template", trec.template,
                 "--n-queries", "3", "-L", "4", "-k", "2", "--subsets", "3", "--quiet",
                 "--out", str(sets)]) == 0
    assert "3 queries x 3 subsets of 2" in capsys.readouterr().out
    assert main(["train", str(sets), *corpus, "--loss", "ceil", "--max-steps", "1", "--batch-size", "2",
                 "--out", str(tmp_path / "ceil"), "--quiet"]) == 0
    assert "trained for the DPP selector at scale 0.1" in capsys.readouterr().out
    assert read_card(tmp_path / "ceil")["n_subsets"] == 3
