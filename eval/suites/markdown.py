"""The README's table of suites."""

from __future__ import annotations

from eval.suites.dedup import _deduplicated
from eval.suites.registry import _spec, list_suites
from eval.suites.split import load_suite

_TASK_NAMES = {"classification": "classification", "multiple_choice": "multiple choice",
               "open_qa": "open QA"}
_METRIC_NAMES = {"accuracy": "accuracy", "exact_match_f1": "exact match, token F1"}


def suites_markdown() -> str:
    """The README's table of suites, with sizes measured on the installed files.

    Sizes are those of ``load_suite(name)`` at its defaults (``pool_size=5000``, the
    suite's own ``n_test`` and ``max_words``), after de-duplication and the leak
    filter, each with the number of unique items it was drawn from. Reads every
    suite's files (a few seconds, most of it AG News's pickle).
    """
    lines = [
        "| suite | task (inputs) | pool: split, size | test: split, size | labels / answers "
        "| metric | default cut | source | license |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in list_suites():
        spec, suite = _spec(name), load_suite(name)
        if spec.test_file is None:
            unique = len(_deduplicated(name).rows)
            pool = (f"{spec.split}, the rest: {len(suite.pool):,} "
                    f"(of {unique - len(suite.test):,})")
            test = f"{spec.split}, seeded sample: {len(suite.test):,} (of {unique:,})"
            source = f"`{spec.main_file.source}`"
        else:
            pool = (f"{spec.split}: {len(suite.pool):,} "
                    f"(of {len(_deduplicated(name).rows):,})")
            test = (f"{spec.test_file.split}, seeded sample: {len(suite.test):,} "
                    f"(of {len(_deduplicated(name, 'test').rows):,})")
            source = f"pool `{spec.main_file.source}`; test `{spec.test_file.source}`"
        if spec.task == "classification":
            answers = ", ".join(spec.labels)
        elif spec.task == "multiple_choice":
            counts = sorted({len(item["choices"]) for item in suite.pool + suite.test})
            answers = f"gold choice's text, {' or '.join(map(str, counts))} choices"
        else:
            answers = "free text; `answers` lists all accepted"
        cut = "none" if spec.max_words is None else f"{spec.max_words} words"
        lines.append(
            f"| `{name}` | {_TASK_NAMES[spec.task]} ({', '.join(spec.input_fields)}) | {pool} "
            f"| {test} | {answers} | {_METRIC_NAMES[spec.metric]} | {cut} | {source} "
            f"| {spec.license} |")
    return "\n".join(lines) + "\n"
