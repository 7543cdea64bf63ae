"""Fuzzing the public entry points: every generated input ends in a result or a
``ricl.errors`` exception, never an error from deep inside another library.

The suite runs a bounded number of examples per entry point; set
``RICL_FUZZ_EXAMPLES`` (e.g. 5000) for a long run.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ricl
from ricl.errors import RiclError

EXAMPLES = int(os.environ.get("RICL_FUZZ_EXAMPLES", "40"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize="RICL_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=list(HealthCheck))

# Text as users produce it, and as they should not: lone surrogates, NUL, controls,
# right-to-left marks, combining characters, emoji, very long words.
texts = st.one_of(
    st.text(min_size=0, max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1,
            max_size=3).map(lambda s: f"bad {s} text"),
    st.sampled_from(["", " ", "\x00", "\u202e evil", "e\u0301\u0301", "🙂" * 30, "x" * 3000,
                     "{input}", "{", "}", "a\r\nb", "\ufeffbom"]),
)
scalars = st.one_of(texts, st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(),
                    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                        st.integers(), max_size=2))
records = st.lists(st.dictionaries(st.sampled_from(["text", "label", "id", "other", ""]),
                                   scalars, max_size=4), max_size=6)


def ends_well(call):
    """Run ``call``; a ricl error is an answer, anything else escapes and fails."""
    try:
        return call()
    except RiclError:
        return None


@functools.cache
def _small_corpus():
    from eval.suites import load_suite

    suite = load_suite("trec", n_test=10, pool_size=80, seed=0)
    return ricl.Corpus.from_records(suite.pool, input="text", output="label", labels=suite.labels)


@functools.cache
def _builder():
    return ricl.PromptBuilder(_small_corpus(), retriever="bm25", k=3, max_tokens=200).index()


@fuzz
@given(records, st.one_of(st.just("text"), st.lists(st.sampled_from(["text", "other", ""]),
                                                     max_size=2)),
       st.one_of(st.none(), st.lists(scalars, max_size=4)))
def test_corpus_from_records(rows, inputs, labels):
    ends_well(lambda: ricl.Corpus.from_records(rows, input=inputs, output="label", labels=labels))


@fuzz
@given(st.binary(max_size=400), st.sampled_from([".jsonl", ".csv"]))
def test_corpus_from_files_of_random_bytes(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"corpus{suffix}"
        path.write_bytes(data)
        ends_well(lambda: ricl.Corpus.from_file(path, input="text", output="label"))


@fuzz
@given(records, st.sampled_from([".jsonl", ".csv"]))
def test_corpus_from_files_of_odd_records(rows, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"corpus{suffix}"
        if suffix == ".jsonl":
            lines = [json.dumps(row, default=str) for row in rows]
            path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        else:
            keys = sorted({key for row in rows for key in row}) or ["text"]
            cells = [[str(row.get(key, "")) for key in keys] for row in rows]
            path.write_text("\n".join(",".join(line) for line in [keys, *cells]),
                            encoding="utf-8", errors="surrogatepass")
        ends_well(lambda: ricl.Corpus.from_file(path, input="text", output="label"))


@fuzz
@given(texts, st.one_of(st.just("output"), texts), texts, texts)
def test_templates(text, slot, separator, instructions):
    template = ends_well(lambda: ricl.Template(text, slot, separator, instructions))
    if template is not None:
        ends_well(lambda: template.render_query({"input": "q", "text": "q"}))
        ends_well(lambda: template.render_demo({"input": "q", "text": "q", slot: "a"}))


@fuzz
@given(st.fixed_dictionaries({}, optional={
    "retriever": st.one_of(st.sampled_from(["bm25", "dense:nope", "chroma://", "/no/such/dir"]),
                           scalars),
    "selector": st.one_of(st.sampled_from(["similarity", "mmr", "dpp", "random", "votek"]), scalars),
    "k": scalars, "max_tokens": scalars, "order": scalars, "seed": scalars,
    "template": st.one_of(texts, st.just("Q: {text}\nA: {label}")), "instructions": scalars,
    "exclude_self": scalars,
    "selector_options": st.one_of(st.none(), st.dictionaries(st.sampled_from(["n", "scale", "seed",
                                                                              "lambda_", "x"]),
                                                             scalars, max_size=2)),
}))
def test_builder_arguments(options):
    options.setdefault("retriever", "bm25")
    builder = ends_well(lambda: ricl.PromptBuilder(_small_corpus(), **options))
    if builder is not None:
        ends_well(lambda: builder.build("what is the tallest mountain ?"))


@fuzz
@given(st.lists(st.one_of(texts, scalars, st.dictionaries(st.sampled_from(["text", "x"]), scalars,
                                                          max_size=2)), max_size=4),
       st.one_of(st.none(), st.lists(st.lists(st.one_of(texts, st.tuples(texts, scalars)),
                                              max_size=3), max_size=4)))
def test_build_many_queries_and_documents(queries, documents):
    builder = _builder()
    ends_well(lambda: builder.build_many(queries, documents))
    for query in queries[:2]:
        ends_well(lambda: builder.build(query))


@functools.cache
def _saved_index() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ricl-fuzz-")) / "index"
    _builder().save(path)
    assert ricl.PromptBuilder.load(path).build("a query").text  # undamaged, it loads
    return path


@fuzz
@given(st.data())
def test_loading_damaged_index_directories(data):
    source = _saved_index()
    files = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
    with tempfile.TemporaryDirectory() as tmp:
        damaged = Path(tmp) / "index"
        shutil.copytree(source, damaged)
        victim = damaged / data.draw(st.sampled_from(files))
        how = data.draw(st.sampled_from(["truncate", "random bytes", "wrong json", "delete",
                                         "directory", "empty"]))
        content = victim.read_bytes()
        if how == "truncate":
            victim.write_bytes(content[:data.draw(st.integers(0, max(len(content) - 1, 0)))])
        elif how == "random bytes":
            rng = random.Random(data.draw(st.integers(0, 2**32)))
            victim.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
        elif how == "wrong json":
            value = data.draw(st.one_of(st.just([]), st.just(None), st.just({"kind": 3}),
                                        st.integers(), st.text(max_size=5),
                                        st.dictionaries(st.text(max_size=4), scalars, max_size=3)))
            victim.write_text(json.dumps(value))
        elif how == "delete":
            victim.unlink()
        elif how == "directory":
            victim.unlink()
            victim.mkdir()
        else:
            victim.write_bytes(b"")
        loaded = ends_well(lambda: ricl.PromptBuilder.load(damaged))
        if loaded is not None:
            ends_well(lambda: loaded.build("what is the tallest mountain ?"))


def test_loading_a_regular_file_or_nothing_is_an_index_error(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for path in (tmp_path / "notes.txt", tmp_path / "missing"):
        with pytest.raises(ricl.errors.IndexLoadError):
            ricl.PromptBuilder.load(path)


@fuzz
@given(records, st.lists(st.one_of(texts, scalars), max_size=4))
def test_corpus_changes(rows, ids):
    builder = ricl.PromptBuilder(_small_corpus(), retriever="bm25", k=3, max_tokens=200)
    ends_well(lambda: builder.add(rows))
    ends_well(lambda: builder.update(rows))
    ends_well(lambda: builder.remove(ids))
    ends_well(lambda: builder.remove([e.id for e in builder.corpus][:len(ids)]))
    assert len(builder.build("what is the tallest mountain ?").demos) == 3
