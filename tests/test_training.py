"""Learning a retriever from LM feedback: scoring that survives a kill, training that loads back."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ricl
import training.feedback
from ricl.errors import ConfigError, CorpusError
from ricl.lm import TransformersLM
from training.feedback import FeedbackError, read_feedback, score_candidates, split_prompts
from training.prefix_cache import score_shared_prefix, score_shared_prefixes
from training.train import read_card, train_retriever

pytestmark = pytest.mark.lm

N_CANDIDATES = 4


@pytest.fixture(scope="module")
def lm() -> TransformersLM:
    return TransformersLM(batch_size=8)


@pytest.fixture(scope="module")
def feedback(tmp_path_factory, pool, queries, trec, lm):
    path = tmp_path_factory.mktemp("feedback") / "feedback.jsonl"
    score_candidates(pool, queries, trec.template, path, n_candidates=N_CANDIDATES, lm=lm,
                     chunk_size=2, progress=False)
    return path


class ScoreOnlyLM:
    """A stand-in for a server LM: the ``ricl.LM`` protocol's ``score`` and nothing faster."""

    def __init__(self, lm: TransformersLM):
        self.lm = lm

    def score(self, prompts, continuations):
        return self.lm.score(prompts, continuations)


def test_shared_prefix_scoring_equals_plain_scoring(lm, pool, trec):
    template = ricl.Template(trec.template)
    prefixes, queries = split_prompts(template, pool[:3], pool[3:7], "label")
    suffixes = queries * 3 + [""]  # an empty suffix: the prefix's own last position predicts
    continuations = [" " + e.output for e in pool[3:7]] * 3 + [" human being"]
    prefix_of = [0] * 4 + [1] * 4 + [2] * 4 + [1]

    fast = score_shared_prefixes(lm, prefixes, suffixes, continuations, prefix_of)

    # The cut after "Question:" is where the tokenizer cuts anyway: the same ids as the joined prompt.
    prompts = [prefixes[p] + s for p, s in zip(prefix_of, suffixes)]
    np.testing.assert_allclose(fast, lm.score(prompts, continuations), atol=1e-3, rtol=0)
    prefix_ids, suffix_ids = lm.encode_prompts(prefixes), lm.encode_continuations(suffixes)
    plain = lm.score_ids([prefix_ids[p] + s for p, s in zip(prefix_of, suffix_ids)],
                         lm.encode_continuations(continuations))
    np.testing.assert_allclose(fast, plain, atol=1e-3, rtol=0)
    one = score_shared_prefix(lm, prefixes[1], suffixes[4:8], continuations[4:8])
    np.testing.assert_allclose(one, plain[4:8], atol=1e-3, rtol=0)


def test_feedback_file_has_one_line_per_query_and_never_the_query_itself(feedback, queries):
    header, records = read_feedback(feedback)

    assert header["n_candidates"] == N_CANDIDATES and header["retriever"] == "bm25"
    assert sorted(r.query_id for r in records) == sorted(q["id"] for q in queries)
    for record in records:
        assert len(record.candidates) == len(record.lm_scores) == N_CANDIDATES
        assert record.query_id not in record.candidates
        assert all(s < 0 for s in record.lm_scores) and record.zero_shot < 0
    # A demo helps the LM more often than not: the best candidate beats zero-shot.
    assert sum(max(r.lm_scores) > r.zero_shot for r in records) >= len(records) / 2


def test_a_server_lm_without_the_fast_method_gets_the_same_feedback(tmp_path, pool, queries, trec, lm,
                                                                     feedback):
    path = score_candidates(pool, queries[:2], trec.template, tmp_path / "f.jsonl",
                            n_candidates=N_CANDIDATES, lm=ScoreOnlyLM(lm), progress=False)

    _, fast = read_feedback(feedback)
    _, plain = read_feedback(path)
    by_id = {r.query_id: r for r in fast}
    for record in plain:
        assert record.candidates == by_id[record.query_id].candidates
        np.testing.assert_allclose(record.lm_scores, by_id[record.query_id].lm_scores, atol=1e-3)
        assert record.zero_shot == pytest.approx(by_id[record.query_id].zero_shot, abs=1e-3)


