"""Losses that teach a bi-encoder the LM's preferences over a query's candidates.

Like sentence-transformers' losses: an ``nn.Module`` that takes the model and is
called on the tokenized columns of a batch, ``(query, candidate_0 .. candidate_{n-1})``,
with labels: ``ListwiseDistillLoss`` takes the LM scores of the candidates, shape
(batch, n); ``CEILLoss`` takes sampled subsets of the candidates and their LM
scores, packed by ``pack_subsets`` into shape (batch, m, k + 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from ricl.selectors import DPP_SCALE


class ListwiseDistillLoss(nn.Module):
    """KL divergence from the LM's softmax over a candidate list to the retriever's.

    LLM-R (Wang et al. 2023, "Learning to Retrieve In-Context Examples for Large
    Language Models"): the teacher distribution is ``softmax(lm_scores / temperature)``
    over the query's candidates, the student's is
    ``softmax(cos(query, candidate) / retriever_temperature)``, and the loss is
    ``KL(teacher || student)`` averaged over queries.

    ``contrastive_weight > 0`` adds an InfoNCE term on the same embeddings (EPR,
    Rubin et al. 2022): the candidate the LM likes best is the positive; the
    ``n_hard_negatives`` it likes least and every other query's candidates in the
    batch are the negatives. The query's other, middling candidates are left out,
    since the LM does not call them bad.
    """

    def __init__(self, model: nn.Module, temperature: float = 1.0, retriever_temperature: float = 0.05,
                 contrastive_weight: float = 0.0, n_hard_negatives: int = 1):
        super().__init__()
        if temperature <= 0 or retriever_temperature <= 0:
            raise ValueError("temperatures must be positive")
        self.model = model
        self.temperature = float(temperature)
        self.retriever_temperature = float(retriever_temperature)
        self.contrastive_weight = float(contrastive_weight)
        self.n_hard_negatives = int(n_hard_negatives)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        embeddings = embed_columns(self.model, sentence_features)
        return self.loss_from_embeddings(embeddings[0], torch.stack(embeddings[1:], dim=1), labels)

    def loss_from_embeddings(self, queries: Tensor, candidates: Tensor, lm_scores: Tensor) -> Tensor:
        """``queries`` (B, H), ``candidates`` (B, L, H), ``lm_scores`` (B, L)."""
        queries = nn.functional.normalize(queries, dim=-1)
        candidates = nn.functional.normalize(candidates, dim=-1)
        lm_scores = lm_scores.to(queries.dtype)
        similarity = torch.einsum("bh,blh->bl", queries, candidates) / self.retriever_temperature
        teacher = torch.log_softmax(lm_scores / self.temperature, dim=-1)
        student = torch.log_softmax(similarity, dim=-1)
        loss = nn.functional.kl_div(student, teacher, reduction="batchmean", log_target=True)
        if self.contrastive_weight > 0:
            loss = loss + self.contrastive_weight * self._info_nce(queries, candidates, lm_scores)
        return loss

    def _info_nce(self, queries: Tensor, candidates: Tensor, lm_scores: Tensor) -> Tensor:
        n_queries, n_candidates, _ = candidates.shape
        # Every candidate in the batch, flattened: query i's own are i*L .. i*L+L-1.
        logits = queries @ candidates.reshape(n_queries * n_candidates, -1).T / self.retriever_temperature
        ranked = lm_scores.argsort(dim=-1, descending=True)
        positive = ranked[:, 0]
        own = torch.zeros((n_queries, n_queries * n_candidates), dtype=torch.bool, device=logits.device)
        rows = torch.arange(n_queries, device=logits.device)
        own[rows[:, None], rows[:, None] * n_candidates + torch.arange(n_candidates, device=logits.device)] = True
        allowed = ~own
        hard = ranked[:, n_candidates - self.n_hard_negatives:] if self.n_hard_negatives > 0 else ranked[:, :0]
        allowed[rows[:, None], rows[:, None] * n_candidates + hard] = True
        target = rows * n_candidates + positive
        allowed[rows, target] = True
        logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
        return nn.functional.cross_entropy(logits, target)

    @property
    def citation(self) -> str:
        return "Wang et al. 2023, Learning to Retrieve In-Context Examples for Large Language Models"


class CEILLoss(nn.Module):
    """CEIL's set-level contrastive loss (Ye et al. 2023, "Compositional Exemplars for
    In-context Learning"): the conditional DPP scores the sampled subsets of a query's
    candidates in the order the LM scores them.

    The kernel is ``ricl.selectors.dpp_kernel``, the one the DPP selector uses at
    inference (``PromptBuilder(..., selector="dpp")``): with unit query and candidate
    embeddings, relevance ``r_i = cos(query, c_i)``, quality
    ``q_i = exp((r_i - max r) / (2 * scale))``, similarity ``S_ij = cos(c_i, c_j)`` (a
    Gram matrix of unit vectors, so positive semi-definite) and ``L = diag(q) S diag(q)``.
    A subset Y scores ``log det L_Y = sum_{i in Y} (r_i - max r) / scale + log det(S_Y + jitter*I)``;
    the jitter keeps near-duplicate demos finite. The DPP's normaliser ``det(L + I)`` is the
    same for every subset of a query and cancels in a ranking. (CEIL's own code maps
    cosines to [0, 1] first; ricl's selector does not, and training matches inference.)

    The ranking is CEIL's pairwise margin loss: per query, the subsets' DPP scores are
    min-max normalised (the min and max taken without gradient, so a margin is a share
    of the query's spread), and for each pair (a, b) that the LM ranks a above b,
    strictly, with ``g`` places between them, the loss is
    ``max(0, margin * g - (s_a - s_b))``, averaged over all such pairs in the batch.
    (CEIL sums a mean per gap ``g``; averaging over pairs keeps the loss's size
    independent of the number of subsets.)
    """

    def __init__(self, model: nn.Module, scale: float = DPP_SCALE, margin: float = 0.02,
                 jitter: float = 1e-4):
        super().__init__()
        if not scale > 0 or margin < 0 or jitter < 0:
            raise ValueError("CEILLoss needs scale > 0, margin >= 0 and jitter >= 0")
        self.model = model
        self.scale, self.margin, self.jitter = float(scale), float(margin), float(jitter)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        embeddings = embed_columns(self.model, sentence_features)
        subsets, lm_scores = unpack_subsets(labels)
        return self.loss_from_embeddings(embeddings[0], torch.stack(embeddings[1:], dim=1),
                                         subsets, lm_scores)

    def subset_log_dets(self, queries: Tensor, candidates: Tensor, subsets: Tensor) -> Tensor:
        """``log det L_Y`` of every subset: ``queries`` (B, H), ``candidates`` (B, n, H),
        ``subsets`` (B, m, k) indices into the candidates; returns (B, m)."""
        queries = nn.functional.normalize(queries, dim=-1)
        candidates = nn.functional.normalize(candidates, dim=-1)
        relevance = torch.einsum("bh,bnh->bn", queries, candidates)
        # The max is a constant shift, the same k * max / scale for every subset of a query.
        log_quality_sq = (relevance - relevance.max(dim=-1, keepdim=True).values.detach()) / self.scale
        similarity = candidates @ candidates.transpose(1, 2)
        batch = torch.arange(len(subsets), device=subsets.device)[:, None, None, None]
        block = similarity[batch, subsets[..., :, None], subsets[..., None, :]]
        eye = torch.eye(subsets.shape[-1], dtype=block.dtype, device=block.device)
        log_det_s = torch.linalg.slogdet(block + self.jitter * eye).logabsdet
        return log_quality_sq.gather(1, subsets.flatten(1)).view(subsets.shape).sum(-1) + log_det_s

    def loss_from_embeddings(self, queries: Tensor, candidates: Tensor, subsets: Tensor,
                             lm_scores: Tensor) -> Tensor:
        scores = self.subset_log_dets(queries, candidates, subsets)
        low = scores.min(dim=-1, keepdim=True).values.detach()
        high = scores.max(dim=-1, keepdim=True).values.detach()
        scores = (scores - low) / (high - low).clamp_min(1e-6)
        lm_scores = lm_scores.to(scores.dtype)
        rank = lm_scores.argsort(dim=-1, descending=True).argsort(dim=-1)  # 0 = the LM's best
        better = lm_scores[:, :, None] > lm_scores[:, None, :]  # [b, a, c]: a above c
        gap = (rank[:, None, :] - rank[:, :, None]).to(scores.dtype)
        hinge = torch.relu(self.margin * gap - (scores[:, :, None] - scores[:, None, :]))
        if not better.any():
            return scores.sum() * 0.0  # every subset tied: nothing to rank
        return hinge[better].mean()

    @property
    def citation(self) -> str:
        return "Ye et al. 2023, Compositional Exemplars for In-context Learning (CEIL)"


def pack_subsets(subsets: Sequence[Sequence[int]], lm_scores: Sequence[float]) -> list[list[float]]:
    """One query's subsets (m lists of k candidate indices) and their LM scores as the
    (m, k + 1) label ``CEILLoss`` reads: a training row holds one label column."""
    return [[float(i) for i in subset] + [float(score)] for subset, score in zip(subsets, lm_scores)]


def unpack_subsets(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``pack_subsets``'s labels, batched (B, m, k + 1), as (subsets (B, m, k), LM scores (B, m))."""
    return labels[..., :-1].round().long(), labels[..., -1]
