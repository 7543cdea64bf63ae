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
- ``ceil`` (CEIL, Ye et al. 2023): ``training.losses.CEILLoss`` on a set-feedback
  file (``training.score_sets``): the conditional DPP's log-probability of each
  sampled subset, ranked like the LM's scores. The model is meant for the DPP
  selector at the relevance scale it was trained with (its card says so); CEIL
  starts from the EPR model (``base_model``).

``train_multitask`` (UDR, Li et al. 2023) trains one retriever on feedback pooled
from several tasks, each query behind its task's instruction; the instructions are
saved as the model's sentence-transformers ``prompts``, one per task, which
``retrievers.DenseRetriever(query_prompt_name=TASK)`` puts before queries again.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ricl.data import Corpus
from ricl.errors import ConfigError
from ricl.io import atomic_dir, check_dir_target, write_json, write_marker
from ricl.selectors import DPP_SCALE
from training.feedback import FeedbackError, FeedbackRecord, read_feedback
from training.set_feedback import SetFeedbackRecord, read_set_feedback

log = logging.getLogger(__name__)

LOSSES = ("contrastive", "distill", "both", "ceil")
CITATIONS = {"contrastive": "EPR, Rubin et al. 2022", "distill": "LLM-R, Wang et al. 2023",
             "both": "LLM-R + EPR", "ceil": "CEIL, Ye et al. 2023"}
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

Loss = Literal["contrastive", "distill", "both", "ceil"]


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
    scale: float = DPP_SCALE,
    margin: float = 0.02,
) -> Path:
    """Train a retriever from a feedback file and save it to ``out_dir``.

    Args:
        feedback_path: written by ``training.score_candidates``; for ``loss="ceil"``,
            by ``training.score_sets``.
        corpus: the demonstration pool the feedback's candidate ids come from.
        out_dir: where the trained sentence-transformers model goes.
        base_model: a sentence-transformers directory; None is the packaged all-MiniLM-L6-v2.
            CEIL starts from the EPR model trained on the same suite.
        loss: "contrastive" (EPR), "distill" (LLM-R), "both" or "ceil" (CEIL).
        epochs, batch_size, lr: as usual; a linear schedule with 10% warm-up.
        temperature: of the LM-score softmax (distill; LM scores are log-probs, in nats).
        retriever_temperature: of the retriever's cosine softmax (all losses but ceil;
            0.05 is sentence-transformers' default scale of 20).
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
        scale: (ceil) the DPP's relevance scale, the one the DPP selector must use
            at inference (its default is ``ricl.selectors.DPP_SCALE``, this default).
        margin: (ceil) the ranking margin per place between two subsets.

    Returns the model directory. Its ``training_card.json`` records the base
    model, feedback file, loss, steps and the loss before and after training; a
    ceil model's card also records the DPP scale, k and the subsets per query.
    """
    settings = _check_settings(loss, epochs, batch_size, lr, temperature, retriever_temperature,
                               top_p, n_hard_negatives, checkpoint_every, max_steps)
    if loss == "ceil":
        settings.update(_check_ceil(scale, margin))
    if not isinstance(corpus, Corpus):
        raise ConfigError(f"corpus must be a ricl.Corpus, not {type(corpus).__name__}.")
    out_dir = Path(out_dir)
    _check_targets(out_dir, overwrite)
    if loss == "ceil":
        header, records = read_set_feedback(feedback_path)
    else:
        header, records = read_feedback(feedback_path)
    _check_feedback(records, corpus, header, feedback_path, top_p, n_hard_negatives, loss)

    epochs_data = [_examples(records, corpus, loss, top_p, n_hard_negatives, seed, epoch)
                   for epoch in range(epochs)]
    settings.update({"feedback": str(Path(feedback_path).resolve()),
                     "feedback_queries": len(records), "corpus_fingerprint": corpus.fingerprint(),
                     "seed": seed})
    card = {"feedback": settings["feedback"], "feedback_queries": len(records),
            "feedback_settings": header}
    if loss == "ceil":
        card.update(_ceil_card(header, scale))
    return _fit(epochs_data, records, settings, card, out_dir, base_model=base_model, loss=loss,
                batch_size=batch_size, lr=lr, temperature=temperature,
                retriever_temperature=retriever_temperature, n_hard_negatives=n_hard_negatives,
                scale=scale, margin=margin, seed=seed, checkpoint_every=checkpoint_every,
                resume=resume, max_steps=max_steps, progress=progress, callbacks=callbacks,
                overwrite=overwrite)


@dataclass(frozen=True)
class TaskFeedback:
    """One task of a multi-task retriever: its feedback file (``training.score_candidates``),
    the corpus the candidates come from, and the instruction put before its queries."""

    name: str
    feedback: str | Path
    corpus: Corpus
    instruction: str