def test_a_killed_scoring_run_resumes_to_the_same_file(tmp_path, monkeypatch, pool, queries, trec, lm,
                                                        feedback):
    expected = feedback.read_bytes()  # written in one go, in chunks of two queries
    path = tmp_path / "feedback.jsonl"
    score_chunk = training.feedback._score_chunk
    chunks = []

    def killed_after_one_chunk(*args, **kwargs):
        if chunks:
            raise KeyboardInterrupt("killed")
        chunks.append(1)
        return score_chunk(*args, **kwargs)

    monkeypatch.setattr(training.feedback, "_score_chunk", killed_after_one_chunk)
    with pytest.raises(KeyboardInterrupt):
        score_candidates(pool, queries, trec.template, path, n_candidates=N_CANDIDATES, lm=lm,
                         chunk_size=2, progress=False)
    monkeypatch.setattr(training.feedback, "_score_chunk", score_chunk)
    assert path.read_bytes() == b"".join(expected.splitlines(keepends=True)[:3])  # header + 2 queries

    # Killed again while writing the next chunk: one of its lines whole, the other cut mid-way.
    lines = expected.split(b"\n")
    path.write_bytes(b"\n".join(lines[:4]) + b"\n" + lines[4][:25])

    score_candidates(pool, queries, trec.template, path, n_candidates=N_CANDIDATES, lm=lm,
                     chunk_size=2, progress=False)

    assert path.read_bytes() == expected


def test_resuming_with_other_settings_is_refused(feedback, pool, queries, trec, lm):
    with pytest.raises(ConfigError, match="n_candidates"):
        score_candidates(pool, queries, trec.template, feedback, n_candidates=3, lm=lm, progress=False)


def test_training_lowers_the_loss_and_the_model_loads_in_a_prompt_builder(tmp_path, feedback, pool, trec):
    out = train_retriever(feedback, pool, tmp_path / "retriever", loss="both", epochs=4, batch_size=4,
                          lr=1e-4, seed=0)

    card = read_card(out)
    assert card["loss"] == "both" and card["steps"] == 6
    assert card["final_loss"] < card["initial_loss"]
    builder = ricl.PromptBuilder(pool, retriever=str(out), k=2, template=trec.template)
    prompt = builder.build(trec.test[0]["text"])
    assert len(prompt.demos) == 2 and prompt.text.endswith("Answer type:")


def test_distill_splits_large_batches_into_micro_batches_with_the_same_steps(tmp_path, feedback,
                                                                           pool, monkeypatch):
    # Each distill query brings its candidates (1 + 4 texts here); a bound of 10 texts per
    # forward pass splits a batch of 4 queries into 2 micro-batches of 2, accumulated.
    import training.train

    options = dict(loss="distill", epochs=2, batch_size=4, lr=1e-4, seed=0)
    whole = read_card(train_retriever(feedback, pool, tmp_path / "whole", **options))
    monkeypatch.setattr(training.train, "_MAX_TEXTS_PER_FORWARD", 2 * (1 + N_CANDIDATES))
    assert training.train._micro_batch(4, read_feedback(feedback)[1]) == 2
    split = read_card(train_retriever(feedback, pool, tmp_path / "split", **options))
    assert split["steps"] == whole["steps"] == 3  # 6 queries x 2 epochs / 4
    assert split["initial_loss"] == pytest.approx(whole["initial_loss"], abs=1e-5)
    # dropout masks differ per micro-batch, so the runs agree in kind, not to the digit
    assert split["final_loss"] < 0.5 * split["initial_loss"]
    assert whole["final_loss"] < 0.5 * whole["initial_loss"]


