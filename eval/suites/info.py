"""What a suite is and how big, measured on the installed files."""

from __future__ import annotations

from collections import Counter
from typing import Any

from eval.suites.dedup import _deduplicated
from eval.suites.registry import _spec


def suite_info(name: str) -> dict[str, Any]:
    """What a suite is and how big: raw rows, rows after de-duplication, label counts,
    summed over its files; ``files`` gives each file's role, split and sizes."""
    spec = _spec(name)
    sides = ["main"] if spec.test_file is None else ["main", "test"]
    files, counts = [], Counter()
    for side, data in zip(sides, spec.files):
        dedup = _deduplicated(name, side)
        counts.update(record["label"] for _, record in dedup.rows)
        role = "pool and test" if spec.test_file is None else {"main": "pool",
                                                               "test": "test"}[side]
        files.append({"role": role, "split": data.split, "source": data.source,
                      "n_raw": dedup.n_raw, "n_unique": len(dedup.rows),
                      "n_duplicates": dedup.n_duplicates, "n_empty": dedup.n_empty})
    return {
        "name": spec.name,
        "task": spec.task,
        "input_fields": spec.input_fields,
        "labels": spec.labels,
        "template": spec.template,
        "metric": spec.metric,
        "source": spec.source,
        "license": spec.license,
        "n_raw": sum(f["n_raw"] for f in files),
        "n_unique": sum(f["n_unique"] for f in files),
        "n_duplicates": sum(f["n_duplicates"] for f in files),
        "label_counts": {label: counts[label] for label in spec.labels},
        "files": files,
        "default_n_test": spec.n_test,
        "default_max_words": spec.max_words,
        "note": spec.note,
    }