def train_multitask(
    tasks: Sequence[TaskFeedback],
    out_dir: str | Path,
    base_model: str | Path | None = None,
    loss: Literal["contrastive", "distill", "both"] = "distill",
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
    """One retriever for many tasks (UDR, Li et al. 2023): feedback pooled over ``tasks``.

    Each training query is put behind its task's instruction (``instruction + query``),
    so one encoder can tell the tasks apart; the candidates (demonstrations) are
    encoded as they are. Rows of all tasks are shuffled together, one order per
    epoch. UDR ranks a query's candidates by the LM's scores with a listwise loss:
    ``distill`` (the default) is that; the other per-demo losses work too.

    The model saves each task's instruction as a sentence-transformers prompt named
    after the task (``SentenceTransformer.prompts``, beside any it had): at inference
    ``DenseRetriever(model=out_dir, query_prompt_name=TASK)``, or
    ``query_prompt=INSTRUCTION`` for a task it never saw. The other arguments are
    those of ``train_retriever``; ``training.multitask.train_udr`` runs the whole
    recipe, with rounds of re-mining.
    """
    settings = _check_settings(loss, epochs, batch_size, lr, temperature, retriever_temperature,
                               top_p, n_hard_negatives, checkpoint_every, max_steps)
    if loss == "ceil":
        raise ConfigError("train_multitask takes per-demo feedback; CEIL (loss='ceil') trains "
                          "one suite at a time with train_retriever.")
    tasks = list(tasks)
    names = [task.name for task in tasks]
    if not tasks or len(set(names)) != len(names):
        raise ConfigError(f"train_multitask needs tasks with distinct names; got {names}.")
    for task in tasks:
        if not isinstance(task, TaskFeedback) or not isinstance(task.corpus, Corpus):
            raise ConfigError("each task must be a training.TaskFeedback(name, feedback, corpus, "
                              "instruction) with a ricl.Corpus.")
        if not isinstance(task.instruction, str) or not task.instruction.strip():
            raise ConfigError(f"task {task.name!r} has no instruction: UDR tells tasks apart by "
                              "the instruction before each query.")
    out_dir = Path(out_dir)
    _check_targets(out_dir, overwrite)
    loaded = []
    for task in tasks:
        header, records = read_feedback(task.feedback)
        _check_feedback(records, task.corpus, header, task.feedback, top_p, n_hard_negatives, loss)
        loaded.append((task, header, records))
    columns = min(len(r.candidates) for _, _, records in loaded for r in records)
    epochs_data = []
    for epoch in range(epochs):
        pooled = [row for task, _, records in loaded
                  for row in _examples(records, task.corpus, loss, top_p, n_hard_negatives, seed,
                                       epoch, instruction=task.instruction, columns=columns)]
        random.Random(f"{seed}-{epoch}-pooled").shuffle(pooled)
        epochs_data.append(pooled)
    described = [{"name": task.name, "instruction": task.instruction,
                  "feedback": str(Path(task.feedback).resolve()), "feedback_queries": len(records),
                  "corpus_fingerprint": task.corpus.fingerprint()} for task, _, records in loaded]
    settings.update({"tasks": described, "seed": seed})
    card = {"tasks": [dict(d, feedback_settings=header) for d, (_, header, _) in zip(described, loaded)],
            "feedback_queries": sum(d["feedback_queries"] for d in described),
            "query_prompts": {task.name: task.instruction for task in tasks}}
    return _fit(epochs_data, [r for _, _, records in loaded for r in records], settings, card,
                out_dir, base_model=base_model, loss=loss, batch_size=batch_size, lr=lr,
                temperature=temperature, retriever_temperature=retriever_temperature,
                n_hard_negatives=n_hard_negatives, scale=DPP_SCALE, margin=0.0, seed=seed,
                checkpoint_every=checkpoint_every, resume=resume, max_steps=max_steps,
                progress=progress, callbacks=callbacks, overwrite=overwrite,
                prompts={task.name: task.instruction for task in tasks})


def _check_targets(out_dir: Path, overwrite: bool) -> None:
    """Refuse a model folder or checkpoints folder that is not ricl's, before hours of training."""
    check_dir_target(out_dir, MODEL_KIND, overwrite=overwrite)
    check_dir_target(_checkpoints_of(out_dir), CHECKPOINTS_KIND)


def _checkpoints_of(out_dir: Path) -> Path:
    return out_dir.parent / f"{out_dir.name}.checkpoints"


def _fit(epochs_data: list[list[dict[str, Any]]], records: Sequence[Any], settings: dict[str, Any],
         card: dict[str, Any], out_dir: Path, *, base_model: str | Path | None, loss: str,
         batch_size: int, lr: float, temperature: float, retriever_temperature: float,
         n_hard_negatives: int, scale: float, margin: float, seed: int, checkpoint_every: int,
         resume: bool, max_steps: int | None, progress: bool, callbacks: Sequence[Any],
         overwrite: bool, prompts: dict[str, str] | None = None) -> Path:
    """Train on rows laid out per epoch, checkpointed and resumable; save model and card.

    ``settings`` identify the run (a rerun with equal settings resumes or finds the
    model done); ``card`` holds what the training card adds to them; ``prompts`` are
    saved into the model (sentence-transformers ``prompts``).
    """
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    from ricl.models import _checked_model_dir, embedder_path

    checkpoints = _checkpoints_of(out_dir)
    transformers.set_seed(seed)
    base_dir = embedder_path() if base_model is None else _checked_model_dir(base_model, "sentence-transformers")
    # A fresh instance: ricl.models caches loaded embedders for inference, and training changes weights.
    model = SentenceTransformer(str(base_dir), device="cpu", local_files_only=True)
    if prompts:
        model.prompts = {**{k: v for k, v in model.prompts.items() if v}, **prompts}

    train_data = _ListDataset([row for epoch in epochs_data for row in epoch])
    sample = _ListDataset(epochs_data[0][:_LOSS_SAMPLE])
    loss_module = _make_loss(model, loss, temperature, retriever_temperature, n_hard_negatives,
                             scale, margin)
    settings = {**settings, "base_model": str(base_dir)}
    if resume and _finished_with(out_dir, settings):
        log.info("%s already holds a retriever trained with these settings; not retraining.",
                 out_dir)
        return out_dir
    resume_from = _prepare_checkpoints(checkpoints, settings, resume)

    micro = _micro_batch(batch_size, records) if loss in ("distill", "ceil") else batch_size
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
        **card,
        "loss": loss,
        "loss_citation": CITATIONS[loss],
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


def _check_ceil(scale: float, margin: float) -> dict[str, Any]:
    for name, value, positive in (("scale", scale, True), ("margin", margin, False)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                value > 0 if positive else value >= 0):
            raise ConfigError(f"{name}={value!r}: must be a {'positive' if positive else 'non-negative'} "
                              "number.")
    return {"scale": float(scale), "margin": float(margin)}


def _ceil_card(header: dict[str, Any], scale: float) -> dict[str, Any]:
    """What a CEIL model's card says about how to use it: the DPP selector, at its scale."""
    options = "" if scale == DPP_SCALE else f", selector_options={{'scale': {scale}}}"
    return {"selector": "dpp", "dpp_scale": float(scale), "k": header.get("k"),
            "n_subsets": header.get("n_subsets"), "n_candidates": header.get("n_candidates"),
            "use": f"PromptBuilder(corpus, retriever=MODEL_DIR, selector='dpp'{options})"}


def _check_feedback(records: list[FeedbackRecord] | list[SetFeedbackRecord], corpus: Corpus,
                    header: dict[str, Any],
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
    if loss == "ceil":
        shapes = {(len(r.candidates), len(r.subsets), len(r.subsets[0])) for r in records}
        if len(shapes) > 1:
            raise FeedbackError(f"{path}: queries differ in candidates, subsets or k "
                                f"({sorted(shapes)}); score them in one score_sets run.")


# --------------------------------------------------------------------------- data


def _examples(records: list[Any], corpus: Corpus, loss: str, top_p: int, n_hard_negatives: int,
              seed: int, epoch: int, instruction: str = "",
              columns: int | None = None) -> list[dict[str, Any]]:
    """One epoch of training rows, in a seeded order of its own; each query behind
    ``instruction``; listwise rows with ``columns`` candidates (default: the fewest any
    query has)."""
    rng = random.Random(f"{seed}-{epoch}")
    text = {example.id: example.text for example in corpus}
    if loss == "ceil":
        from training.losses import pack_subsets

        rows = [{"query": instruction + record.query,
                 **{f"candidate_{j}": text[c] for j, c in enumerate(record.candidates)},
                 "label": pack_subsets(record.subsets, record.lm_scores)} for record in records]
        rng.shuffle(rows)
        return rows
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
                row = {"anchor": instruction + record.query,
                       "positive": text[record.candidates[ranked[k]]]}
                if len(hard):
                    row["negative"] = text[record.candidates[hard[(k + epoch) % len(hard)]]]
                rows.append(row)
            rng.shuffle(rows)
            rounds.extend(rows)
        return rounds
    shortest = columns or min(len(record.candidates) for record in records)
    rows = []
    for record in records:
        # The best `shortest` candidates by retriever rank, so that every row has as many columns.
        row: dict[str, Any] = {"query": instruction + record.query}
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
               n_hard_negatives: int, scale: float, margin: float) -> Any:
    if loss == "ceil":
        from training.losses import CEILLoss

        return CEILLoss(model, scale=scale, margin=margin)
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
