"""The README's snippets, run as written on a small real corpus."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ricl

README = Path(__file__).resolve().parents[1] / "README.md"


def snippet(name: str) -> str:
    """The fenced Python block that follows ``<!-- snippet: name -->`` in the README."""
    found = re.search(rf"<!-- snippet: {name} -->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert found, f"README has no snippet {name!r}"
    return found.group(1)


@pytest.mark.lm
def test_the_predict_snippet_runs_as_written(trec_corpus, trec_queries, capsys):
    scope = {"ricl": ricl, "corpus": trec_corpus, "queries": trec_queries}
    exec(compile(snippet("predict"), "README.md:predict", "exec"), scope)
    printed = capsys.readouterr().out.splitlines()
    labels = set(trec_corpus.labels)
    assert [line.split()[0] in labels for line in printed[:4]] == [True] * 4
    assert scope["proba"].shape == (4, len(trec_corpus.labels))
    assert scope["p"].prompt.messages[-1]["role"] == "user"
    assert scope["p"].prompt.token_count <= 1024