def test_an_interrupted_training_run_resumes_to_the_same_model(tmp_path, feedback, pool):
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt("killed")

    options = dict(loss="contrastive", epochs=2, batch_size=3, lr=1e-4, top_p=2, n_hard_negatives=1,
                   seed=1, checkpoint_every=2)
    whole = train_retriever(feedback, pool, tmp_path / "whole", **options)
    with pytest.raises(KeyboardInterrupt):
        train_retriever(feedback, pool, tmp_path / "resumed", callbacks=[Kill()], **options)
    assert (tmp_path / "resumed.checkpoints" / "checkpoint-2").is_dir()
    resumed = train_retriever(feedback, pool, tmp_path / "resumed", **options)

    assert read_card(resumed)["steps"] == read_card(whole)["steps"] == 8
    assert read_card(resumed)["final_loss"] == pytest.approx(read_card(whole)["final_loss"], abs=1e-6)
    assert not (tmp_path / "resumed.checkpoints").exists()
    # a rerun after the end finds the finished model and leaves it as it is
    card_written = (resumed / "training_card.json").stat().st_mtime_ns
    assert train_retriever(feedback, pool, tmp_path / "resumed", **options) == resumed
    assert (resumed / "training_card.json").stat().st_mtime_ns == card_written
    assert not (tmp_path / "resumed.checkpoints").exists()


def test_bad_inputs_are_typed_errors(tmp_path, feedback, pool, queries, trec, lm):
    with pytest.raises(ConfigError, match="larger than the corpus"):
        score_candidates(pool, queries, trec.template, tmp_path / "a.jsonl", n_candidates=len(pool) + 1,
                         lm=lm, progress=False)
    unlabelled = [{key: value for key, value in q.items() if key != "label"} for q in queries]
    with pytest.raises(CorpusError, match="no output field 'label'"):
        score_candidates(pool, unlabelled, trec.template, tmp_path / "b.jsonl", lm=lm, progress=False)

    header_only = tmp_path / "empty.jsonl"
    header_only.write_text(feedback.read_text().splitlines()[0] + "\n")
    with pytest.raises(FeedbackError, match="no scored queries"):
        train_retriever(header_only, pool, tmp_path / "m")
    (tmp_path / "nothing.jsonl").write_text("")
    with pytest.raises(FeedbackError, match="empty"):
        train_retriever(tmp_path / "nothing.jsonl", pool, tmp_path / "m")

    lines = feedback.read_text().splitlines()
    stranger = json.loads(lines[1]) | {"candidates": ["not-in-the-pool"] + json.loads(lines[1])["candidates"][1:]}
    (tmp_path / "stranger.jsonl").write_text("\n".join([lines[0], json.dumps(stranger)]) + "\n")
    with pytest.raises(FeedbackError, match="not-in-the-pool"):
        train_retriever(tmp_path / "stranger.jsonl", pool, tmp_path / "m")

    no_answer = json.loads(lines[1]) | {"answer": ""}
    (tmp_path / "no_answer.jsonl").write_text("\n".join([lines[0], json.dumps(no_answer)]) + "\n")
    with pytest.raises(FeedbackError, match="no answer"):
        train_retriever(tmp_path / "no_answer.jsonl", pool, tmp_path / "m")

    small = ricl.Corpus.from_records(trec.pool[:3], input="text", output="label", labels=trec.labels)
    with pytest.raises(FeedbackError, match="not in the corpus"):
        train_retriever(feedback, small, tmp_path / "m")
    with pytest.raises(ConfigError, match="loss"):
        train_retriever(feedback, pool, tmp_path / "m", loss="triplet")


def test_label_agreement_reports_what_the_feedback_rewards(feedback, pool):
    from eval.experiments.trained import label_agreement

    labels = {example.id: example.output for example in pool}
    found = label_agreement(feedback, labels)
    # The real LM's feedback on TREC rewards demonstrations of the query's own type.
    assert found["lm_top_same"] >= found["retriever_top_same"]
    assert found["gain_same"] > found["gain_other"]
    assert 0.0 < found["same_label_share"] < 1.0
    # With every candidate relabelled away from the answers, no candidate agrees.
    unmatched = label_agreement(feedback, {key: "no such label" for key in labels})
    assert unmatched["lm_top_same"] == unmatched["same_label_share"] == 0.0
    assert np.isnan(unmatched["gain_same"])
