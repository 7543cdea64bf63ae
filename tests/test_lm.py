"""TransformersLM's fast paths give the numbers of the plain, one-pair-at-a-time computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ricl.errors import ConfigError
from ricl.lm import LM, TransformersLM

pytestmark = pytest.mark.lm
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(
               not torch.cuda.is_available(), reason="no GPU: torch.cuda.is_available() is False"))]

PROMPTS = [
    "Review: a warm, funny and moving film\nSentiment:",
    "Hi",
    "Question: Which city hosted the 1992 Olympics?\nAnswer type:",
    "Article: " + "Shares fell sharply on Monday as investors weighed the central bank's next move. " * 8
    + "\nTopic:",
    "Review: dull\nSentiment:",
]


@pytest.fixture(scope="module", params=DEVICES)
def lm(request) -> TransformersLM:
    """The same tests on every device torch offers: the CPU always, a GPU when present."""
    return TransformersLM(batch_size=4, device=request.param)


def naive_score(lm: TransformersLM, prompt: str, continuation: str) -> float:
    """The whole prompt+continuation through the model alone, log-softmax at every position."""
    prompt_ids = lm.tokenizer(prompt).input_ids
    cont_ids = lm.tokenizer(continuation, add_special_tokens=False).input_ids
    with torch.inference_mode():
        logits = lm.model(torch.tensor([prompt_ids + cont_ids], device=lm.device)).logits[0]
    log_probs = logits.float().log_softmax(-1)
    return sum(log_probs[len(prompt_ids) - 1 + t, tok].item() for t, tok in enumerate(cont_ids))


def naive_matrix(lm, prompts, choices):
    return np.array([[naive_score(lm, p, c) for c in choices] for p in prompts])


def test_transformers_lm_follows_the_protocol(lm):
    assert isinstance(lm, LM)


def test_single_token_labels_match_the_naive_reference(lm):
    choices = [" negative", " positive"]
    assert all(len(ids) == 1 for ids in lm.tokenizer(choices, add_special_tokens=False).input_ids)

    scores = lm.score_choices(PROMPTS, choices)

    assert scores.shape == (len(PROMPTS), 2)
    np.testing.assert_allclose(scores, naive_matrix(lm, PROMPTS, choices), atol=1e-4, rtol=0)


def test_multi_token_choices_match_the_naive_reference(lm):
    choices = [" description", " human being", " location"]
    lengths = [len(ids) for ids in lm.tokenizer(choices, add_special_tokens=False).input_ids]
    assert max(lengths) > 1

    total = lm.score_choices(PROMPTS, choices)
    mean = lm.score_choices(PROMPTS, choices, normalize="mean")

    np.testing.assert_allclose(total, naive_matrix(lm, PROMPTS, choices), atol=1e-4, rtol=0)
    np.testing.assert_allclose(mean, total / np.array(lengths), atol=1e-9)


def test_batching_prompts_of_very_different_lengths_changes_nothing(lm):
    prompts = ["Yes or no?", "Review: " + "long winding and slow, " * 30 + "\nSentiment:", "Sentiment:"]
    one_by_one = TransformersLM((lm.model, lm.tokenizer), batch_size=1)

    for choices in ([" negative", " positive"], [" very bad", " fine", " not good at all"]):
        np.testing.assert_allclose(
            lm.score_choices(prompts, choices), one_by_one.score_choices(prompts, choices), atol=1e-4, rtol=0
        )


def test_pairwise_score_matches_the_naive_reference(lm):
    continuations = [" positive", " there", " entity: a city", " business news, mostly", ""]

    scores = lm.score(PROMPTS, continuations)

    expected = [naive_score(lm, p, c) for p, c in zip(PROMPTS, continuations)]
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)
    assert scores[-1] == 0.0  # an empty continuation costs nothing


def test_generate_stops_at_a_newline_and_trims_it(lm):
    prompts = ["Fruits:\n- apple\n- banana\n- cherry\n-", "Count: 1, 2, 3, 4,"]

    stopped = lm.generate(prompts, max_new_tokens=12)
    running = lm.generate(prompts, max_new_tokens=12, stop=())

    assert "\n" in running[0] and stopped[0] == running[0].split("\n")[0]
    assert stopped[0].strip()
    assert all("\n" not in text for text in stopped)
    assert stopped[1] == running[1].split("\n")[0]
    assert lm.generate(prompts[1:], max_new_tokens=12) == stopped[1:]  # batching changes nothing


def test_count_tokens_matches_the_tokenizer(lm):
    texts = ["Review: fine\nSentiment: positive", "", "über 42 tokens?"]

    assert lm.count_tokens(texts) == [len(lm.tokenizer(t).input_ids) for t in texts]


def test_bad_arguments_are_config_errors(lm):
    with pytest.raises(ConfigError, match="2 prompts and 1 continuations"):
        lm.score(["a", "b"], [" c"])
    with pytest.raises(ConfigError, match="normalize"):
        lm.score_choices(["a"], [" b"], normalize="max")
    with pytest.raises(ConfigError, match="single string"):
        lm.score_choices("a prompt", [" b"])
    with pytest.raises(ConfigError, match="empty"):
        lm.score_choices(["a"], [" b", ""])


def test_bfloat16_is_a_rounding_of_float32_not_another_model(lm):
    """bfloat16 weights move log-probs by rounding only: same shapes, close values,
    the same best label on clear-cut prompts; float32 stays the default."""
    fast = TransformersLM(batch_size=4, dtype="bfloat16", device=lm.device)
    assert fast.model.dtype == torch.bfloat16 and lm.model.dtype == torch.float32
    assert TransformersLM(batch_size=4, device=lm.device).model is lm.model  # fp32 copy shared
    choices = [" positive", " negative", " a city", " business"]
    exact, rounded = lm.score_choices(PROMPTS, choices), fast.score_choices(PROMPTS, choices)
    assert rounded.shape == exact.shape and np.all(np.isfinite(rounded))
    assert np.abs(rounded - exact).max() < 0.5
    assert np.array_equal(rounded[[0, 4]].argmax(1), exact[[0, 4]].argmax(1))
    # Within the bfloat16 model, the fast paths match its own naive computation up to
    # bfloat16 rounding, which depends on batch shapes (measured: at most 0.15 nats).
    assert np.allclose(rounded, naive_matrix(fast, PROMPTS, choices), atol=0.3)
    with pytest.raises(ConfigError, match="dtype"):
        TransformersLM(dtype="float64")
