"""Examples and the corpus of demonstrations, validated at the door."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path
from typing import Any

import numpy as np

from ricl.errors import CorpusError, DuplicateIdError, UnknownIdError
from ricl.text import check_text, normalize


@dataclass(frozen=True)
class Example:
    """One labelled demonstration: named input fields and the answer."""

    id: str
    inputs: Mapping[str, str]
    output: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The input fields joined, as retrievers see them."""
        return "\n".join(self.inputs.values())

    def fields(self, output_name: str = "output") -> dict[str, str]:
        """Every field by name, plus ``input`` (single-input corpora) and the output."""
        values = dict(self.inputs)
        values.setdefault("input", self.text)
        values[output_name] = self.output
        values.setdefault("output", self.output)
        return values

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "inputs": dict(self.inputs), "output": self.output,
                "meta": dict(self.meta)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Example:
        return cls(id=record["id"], inputs=dict(record["inputs"]),
                   output=record["output"], meta=dict(record.get("meta", {})))


def content_id(inputs: Mapping[str, str], output: str) -> str:
    """A stable id derived from content: same fields, same id, across runs and machines."""
    payload = json.dumps([sorted(inputs.items()), output], ensure_ascii=False)
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class Corpus(Sequence[Example]):
    """An immutable, validated list of examples with unique ids.

    Build one with :meth:`from_records`, :meth:`from_jsonl` or :meth:`from_csv`.
    """

    def __init__(self, examples: Iterable[Example], *, input_names: Sequence[str],
                 output_name: str, labels: Sequence[str] | None = None):
        self._examples = tuple(examples)
        if not self._examples:
            raise CorpusError("The corpus is empty: pass at least one record.")
        self.input_names = tuple(input_names)
        self.output_name = output_name
        self.labels = tuple(labels) if labels is not None else None
        # id -> slot -> row: a change to the corpus moves rows (a removal shifts every row
        # after it) but not slots, so a changed corpus is derived in time proportional to
        # the change (see _with and _without), not to the corpus.
        self._slot_of: dict[str, int] = {}
        for row, example in enumerate(self._examples):
            if example.id in self._slot_of:
                raise DuplicateIdError(
                    f"Duplicate id {example.id!r} (records {self._slot_of[example.id]} and {row}). "
                    "Ids must be unique: fix the id column, or omit it to derive ids from content."
                )
            self._slot_of[example.id] = row
        self._row_of_slot = np.arange(len(self._examples), dtype=np.int64)

    # -- derived corpora (for ricl.changes: validated examples, unique ids) ---------------
    def _derived(self, examples: tuple[Example, ...], slot_of: dict[str, int],
                 row_of_slot: np.ndarray) -> Corpus:
        corpus = Corpus.__new__(Corpus)
        corpus._examples = examples
        corpus.input_names, corpus.output_name, corpus.labels = (
            self.input_names, self.output_name, self.labels)
        if len(row_of_slot) > 2 * len(examples) + 1024:  # mostly removed slots: start afresh
            slot_of = dict(zip((e.id for e in examples), range(len(examples))))
            row_of_slot = np.arange(len(examples), dtype=np.int64)
        corpus._slot_of, corpus._row_of_slot = slot_of, row_of_slot
        return corpus

    def _with(self, replaced: Mapping[int, Example], appended: Sequence[Example]) -> Corpus:
        """This corpus with the examples at some rows replaced (same ids) and others
        appended (new ids)."""
        examples = list(self._examples)
        for row, example in replaced.items():
            examples[row] = example
        examples.extend(appended)
        slot_of = dict(self._slot_of)
        first = len(self._row_of_slot)
        slot_of.update((example.id, first + i) for i, example in enumerate(appended))
        row_of_slot = np.concatenate([self._row_of_slot, len(self) + np.arange(
            len(appended), dtype=np.int64)])
        return self._derived(tuple(examples), slot_of, row_of_slot)

    def _without(self, rows: np.ndarray) -> Corpus:
        """This corpus without the examples at ``rows`` (sorted, distinct)."""
        keep = np.ones(len(self), dtype=bool)
        keep[rows] = False
        slot_of = dict(self._slot_of)
        slots = [slot_of.pop(self._examples[row].id) for row in rows.tolist()]
        row_of_slot = self._row_of_slot - np.searchsorted(rows, self._row_of_slot)
        row_of_slot[slots] = -1
        return self._derived(tuple(compress(self._examples, keep.tolist())), slot_of, row_of_slot)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], *,
                     input: str | Sequence[str] = "input", output: str = "output",
                     id: str | None = "id", labels: Sequence[str] | None = None,
                     source: str = "record") -> Corpus:
        """Validate dicts into a corpus.

        ``input`` names the input field (or several); ``output`` the answer field.
        ``id`` names the id field; when a record lacks it, the id is derived from its
        content. ``labels`` maps integer outputs to label words (``labels[i]``).
        """
        input_names = [input] if isinstance(input, str) else list(input)
        if not input_names:
            raise CorpusError("`input` names no field: pass the input field name, e.g. input='text'.")
        if labels is not None:
            labels = [check_text(str(label), f"labels[{i}]", CorpusError)
                      for i, label in enumerate(labels)]
            if len(set(labels)) != len(labels):
                raise CorpusError(f"`labels` has repeated words: {labels}. Each label needs its own word.")
        examples = []
        for row, record in enumerate(records):
            where = f"{source} {row}"
            if not isinstance(record, Mapping):
                raise CorpusError(f"{where} is a {type(record).__name__}, not a dict of fields.")
            inputs = {name: _input_value(record, name, where) for name in input_names}
            out = _output_value(record, output, labels, where)
            meta = {key: value for key, value in record.items()
                    if key not in input_names and key not in (output, id)}
            for key, value in meta.items():  # saved with the corpus, as UTF-8
                check_text(str(key), f"{where}: field name", CorpusError)
                if isinstance(value, str):
                    check_text(value, f"{where}: field {key!r}", CorpusError)
            rid = record.get(id) if id is not None else None
            if _is_missing(rid):
                rid = content_id(inputs, out)
            elif isinstance(rid, bool) or not isinstance(rid, (str, int)):
                raise CorpusError(f"{where}: id {rid!r} must be a string or an integer.")
            elif isinstance(rid, str):
                check_text(rid, f"{where}: id", CorpusError)
            examples.append(Example(id=str(rid), inputs=inputs, output=out, meta=meta))
        if not examples:
            raise CorpusError("The corpus is empty: pass at least one record.")
        return cls(examples, input_names=input_names, output_name=output, labels=labels)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> Corpus:
        """A ``.csv`` file (:meth:`from_csv`) or anything else as JSONL (:meth:`from_jsonl`)."""
        reader = cls.from_csv if Path(path).suffix.lower() == ".csv" else cls.from_jsonl
        return reader(path, **kwargs)

    @classmethod
    def from_jsonl(cls, path: str | Path, **kwargs: Any) -> Corpus:
        """One JSON object per line; blank lines are skipped."""
        path = Path(path)
        records = []
        for line_no, line in enumerate(_jsonl_lines(_read_text(path)), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}:{line_no} is not valid JSON ({exc.msg}). "
                                  "Each line must hold one JSON object.") from None
        return cls.from_records(records, source=f"{path}: record", **kwargs)

    @classmethod
    def from_csv(cls, path: str | Path, **kwargs: Any) -> Corpus:
        """A CSV file with a header row; every row must have as many cells as the header."""
        path = Path(path)
        rows = list(csv.reader(io.StringIO(_read_text(path), newline="")))
        if not rows:
            raise CorpusError(f"{path} is empty: it needs a header row and at least one data row.")
        header, records = rows[0], []
        for line_no, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise CorpusError(f"{path}:{line_no} has {len(row)} cells but the header has "
                                  f"{len(header)}. Fix the row or quote cells that contain commas.")
            records.append(dict(zip(header, row)))
        return cls.from_records(records, source=f"{path}: row", **kwargs)

    # -- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._examples)

    def __getitem__(self, row):  # type: ignore[override]
        return self._examples[row]

    def __iter__(self):
        return iter(self._examples)

    def row_of(self, example_id: str) -> int:
        try:
            return int(self._row_of_slot[self._slot_of[example_id]])
        except KeyError:
            raise UnknownIdError(f"No example with id {example_id!r} in this corpus.") from None

    def has_id(self, example_id: str) -> bool:
        return example_id in self._slot_of

    def texts(self) -> list[str]:
        return [example.text for example in self._examples]

    def normalized_texts(self) -> list[str]:
        return [normalize(example.text) for example in self._examples]

    def fingerprint(self) -> str:
        """Changes whenever any example changes; lets a saved index detect a stale corpus."""
        digest = hashlib.sha1()
        for example in self._examples:
            digest.update(json.dumps(example.to_record(), sort_keys=True,
                                     ensure_ascii=False).encode("utf-8"))
        return digest.hexdigest()

    # -- persistence ----------------------------------------------------------------------
    def to_jsonl(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            header = {"input_names": list(self.input_names), "output_name": self.output_name,
                      "labels": list(self.labels) if self.labels is not None else None}
            handle.write(json.dumps({"__corpus__": header}, ensure_ascii=False) + "\n")
            for example in self._examples:
                handle.write(json.dumps(example.to_record(), ensure_ascii=False) + "\n")

    @classmethod
    def read_saved(cls, path: str | Path) -> Corpus:
        """Read back what :meth:`to_jsonl` wrote (ids, fields and label words kept)."""
        lines = _jsonl_lines(_read_text(Path(path)))
        header = json.loads(lines[0])["__corpus__"]
        examples = [Example.from_record(json.loads(line)) for line in lines[1:] if line]
        return cls(examples, input_names=header["input_names"],
                   output_name=header["output_name"], labels=header["labels"])

    def __repr__(self) -> str:
        return (f"Corpus({len(self)} examples, inputs={list(self.input_names)}, "
                f"output={self.output_name!r})")


def _jsonl_lines(text: str) -> list[str]:
    """JSONL lines: split at "\n" only. ``str.splitlines`` would also split at U+0085,
    U+2028 and other characters that JSON strings may hold raw (MR reviews do)."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise CorpusError(f"{path} does not exist or is not a file.")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path} is not valid UTF-8 (byte {exc.start}). "
                          "Re-save it as UTF-8.") from None


def _input_value(record: Mapping[str, Any], name: str, where: str) -> str:
    if name not in record:
        raise CorpusError(f"{where} has no input field {name!r}; it has {sorted(record)}. "
                          f"Pass input=<field name> to from_records.")
    value = record[name]
    if not isinstance(value, str):
        raise CorpusError(f"{where}: input field {name!r} is {type(value).__name__} "
                          f"({value!r:.60}), not a string. Convert it to text first.")
    if not value.strip():
        raise CorpusError(f"{where}: input field {name!r} is empty. Drop the record or fill it.")
    return check_text(value, f"{where}: input field {name!r}", CorpusError)


def _output_value(record: Mapping[str, Any], name: str, labels: Sequence[str] | None,
                  where: str) -> str:
    if name not in record:
        raise CorpusError(f"{where} has no output field {name!r}; it has {sorted(record)}. "
                          f"Pass output=<field name> to from_records.")
    value = record[name]
    if _is_missing(value):
        raise CorpusError(f"{where}: output field {name!r} is missing (None/NaN). "
                          "Drop unlabelled records before building a corpus.")
    if labels is not None and isinstance(value, str) and value not in labels \
            and value.strip().isdigit():
        value = int(value)  # CSV cells are text: "3" means label index 3
    if labels is not None and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(labels):
            raise CorpusError(f"{where}: label index {value} is outside labels "
                              f"(0..{len(labels) - 1}: {list(labels)}).")
        return labels[value]
    if not isinstance(value, str):
        hint = " Pass labels=[...] to map integer labels to words." if isinstance(value, int) else ""
        raise CorpusError(f"{where}: output field {name!r} is {type(value).__name__} "
                          f"({value!r:.60}), not a string.{hint}")
    if not value.strip():
        raise CorpusError(f"{where}: output field {name!r} is empty. Drop the record or label it.")
    check_text(value, f"{where}: output field {name!r}", CorpusError)
    if labels is not None and value not in labels:
        raise CorpusError(f"{where}: output {value!r} is not one of labels {list(labels)}.")
    return value
