"""Predictions in one call, with the real default LM on a small real corpus."""

from __future__ import annotations

import numpy as np
import pytest

import ricl
from ricl.errors import ConfigError

pytestmark = pytest.mark.lm


@pytest.fixture(scope="module")
def lm():
    return ricl.TransformersLM()


@pytest.fixture(scope="module")
def builder(trec_corpus, trec):
    return ricl.PromptBuilder(trec_corpus, retriever="bm25", k=4, template=trec.template)


def test_classification_predicts_the_most_likely_label_with_its_prompt(builder, lm, trec_queries):
    predictions = ricl.Predictor(builder, lm).predict(trec_queries[:6])
    prompts = builder.build_many(trec_queries[:6])
    scores = lm.score_choices([p.text for p in prompts], [" " + w for w in builder.labels])
    for prediction, prompt, row in zip(predictions, prompts, scores):
        assert prediction.prompt == prompt
        assert prediction.output == builder.labels[int(np.argmax(row))]
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
        assert max(prediction.probabilities, key=prediction.probabilities.get) == prediction.output
        assert prediction.log_probs == pytest.approx(dict(zip(builder.labels, row)))


def test_calibration_and_predict_proba(builder, lm, trec_queries):
    predictor = ricl.Predictor(builder, lm, calibrate=True)
    predictions = predictor.predict(trec_queries[:4])
    for p in predictions:
        assert p.calibrated in builder.labels
        assert sum(p.calibrated_probabilities.values()) == pytest.approx(1.0)
    proba = predictor.predict_proba(trec_queries[:4])
    assert proba.shape == (4, len(builder.labels))
    assert proba.argmax(axis=1).tolist() == [builder.labels.index(p.output) for p in predictions]


def test_multiple_choice_and_generation(lm):
    records = [{"question": q, "answer": a} for q, a in [
        ("What is the capital of France?", "Paris"), ("What is 2 + 2?", "4"),
        ("What color is the sky on a clear day?", "blue"), ("How many legs has a spider?", "8")]]
    corpus = ricl.Corpus.from_records(records, input="question", output="answer")
    builder = ricl.PromptBuilder(corpus, retriever="bm25", k=2, template="Q: {input}\nA: {output}")
    predictor = ricl.Predictor(builder, lm, max_new_tokens=4)

    chosen = predictor.predict(["What is the capital of Italy?"], choices=[["Rome", "Banana"]])[0]
    assert chosen.output in ("Rome", "Banana")
    assert set(chosen.probabilities) == {"Rome", "Banana"}
    assert chosen.probabilities[chosen.output] >= 0.5

    generated = predictor.predict(["What is the capital of Spain?"])[0]
    assert isinstance(generated.output, str) and "\n" not in generated.output
    assert generated.probabilities == {}


def test_misuse_is_a_config_error(builder, lm):
    with pytest.raises(ConfigError, match="list of queries"):
        ricl.Predictor(builder, lm).predict("one query")
    with pytest.raises(ConfigError, match="lacks score_choices"):
        ricl.Predictor(builder, object())
    with pytest.raises(ConfigError, match="task"):
        ricl.Predictor(builder, lm, task="regression")
