"""Fine-tune a sentence-transformers bi-encoder on LM feedback, so it retrieves what helps the LM.

Two losses, one data file (see ``training.feedback``):

- ``contrastive`` (EPR, Rubin et al. 2022): for each query, its ``top_p``
  candidates by LM score are positives and its ``n_hard_negatives`` lowest are
  hard negatives; (query, positive, negative) triplets go to sentence-transformers'
  ``MultipleNegativesRankingLoss``, which adds every other triplet's documents in
  the batch as negatives.
- ``distill`` (LLM-R, Wang et al. 2023): ``training.losses.ListwiseDistillLoss``,
  the KL divergence between the retriever's softmax over the candidate list and
  the softmax of the LM scores.
- ``both``: the distillation loss plus its InfoNCE term on the same batch.

Training runs on the Hugging Face ``Trainer`` (sentence-transformers' own
``SentenceTransformerTrainer`` needs the ``datasets`` package, which ricl does
not install); batches are tokenized by sentence-transformers' data collator and
the model is saved with ``SentenceTransformer.save``. Checkpoints go to
``<out_dir>.checkpoints/`` every ``checkpoint_every`` steps; a rerun with the
same arguments resumes from the last one (weights, optimizer, scheduler, RNG
and position in the data) and gives the same model as an uninterrupted run.
The finished model directory is swapped in atomically, with ``training_card.json``
beside the weights; ``ricl.PromptBuilder(corpus, retriever=out_dir)`` loads it.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ricl.data import Corpus
from ricl.errors import ConfigError
from ricl.io import atomic_dir, check_dir_target, write_json, write_marker
from training.feedback import FeedbackError, FeedbackRecord, read_feedback

log = logging.getLogger(__name__)

LOSSES = ("contrastive", "distill", "both")
CARD_NAME = "training_card.json"
MODEL_KIND = "trained-retriever"  # the kinds in ricl.io markers of the model folder
CHECKPOINTS_KIND = "training-checkpoints"  # and of the checkpoints folder beside it
_SETTINGS_NAME = "ricl_train_settings.json"
_LOSS_SAMPLE = 512  # examples whose loss is measured before and after training
# Texts encoded with gradients in one forward pass. The distill loss encodes every
# query with all its L candidates; at batch 16 x (1 + 20) texts of AG News length
# the activations took 17 GB. Its per-query losses are independent, so the batch is
# split into micro-batches with gradient accumulation: the same update, bounded memory.
_MAX_TEXTS_PER_FORWARD = 96

Loss = Literal["contrastive", "distill", "both"]


def train_retriever(
    feedback_path: str | Path,
    corpus: Corpus,
    out_dir: str | Path,
    base_model: str | Path | None = None,
    loss: Loss = "contrastive",
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 2e-5,
    temperature: float = 1.0,
    retriever_temperature: float = 0.05,
    top_p: int = 1,
    n_hard_negatives: int = 1,
    seed: int = 0,
    checkpoint_every: int = 500,
    resume: bool = True,
    max_steps: int | None = None,
    progress: bool = False,
    callbacks: Sequence[Any] = (),
    overwrite: bool = False,
) -> Path:
    """Train a retriever from a feedback file and save it to ``out_dir``.

    Args:
        feedback_path: written by ``training.score_candidates``.
        corpus: the demonstration pool the feedback's candidate ids come from.
        out_dir: where the trained sentence-transformers model goes.
        base_model: a sentence-transformers directory; None is the packaged all-MiniLM-L6-v2.
        loss: "contrastive" (EPR), "distill" (LLM-R) or "both".
        epochs, batch_size, lr: as usual; a linear schedule with 10% warm-up.
        temperature: of the LM-score softmax (distill; LM scores are log-probs, in nats).
        retriever_temperature: of the retriever's cosine softmax (all losses; 0.05 is
            sentence-transformers' default scale of 20).
        top_p: positives per query (contrastive): its best candidates by LM score.
        n_hard_negatives: the query's worst candidates by LM score used as negatives.
        seed: seeds the data order, dropout and everything else; same seed, same model.
        checkpoint_every: steps between checkpoints.
        resume: continue from the last checkpoint of an identical earlier call.
        max_steps: stop after this many steps (None: all epochs).
        progress: a tqdm bar.
        callbacks: extra ``transformers.TrainerCallback`` objects.
        overwrite: let the model replace another kind of ricl output at ``out_dir``
            (a saved index). Without it ``out_dir`` must be new, empty, or a model
            trained before (replaced); a user's file or directory there, or at
            ``<out_dir>.checkpoints``, is never replaced: ``ricl.errors.OverwriteError``
            is raised before any training.

    Returns the model directory. Its ``training_card.json`` records the base
    model, feedback file, loss, steps and the loss before and after training.
    """
    settings = _check_settings(loss, epochs, batch_size, lr, temperature, retriever_temperature,
                               top_p, n_hard_negatives, checkpoint_every, max_steps)
    if not isinstance(corpus, Corpus):
        raise ConfigError(f"corpus must be a ricl.Corpus, not {type(corpus).__name__}.")
    out_dir = Path(out_dir)
    checkpoints = out_dir.parent / f"{out_dir.name}.checkpoints"
    check_dir_target(out_dir, MODEL_KIND, overwrite=overwrite)  # before hours of training
    check_dir_target(checkpoints, CHECKPOINTS_KIND)
    header, records = read_feedback(feedback_path)
    _check_feedback(records, corpus, header, feedback_path, top_p, n_hard_negatives, loss)

    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    from ricl.models import _checked_model_dir, embedder_path

    transformers.set_seed(seed)
    base_dir = embedder_path() if base_model is None else _checked_model_dir(base_model, "sentence-transformers")
    # A fresh instance: ricl.models caches loaded embedders for inference, and training changes weights.
    model = SentenceTransformer(str(base_dir), device="cpu", local_files_only=True)

    epochs_data = [_examples(records, corpus, loss, top_p, n_hard_negatives, seed, epoch)
                   for epoch in range(epochs)]
    train_data = _ListDataset([row for epoch in epochs_data for row in epoch])
    sample = _ListDataset(epochs_data[0][:_LOSS_SAMPLE])
    loss_module = _make_loss(model, loss, temperature, retriever_temperature, n_hard_negatives)

    settings.update({"base_model": str(base_dir), "feedback": str(Path(feedback_path).resolve()),
                     "feedback_queries": len(records), "corpus_fingerprint": corpus.fingerprint(),
                     "seed": seed})
    if resume and _finished_with(out_dir, settings):
        log.info("%s already holds a retriever trained with these settings; not retraining.",
                 out_dir)
        return out_dir
    resume_from = _prepare_checkpoints(checkpoints, settings, resume)

    micro = _micro_batch(batch_size, records) if loss == "distill" else batch_size
    args = transformers.TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=batch_size // micro,
        per_device_eval_batch_size=micro,
        num_train_epochs=1,  # the epochs are laid out in the data, each shuffled with its own seed
        max_steps=max_steps if max_steps is not None else -1,
        learning_rate=lr,
        warmup_steps=0.1,
        lr_scheduler_type="linear",
        weight_decay=0.01,
        train_sampling_strategy="sequential",
        seed=seed,
        data_seed=seed,
        save_strategy="steps",
        save_steps=checkpoint_every,
        save_total_limit=2,
        logging_strategy="steps",
        logging_steps=max(1, min(50, checkpoint_every)),
        report_to="none",
        use_cpu=True,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        prediction_loss_only=True,
    )
    trainer = _FeedbackTrainer(loss_module=loss_module, model=model, args=args, train_dataset=train_data,
                               data_collator=_collator(model), callbacks=list(callbacks))
    if not progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it prints every log line to stdout
    initial_loss = _mean_loss(trainer, sample) if resume_from is None else _saved_initial_loss(checkpoints)
    if resume_from is None:
        write_json(checkpoints / "initial_loss.json", {"initial_loss": initial_loss})
    result = trainer.train(resume_from_checkpoint=resume_from)
    final_loss = _mean_loss(trainer, sample)

    card = {
        "kind": "ricl-trained-retriever",
        "base_model": str(base_dir),
        "feedback": str(Path(feedback_path).resolve()),
        "feedback_queries": len(records),
        "feedback_settings": header,
        "loss": loss,
        "loss_citation": {"contrastive": "EPR, Rubin et al. 2022", "distill": "LLM-R, Wang et al. 2023",
                          "both": "LLM-R + EPR"}[loss],
        "steps": int(trainer.state.global_step),
        "examples": len(train_data),
        "initial_loss": initial_loss,
        "final_loss": final_loss,
        "mean_training_loss": float(result.training_loss),
        "settings": settings,
        "torch": torch.__version__,
    }
    with atomic_dir(out_dir, MODEL_KIND, overwrite=overwrite) as tmp:
        model.save(str(tmp), create_model_card=False)
        write_json(tmp / CARD_NAME, card)
    _remove_checkpoints(checkpoints)
    log.info("Trained retriever saved to %s (loss %.4f -> %.4f over %d steps).", out_dir,
             initial_loss, final_loss, card["steps"])
    return out_dir


def _finished_with(out_dir: Path, settings: dict[str, Any]) -> bool:
    """Whether ``out_dir`` already holds the model an identical call would train."""
    try:
        card = json.loads((out_dir / CARD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return card.get("settings") == json.loads(json.dumps(settings))


def read_card(model_dir: str | Path) -> dict[str, Any]:
    """The training card of a model written by ``train_retriever``."""
    path = Path(model_dir) / CARD_NAME
    if not path.is_file():
        raise ConfigError(f"{model_dir} has no {CARD_NAME}: it was not written by train_retriever.")
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- checks


def _check_settings(loss, epochs, batch_size, lr, temperature, retriever_temperature, top_p,
                    n_hard_negatives, checkpoint_every, max_steps) -> dict[str, Any]:
    if loss not in LOSSES:
        raise ConfigError(f"loss={loss!r} is unknown; choose one of {LOSSES}.")
    for name, value, least in (("epochs", epochs, 1), ("batch_size", batch_size, 2),
                               ("top_p", top_p, 1), ("n_hard_negatives", n_hard_negatives, 0),
                               ("checkpoint_every", checkpoint_every, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ConfigError(f"{name}={value!r}: must be an integer >= {least}"
                              + (" (in-batch negatives need two queries per batch)." if name == "batch_size"
                                 else "."))
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                  or max_steps < 1):
        raise ConfigError(f"max_steps={max_steps!r}: must be a positive integer or None.")
    for name, value in (("lr", lr), ("temperature", temperature),
                        ("retriever_temperature", retriever_temperature)):
        if not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{name}={value!r}: must be a positive number.")
    return {"loss": loss, "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
            "temperature": float(temperature), "retriever_temperature": float(retriever_temperature),
            "top_p": int(top_p), "n_hard_negatives": int(n_hard_negatives),
            "checkpoint_every": int(checkpoint_every), "max_steps": max_steps}


def _check_feedback(records: list[FeedbackRecord], corpus: Corpus, header: dict[str, Any],
                    path: str | Path, top_p: int, n_hard_negatives: int, loss: str) -> None:
    known = {example.id for example in corpus}
    for record in records:
        unknown = [c for c in record.candidates if c not in known]
        if unknown:
            raise FeedbackError(
                f"{path}: query {record.query_id!r} names candidate {unknown[0]!r}, which is not in "
                f"the corpus ({len(unknown)} unknown ids on that line). Pass the corpus the feedback "
                "was scored on.")
        if len(record.candidates) > len(corpus):
            raise FeedbackError(f"{path}: query {record.query_id!r} has {len(record.candidates)} "
                                f"candidates, more than the corpus's {len(corpus)} examples.")
    if header.get("corpus_fingerprint") not in (None, corpus.fingerprint()):
        log.warning("%s was scored on another version of this corpus; its ids all still exist.", path)
    shortest = min(len(record.candidates) for record in records)
    if loss == "contrastive" and top_p + n_hard_negatives > shortest:
        raise ConfigError(f"top_p={top_p} positives and n_hard_negatives={n_hard_negatives} need "
                          f"{top_p + n_hard_negatives} candidates per query; the feedback has as few "
                          f"as {shortest}.")
    if loss != "contrastive" and shortest < 2:
        raise FeedbackError(f"{path}: a listwise loss needs at least 2 candidates per query; "
                            f"some query has {shortest}.")


# --------------------------------------------------------------------------- data


def _examples(records: list[FeedbackRecord], corpus: Corpus, loss: str, top_p: int,
              n_hard_negatives: int, seed: int, epoch: int) -> list[dict[str, Any]]:
    """One epoch of training rows, in a seeded order of its own."""
    rng = random.Random(f"{seed}-{epoch}")
    text = {example.id: example.text for example in corpus}
    if loss == "contrastive":
        # Round k pairs every query's k-th positive with one of its hard negatives; a
        # round is shuffled on its own, so a batch rarely holds one query twice (its
        # other positive would be taken for a negative).
        rounds = []
        for k in range(top_p):
            rows = []
            for record in records:
                ranked = np.argsort(-np.asarray(record.lm_scores), kind="stable")
                hard = ranked[len(ranked) - n_hard_negatives:][::-1] if n_hard_negatives else []
                row = {"anchor": record.query, "positive": text[record.candidates[ranked[k]]]}
                if len(hard):
                    row["negative"] = text[record.candidates[hard[(k + epoch) % len(hard)]]]
                rows.append(row)
            rng.shuffle(rows)
            rounds.extend(rows)
        return rounds
    shortest = min(len(record.candidates) for record in records)
    rows = []
    for record in records:
        # The best `shortest` candidates by retriever rank, so that every row has as many columns.
        row: dict[str, Any] = {"query": record.query}
        for j in range(shortest):
            row[f"candidate_{j}"] = text[record.candidates[j]]
        row["label"] = [float(s) for s in record.lm_scores[:shortest]]
        rows.append(row)
    rng.shuffle(rows)
    return rows


class _ListDataset:
    """A list of dict rows, as a map-style torch dataset."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]


