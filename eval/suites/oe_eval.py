"""OLMES (oe-eval) request files: gzipped JSONL, one line per answer choice."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from ricl.errors import DataError


def read_oe_eval_docs(path: str | Path) -> list[dict[str, Any]]:
    """The documents of an OLMES request file (``requests.jsonl.gz``), in doc-id order.

    A file holds one request per (document, answer choice) and, for tasks scored
    with unconditional likelihoods, a copy of each request with its doc id shifted
    by ``uncond_docid_offset``; each document is kept once. The count is checked
    against ``num_instances`` in the ``config.json`` next to the file.
    """
    path = Path(path)
    try:
        config = json.loads((path.parent / "config.json").read_text())
        offset = config["task_config"].get("metric_kwargs", {}).get("uncond_docid_offset")
        expected = config.get("num_instances")
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise DataError(f"Cannot read the config.json next to {path} ({exc}).") from None
    docs: dict[int, dict[str, Any]] = {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                request = json.loads(line)
                doc_id = request["doc_id"]
                if offset is None or doc_id < offset:
                    docs.setdefault(doc_id, request["doc"])
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a readable OLMES request file ({type(exc).__name__}: "
                        f"{exc}). Reinstall the package that ships it.") from None
    if expected is not None and expected != len(docs):
        raise DataError(f"{path} holds {len(docs)} documents but its config.json records "
                        f"{expected}; the file is damaged or was replaced.")
    return [docs[doc_id] for doc_id in sorted(docs)]
