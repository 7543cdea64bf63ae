"""The one resumable JSONL store that the grid, the position study and feedback scoring share."""

import gzip

import pytest

from ricl.errors import DataError
from ricl.jsonl_store import JsonlStore, read_jsonl


def test_rows_come_back_with_their_keys_after_a_reopen(tmp_path):
    path = tmp_path / "results.jsonl"
    store = JsonlStore(path, key=lambda row: row["key"])
    store.append([{"key": "a", "value": 1}, {"key": "b", "value": "é"}])
    again = JsonlStore(path, key=lambda row: row["key"])
    assert again.get("a") == {"key": "a", "value": 1} and "b" in again and "c" not in again
    assert again.rows == read_jsonl(path) == store.rows
    assert path.read_text(encoding="utf-8").endswith('"é"}\n')  # UTF-8 unless asked to escape
    JsonlStore(tmp_path / "ascii.jsonl", ensure_ascii=True).append([{"v": "é"}])
    assert (tmp_path / "ascii.jsonl").read_text() == '{"v": "\\u00e9"}\n'


def test_a_torn_last_line_is_skipped_then_cut_off_by_the_next_append(tmp_path):
    path = tmp_path / "results.jsonl"
    JsonlStore(path).append([{"key": "a"}])
    with path.open("a") as f:
        f.write('{"key": "b", "val')  # killed mid-write
    assert read_jsonl(path) == [{"key": "a"}]
    store = JsonlStore(path, key=lambda row: row["key"])
    assert list(store.keys()) == ["a"]
    store.append([{"key": "b"}])
    assert path.read_text() == '{"key": "a"}\n{"key": "b"}\n'


def test_a_complete_line_without_its_newline_counts_as_torn(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}')
    assert read_jsonl(path) == [{"a": 1}]


def test_damage_before_the_last_line_is_an_error(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(DataError, match=r"f.jsonl:2 .*damaged"):
        JsonlStore(path)


def test_replace_rewrites_a_key_in_place_of_its_old_row(tmp_path):
    path = tmp_path / "results.jsonl"
    store = JsonlStore(path, key=lambda row: row["key"])
    store.replace({"key": "a", "v": 1})
    store.replace({"key": "b", "v": 1})
    store.replace({"key": "a", "v": 2})
    assert read_jsonl(path) == [{"key": "b", "v": 1}, {"key": "a", "v": 2}]
    assert store.get("a") == {"key": "a", "v": 2} and len(store.rows) == 2
    store.append([{"key": "c"}])  # appends continue after a rewrite
    assert [r["key"] for r in JsonlStore(path).rows] == ["b", "a", "c"]


def test_gzipped_files_read_like_plain_ones(tmp_path):
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"id": "x"}\n'))
    assert read_jsonl(path) == [{"id": "x"}] and read_jsonl(tmp_path / "none.jsonl") == []