def _collator(model: Any) -> Any:
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

    return SentenceTransformerDataCollator(preprocess_fn=model.preprocess)


def _make_loss(model: Any, loss: str, temperature: float, retriever_temperature: float,
               n_hard_negatives: int) -> Any:
    if loss == "contrastive":
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        return MultipleNegativesRankingLoss(model, scale=1.0 / retriever_temperature)
    from training.losses import ListwiseDistillLoss

    return ListwiseDistillLoss(model, temperature=temperature, retriever_temperature=retriever_temperature,
                               contrastive_weight=1.0 if loss == "both" else 0.0,
                               n_hard_negatives=n_hard_negatives)


# --------------------------------------------------------------------------- trainer


def _trainer_class() -> type:
    from transformers import Trainer

    class FeedbackTrainer(Trainer):
        """The Hugging Face Trainer, with a sentence-transformers loss and model format."""

        def __init__(self, loss_module: Any, **kwargs: Any):
            super().__init__(**kwargs)
            self.loss_module = loss_module
            # Our losses are means over their micro-batch and ignore `num_items_in_batch`;
            # this makes the Trainer divide by the accumulation steps, as a mean needs.
            self.model_accepts_loss_kwargs = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            features, labels = _split_features(inputs)
            loss = self.loss_module(features, labels)
            return (loss, {}) if return_outputs else loss

        def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
            output_dir = output_dir if output_dir is not None else self.args.output_dir
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            self.model.save(output_dir, create_model_card=False)

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            from sentence_transformers import SentenceTransformer

            saved = SentenceTransformer(resume_from_checkpoint, device="cpu", local_files_only=True)
            (model or self.model).load_state_dict(saved.state_dict())

    return FeedbackTrainer


