"""Table-driven bad input across the public API and the CLI: each case either gives a
typed ricl error whose message says what to do, or is handled (returns a sane result)."""

from __future__ import annotations

import json
import math

import pytest

import ricl
from ricl.cli import main
from ricl.errors import (BudgetError, ConfigError, CorpusError, IndexLoadError, ModelLoadError,
                         RiclError, TemplateError)

T = "Q: {input}\nA: {output}"
GOOD = [{"text": "Who wrote Hamlet ?", "label": "person"},
        {"text": "Where is Paris ?", "label": "location"},
        {"text": "How tall is Everest ?", "label": "number"}]


def corpus(records=GOOD, **kw):
    return ricl.Corpus.from_records(records, input="text", output="label", **kw)


def builder(**kw):
    options = {"retriever": "bm25", "k": 2, "template": T, **kw}
    return ricl.PromptBuilder(corpus(), **options)


def write(tmp, name, content: bytes | str):
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# (case id, action(tmp_path), expected error type or None when handled, message fragment)
CASES = [
    ("empty records", lambda t: corpus([]), CorpusError, "empty"),
    ("None input", lambda t: corpus([{"text": None, "label": "a"}]), CorpusError, "not a string"),
    ("empty input", lambda t: corpus([{"text": "", "label": "a"}]), CorpusError, "is empty"),
    ("whitespace input", lambda t: corpus([{"text": " \n\t", "label": "a"}]), CorpusError, "is empty"),
    ("None label", lambda t: corpus([{"text": "x", "label": None}]), CorpusError, "missing"),
    ("NaN label", lambda t: corpus([{"text": "x", "label": math.nan}]), CorpusError, "missing"),
    ("empty label", lambda t: corpus([{"text": "x", "label": ""}]), CorpusError, "is empty"),
    ("int label without labels", lambda t: corpus([{"text": "x", "label": 1}]), CorpusError, "labels=[...]"),
    ("label index out of range", lambda t: corpus([{"text": "x", "label": 9}], labels=["a"]), CorpusError, "outside"),
    ("bool id", lambda t: corpus([{"id": True, "text": "x", "label": "a"}]), CorpusError, "id"),
    ("duplicate ids", lambda t: corpus([{"id": 1, **GOOD[0]}, {"id": 1, **GOOD[1]}]), CorpusError, "Duplicate id"),
    ("record not a dict", lambda t: corpus([["x", "a"]]), CorpusError, "not a dict"),
    ("missing input field", lambda t: ricl.Corpus.from_records(GOOD, input="question", output="label"), CorpusError, "input field 'question'"),
    ("missing output field", lambda t: ricl.Corpus.from_records(GOOD, input="text", output="y"), CorpusError, "output field 'y'"),
    ("no input names", lambda t: ricl.Corpus.from_records(GOOD, input=[], output="label"), CorpusError, "names no field"),
    ("repeated label words", lambda t: corpus(labels=["a", "a"]), CorpusError, "repeated"),
    ("invalid UTF-8 jsonl", lambda t: ricl.Corpus.from_jsonl(write(t, "a.jsonl", b'{"text": "caf\xe9"}\n'), input="text", output="label"), CorpusError, "UTF-8"),
    ("broken JSON line", lambda t: ricl.Corpus.from_jsonl(write(t, "b.jsonl", '{"text": '), input="text", output="label"), CorpusError, "not valid JSON"),
    ("missing file", lambda t: ricl.Corpus.from_csv(t / "nope.csv"), CorpusError, "does not exist"),
    ("empty CSV", lambda t: ricl.Corpus.from_csv(write(t, "e.csv", ""), input="text", output="label"), CorpusError, "empty"),
    ("ragged CSV", lambda t: ricl.Corpus.from_csv(write(t, "r.csv", "text,label\na,b,c\n"), input="text", output="label"), CorpusError, "cells"),
    ("template without answer slot", lambda t: builder(template="Q: {input}"), TemplateError, "no {output} slot"),
    ("template answer slot not last", lambda t: builder(template="{output}: {input}"), TemplateError, "must come last"),
    ("template unknown field", lambda t: builder(template="Q: {question}\nA: {output}"), TemplateError, "question"),
    ("template bad braces", lambda t: builder(template="Q: {input\nA: {output}"), TemplateError, "format string"),
    ("empty template", lambda t: builder(template="   "), TemplateError, "non-empty"),
    ("unknown selector", lambda t: builder(selector="knn"), ConfigError, "choose one of"),
    ("unknown retriever", lambda t: builder(retriever="faiss"), ConfigError, "unknown"),
    ("unknown order", lambda t: builder(order="best-first"), ConfigError, "order="),
    ("negative k", lambda t: builder(k=-1), ConfigError, "k=-1"),
    ("float k", lambda t: builder(k=2.5), ConfigError, "integer"),
    ("zero max_tokens", lambda t: builder(max_tokens=0), ConfigError, "max_tokens"),
    ("not a corpus", lambda t: ricl.PromptBuilder(GOOD, retriever="bm25"), ConfigError, "Corpus.from_records"),
    ("bad Chroma URL", lambda t: builder(retriever="chroma://"), ConfigError, "chroma://HOST:PORT"),
    ("MMR lambda out of range", lambda t: builder(selector="mmr", selector_options={"lambda_": -1}), ConfigError, "lambda_"),
    ("budget smaller than the query", lambda t: builder(max_tokens=3).build("How far is the moon from the earth ?"), BudgetError, "max_tokens"),
    ("empty query", lambda t: builder().build(""), ConfigError, "non-empty"),
    ("None query", lambda t: builder().build(None), ConfigError, "string or a dict"),
    ("query missing a field", lambda t: builder().build({"question": "x"}), ConfigError, "lacks input field"),
    ("string to build_many", lambda t: builder().build_many("x"), ConfigError, "use build()"),
    ("k larger than the corpus", lambda t: builder(k=50).build("Who wrote Hamlet ?"), None, "only 2 of k=50"),
    ("1 MB query", lambda t: builder().build("word " * 200_000), None, "query-kept"),
    ("RTL, emoji, zero-width text", lambda t: builder().build("\u0645\u0631\u062d\u0628\u0627 \U0001F600 Ham\u200blet ?"), None, "query-kept"),
    ("zero-width copy of a demo is still itself", lambda t: builder().build("Who\u200b wrote Hamlet ?"), None, "not-self"),
    ("load an empty dir", lambda t: ricl.PromptBuilder.load(t), IndexLoadError, "builder.json"),
    ("load a corrupted index", lambda t: _corrupt_index(t), IndexLoadError, "rebuild"),
    ("embedder dir without weights", lambda t: ricl.DenseRetriever(model=str(_empty_model_dir(t))).index(corpus()), ModelLoadError, None),
    ("search before index", lambda t: ricl.BM25Retriever().search(["x"], n=1), RiclError, "index(corpus)"),
]


