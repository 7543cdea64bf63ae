"""A listwise loss that teaches a bi-encoder the LM's preferences over a query's candidates.

Like sentence-transformers' losses: an ``nn.Module`` that takes the model and is
called on the tokenized columns of a batch, ``(query, candidate_0 .. candidate_{L-1})``,
with the LM scores of the candidates as labels, shape (batch, L).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


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