def _micro_batch(batch_size: int, records: Sequence[FeedbackRecord]) -> int:
    """The largest divisor of ``batch_size`` whose queries and candidates fit one forward pass."""
    texts_per_query = 1 + max(len(r.candidates) for r in records)
    fitting = [d for d in range(1, batch_size + 1)
               if batch_size % d == 0 and d * texts_per_query <= _MAX_TEXTS_PER_FORWARD]
    return max(fitting, default=1)


def _FeedbackTrainer(**kwargs: Any) -> Any:  # noqa: N802 - built lazily: transformers is slow to import
    return _trainer_class()(**kwargs)


def _split_features(inputs: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """``{column}_input_ids``, ``{column}_attention_mask``, ... into one dict per column, in column order."""
    features: list[dict[str, Any]] = []
    prefixes: list[str] = []
    for key in inputs:
        if key.endswith("_input_ids"):
            prefixes.append(key[: -len("input_ids")])
    for prefix in prefixes:
        features.append({key[len(prefix):]: value for key, value in inputs.items() if key.startswith(prefix)})
    return features, inputs.get("label")


def _mean_loss(trainer: Any, dataset: _ListDataset) -> float:
    """The loss over ``dataset`` with the model in eval mode (no dropout): comparable before and after."""
    import torch

    model = trainer.model
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    collate = trainer.data_collator
    size = trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
    with torch.no_grad():
        for start in range(0, len(dataset), size):
            batch = [dataset[i] for i in range(start, min(start + size, len(dataset)))]
            if len(batch) < 2:
                continue
            features, labels = _split_features(collate(batch))
            total += float(trainer.loss_module(features, labels)) * len(batch)
            count += len(batch)
    model.train(was_training)
    return total / max(count, 1)


def _prepare_checkpoints(checkpoints: Path, settings: dict[str, Any], resume: bool) -> str | None:
    """The checkpoint to resume from, if any; a fresh directory otherwise."""
    settings_path = checkpoints / _SETTINGS_NAME
    if resume and settings_path.is_file():
        saved = json.loads(settings_path.read_text(encoding="utf-8"))
        if saved != settings:
            changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
            raise ConfigError(f"{checkpoints} holds checkpoints of a run with other settings "
                              f"({', '.join(changed)} differ). Pass resume=False to start over, "
                              "or another out_dir.")
        done = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        done = [p for p in done if _complete(p)]
        if done and (checkpoints / "initial_loss.json").is_file():
            log.info("Resuming training from %s.", done[-1])
            return str(done[-1])
    _remove_checkpoints(checkpoints)
    checkpoints.mkdir(parents=True)
    write_marker(checkpoints, CHECKPOINTS_KIND)
    write_json(settings_path, settings)
    return None


def _remove_checkpoints(checkpoints: Path) -> None:
    """Delete a checkpoints folder, only if it is one ricl made (or empty)."""
    check_dir_target(checkpoints, CHECKPOINTS_KIND)
    shutil.rmtree(checkpoints, ignore_errors=True)


def _complete(checkpoint: Path) -> bool:
    """The Trainer writes trainer_state.json last: a checkpoint without a readable one was cut short."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def _saved_initial_loss(checkpoints: Path) -> float:
    return float(json.loads((checkpoints / "initial_loss.json").read_text())["initial_loss"])