def _corrupt_index(tmp):
    b = builder()
    b.save(tmp / "idx")
    (tmp / "idx" / "retriever" / "corpus.jsonl").write_text("garbage\n")
    return ricl.PromptBuilder.load(tmp / "idx")


def _empty_model_dir(tmp):
    (tmp / "model").mkdir()
    (tmp / "model" / "config.json").write_text("{}")
    return tmp / "model"


@pytest.mark.parametrize("name, action, error, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, action, error, fragment, tmp_path):
    if error is None:
        prompt = action(tmp_path)
        assert isinstance(prompt, ricl.Prompt)
        if fragment == "query-kept":  # the query reaches the prompt intact, after its demos
            query = next(iter(prompt.query.values()))
            assert prompt.text.endswith(ricl.Template(T).render_query({**prompt.query, "input": query}))
            assert prompt.demos
        elif fragment == "not-self":
            assert "Who wrote Hamlet" not in prompt.text.split("\n\n")[0]
        elif fragment:
            assert fragment in " ".join(prompt.notes)
        return
    with pytest.raises(error) as caught:
        action(tmp_path)
    assert isinstance(caught.value, RiclError)  # typed, never a deep library exception
    if fragment:
        assert fragment in str(caught.value)


CLI_CASES = [
    ("index: missing file", ["index", "nope.jsonl", "--out", "x"], "does not exist"),
    ("index: wrong output field", ["index", "{data}", "--out", "{tmp}/i", "--input", "text",
                                   "--output", "y", "--retriever", "bm25"], "output field 'y'"),
    ("index: template with unknown field", ["index", "{data}", "--out", "{tmp}/i", "--input",
                                            "text", "--output", "label", "--retriever", "bm25",
                                            "--template", "Q: {{q}}\nA: {{output}}"], "'q'"),
    ("prompt: not an index", ["prompt", "{tmp}", "hello"], "builder.json"),
    ("prompt: no query", ["prompt", "{tmp}"], "at least one query"),
]


@pytest.mark.parametrize("name, argv, fragment", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_cli_input(name, argv, fragment, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in GOOD))
    argv = [a.format(data=data, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err

