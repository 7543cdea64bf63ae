"""One retriever for many tasks (UDR, Li et al. 2023, "Unified Demonstration Retriever for
In-Context Learning"): LM feedback from several tasks, each query behind a short task
instruction, one bi-encoder trained on all of it with a listwise loss, and rounds of
re-mining with the retriever trained so far.

``train_udr`` runs the recipe; every step resumes (feedback files skip scored queries,
training restarts from its last checkpoint and skips a finished model), so a long run
is continued by running the same call again:

    round 1   per task: BM25 candidates scored by the LM (``score_candidates``);
              one model trained on the pooled feedback (``train_multitask``)
    round r   per task: candidates found by the round r-1 model under the task's
              instruction, scored again; training continues from the round r-1 model

The instructions are saved in the model as sentence-transformers prompts, one per
task; ``retrievers.DenseRetriever(model, query_prompt_name=TASK)`` puts the task's
instruction before queries at inference, ``query_prompt=TEXT`` a new task's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ricl.data import Corpus
from ricl.errors import ConfigError
from ricl.template import Template
from training.feedback import score_candidates
from training.train import TaskFeedback, train_multitask

log = logging.getLogger(__name__)

# UDR words an instruction per task; these are ricl's, one per packaged suite. A suite
# held out of training gets its instruction only at inference, as in UDR's unseen tasks.
SUITE_INSTRUCTIONS = {
    "trec": "Classify the question by the type of its answer: ",
    "sst2": "Classify the sentiment of the movie review: ",
    "sst2-sentences": "Classify the sentiment of the movie review: ",
    "agnews": "Classify the topic of the news article: ",
    "csqa": "Answer the commonsense question: ",
    "boolq": "Answer the yes/no question about the passage: ",
    "arc-easy": "Answer the grade-school science question: ",
    "arc-challenge": "Answer the hard grade-school science question: ",
    "obqa": "Answer the elementary science question with common knowledge: ",
    "subj": "Classify the sentence as subjective or objective: ",
    "mr": "Classify the sentiment of the movie review: ",
    "sst5": "Rate the sentiment of the movie review from terrible to great: ",
    "cb": "Does the premise entail the hypothesis? ",
    "rte": "Does the premise entail the hypothesis? ",
    "mrpc": "Are the two sentences paraphrases? ",
    "nq-open": "Answer the open-domain question: ",
    "triviaqa": "Answer the trivia question: ",
    "squad": "Answer the question from the passage: ",
}


def suite_instruction(name: str) -> str:
    """The instruction of a packaged suite; a clear error for a suite without one."""
    if name not in SUITE_INSTRUCTIONS:
        raise ConfigError(f"No task instruction is written for suite {name!r}; give one "
                          "(Task(instruction=...), or `--instruction NAME=TEXT`).")
    return SUITE_INSTRUCTIONS[name]


@dataclass(frozen=True)
class Task:
    """A training task: its demonstration pool, its training queries (with answers),
    its template, its instruction; ``feedback`` where round 1's feedback file goes
    (default: ``work_dir/<name>/feedback-r1-L<n>.jsonl``), e.g. one scored before."""

    name: str
    corpus: Corpus
    queries: Any
    template: str | Template
    instruction: str
    feedback: str | Path | None = None


def train_udr(
    tasks: Sequence[Task],
    work_dir: str | Path,
    out_dir: str | Path,
    rounds: int = 2,
    n_candidates: int = 20,
    loss: str = "distill",
    base_model: str | Path | None = None,
    lm: Any = None,
    dtype: str = "float32",
    lm_batch_size: int = 16,
    chunk_size: int = 512,
    mining_queries: int | None = None,
    progress: bool = True,
    **train_options: Any,
) -> Path:
    """Score, pool, train and re-mine (see the module docstring); return ``out_dir``,
    the last round's model. Earlier rounds' models and every feedback file stay in
    ``work_dir`` (``round-<r>/``, ``<task>/feedback-r<r>-q<queries>-L<n>.jsonl``).

    ``mining_queries``: how many of each task's queries later rounds re-mine and train
    on (the first ones; None: all), the cost of a round being mostly its scoring.
    ``lm``/``dtype``/``lm_batch_size``/``chunk_size`` are ``score_candidates``'s;
    ``train_options`` go to ``train_multitask`` (epochs, batch_size, lr, seed, ...).
    """
    from retrievers import DenseRetriever

    for name, value in (("rounds", rounds), ("mining_queries", mining_queries or 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r}: must be a positive integer.")
    tasks = list(tasks)
    names = [task.name for task in tasks]
    if len(tasks) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"train_udr needs at least two tasks with distinct names; got {names}.")
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    if lm is None or isinstance(lm, (str, Path)):
        from ricl.lm import TransformersLM

        lm = TransformersLM(lm, batch_size=lm_batch_size, dtype=dtype)  # once, for every task
    model: Path | None = None
    for round_ in range(1, rounds + 1):
        pooled = []
        for task in tasks:
            queries = list(task.queries)
            if round_ > 1 and mining_queries is not None:
                queries = queries[:mining_queries]
            path = (task.feedback if round_ == 1 and task.feedback is not None else work_dir /
                    task.name / f"feedback-r{round_}-q{len(queries)}-L{n_candidates}.jsonl")
            retriever: Any = "bm25" if model is None else DenseRetriever(
                model=str(model), query_prompt_name=task.name)
            log.info("UDR round %d: feedback for %s in %s", round_, task.name, path)
            score_candidates(task.corpus, queries, task.template, path, retriever=retriever,
                             n_candidates=n_candidates, lm=lm, chunk_size=chunk_size,
                             progress=progress)
            pooled.append(TaskFeedback(task.name, path, task.corpus, task.instruction))
        target = out_dir if round_ == rounds else work_dir / f"round-{round_}"
        model = train_multitask(pooled, target, base_model=base_model if model is None else model,
                                loss=loss, progress=progress, **train_options)
    return out_dir


def suite_tasks(names: Sequence[str], n_queries: int, pool_size: int = 5000, seed: int = 0,
                instructions: Mapping[str, str] | None = None,
                feedback: Mapping[str, str | Path] | None = None) -> list[Task]:
    """Tasks from packaged suites: each suite's pool is the corpus, its first ``n_queries``
    pool examples the training queries (never their own candidates)."""
    from ricl.registry import resolve

    tasks = []
    for name in names:
        corpus, template = resolve("suite_corpus")(name, pool_size=pool_size, seed=seed)
        instruction = (instructions or {}).get(name) or suite_instruction(name)
        tasks.append(Task(name, corpus, list(corpus)[:n_queries], template, instruction,
                          (feedback or {}).get(name)))
    return tasks
