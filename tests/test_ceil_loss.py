"""CEIL's loss: the kernel the DPP selector uses at inference, and a gradient that moves
the encoder toward the sets the LM prefers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ricl.selectors import DPP_SCALE, dpp_kernel
from training.losses import CEILLoss, pack_subsets, unpack_subsets

SUBSETS = [[5, 3, 1, 0], [4, 2, 1, 0], [7, 6, 5, 4], [6, 3, 2, 0]]


def test_training_kernel_is_the_selectors_kernel(dense, trec_queries):
    query = trec_queries[0]
    found = dense.search([query], 8, exclude_self=True)
    rows, relevance = found.rows[0], np.asarray(found.scores[0], dtype=np.float64)
    kernel = dpp_kernel(relevance, dense.kernel(rows), DPP_SCALE)  # what DPPSelector.select builds

    loss = CEILLoss(model=None, jitter=0.0)
    query_vector = torch.tensor(dense.encode_queries([query]), dtype=torch.float64)
    candidates = torch.tensor(dense.features(rows), dtype=torch.float64)[None]
    trained = loss.subset_log_dets(query_vector, candidates, torch.tensor([SUBSETS]))[0]

    expected = [np.linalg.slogdet(kernel[np.ix_(s, s)])[1] for s in SUBSETS]
    np.testing.assert_allclose(trained.numpy(), expected, atol=1e-4)
    # the jitter that keeps training finite moves these well-spread subsets very little
    jittered = CEILLoss(model=None).subset_log_dets(query_vector, candidates, torch.tensor([SUBSETS]))
    np.testing.assert_allclose(jittered[0].numpy(), expected, atol=5e-3)


def test_one_step_raises_the_set_the_lm_prefers_over_the_worst(trec):
    from sentence_transformers import SentenceTransformer

    from ricl.models import embedder_path

    torch.manual_seed(0)
    model = SentenceTransformer(str(embedder_path()), device="cpu", local_files_only=True)
    query = trec.test[0]["text"]
    texts = [record["text"] for record in trec.pool[:8]]
    loss = CEILLoss(model)
    subsets = torch.tensor([SUBSETS])

    def log_dets():
        q = model.encode([query], convert_to_tensor=True)
        c = model.encode(texts, convert_to_tensor=True)[None]
        return loss.subset_log_dets(q, c, subsets)[0]

    before = log_dets()
    # The LM prefers the set the DPP now likes least, and likes least the one it now prefers.
    order = before.argsort().tolist()
    lm_scores = torch.zeros(4)
    lm_scores[order[0]], lm_scores[order[-1]] = -1.0, -9.0
    lm_scores[order[1]], lm_scores[order[2]] = -4.0, -5.0

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    features = [model.preprocess([text]) for text in [query] + texts]
    labels = torch.tensor([pack_subsets(SUBSETS, lm_scores.tolist())])
    value = loss(features, labels)
    assert value > 0
    value.backward()
    optimizer.step()
    model.eval()

    after = log_dets()
    best, worst = order[0], order[-1]
    assert (after[best] - after[worst]) > (before[best] - before[worst])


def test_ties_rank_nothing_and_near_duplicates_stay_finite():
    loss = CEILLoss(model=None)
    queries = torch.randn(2, 16, requires_grad=True)
    base = torch.randn(2, 8, 16)
    candidates = torch.cat([base[:, :1], base[:, :1] + 1e-6, base[:, 2:]], dim=1).requires_grad_()
    subsets = torch.tensor([SUBSETS, SUBSETS])  # subset 0 and 1 hold the near-duplicate pair

    tied = loss.loss_from_embeddings(queries, candidates, subsets, torch.full((2, 4), -3.0))
    assert tied.item() == 0.0
    value = loss.loss_from_embeddings(queries, candidates, subsets, torch.tensor([[-1.0, -2, -3, -4]] * 2))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(candidates.grad).all()
    assert torch.isfinite(queries.grad).all()


def test_labels_pack_subsets_and_scores_and_unpack_exactly():
    labels = torch.tensor([pack_subsets(SUBSETS, [-1.5, -2.25, -0.125, -7.0])])
    subsets, scores = unpack_subsets(labels)
    assert subsets.tolist() == [SUBSETS]
    assert scores.tolist() == [[-1.5, -2.25, -0.125, -7.0]]
    with pytest.raises(ValueError, match="scale"):
        CEILLoss(model=None, scale=0.0)
