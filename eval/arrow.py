"""Arrow IPC streams (what Hugging Face ``datasets.save_to_disk`` writes), read without pyarrow.

pyarrow is not a dependency (the packages that ship these files pin old versions of
it), and only plain text-data columns are needed, so this is a small reader of them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ricl.errors import DataError

# -- Arrow IPC streams (Hugging Face ``datasets`` files) without pyarrow ------------------
#
# The format: https://arrow.apache.org/docs/format/Columnar.html#ipc-streaming-format .
# A stream is a sequence of messages, each a flatbuffer (Message.fbs) followed by a
# body; the first message is the Schema, the rest RecordBatches. Only what HF datasets
# write for text data is read: strings, integers, floats, booleans, nulls, lists and
# structs, uncompressed and without dictionaries. Anything else is a DataError.

class _FlatTable:
    """One flatbuffers table: field ``i``'s offset sits in the vtable's slot ``i``."""

    __slots__ = ("buf", "pos", "vtable", "vtable_size")

    def __init__(self, buf: memoryview, pos: int):
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_size = struct.unpack_from("<H", buf, self.vtable)[0]

    def _slot(self, index: int) -> int:
        entry = 4 + 2 * index
        if entry >= self.vtable_size:
            return 0
        return struct.unpack_from("<H", self.buf, self.vtable + entry)[0]

    def scalar(self, index: int, fmt: str, default: Any = 0) -> Any:
        slot = self._slot(index)
        return default if not slot else struct.unpack_from("<" + fmt, self.buf, self.pos + slot)[0]

    def _target(self, index: int) -> int | None:
        slot = self._slot(index)
        if not slot:
            return None
        at = self.pos + slot
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def table(self, index: int) -> _FlatTable | None:
        at = self._target(index)
        return None if at is None else _FlatTable(self.buf, at)

    def string(self, index: int) -> str:
        at = self._target(index)
        if at is None:
            return ""
        size = struct.unpack_from("<I", self.buf, at)[0]
        return bytes(self.buf[at + 4:at + 4 + size]).decode("utf-8")

    def vector(self, index: int) -> tuple[int, int]:
        """Where a vector's elements start, and how many there are."""
        at = self._target(index)
        return (0, 0) if at is None else (at + 4, struct.unpack_from("<I", self.buf, at)[0])

    def tables(self, index: int) -> list[_FlatTable]:
        start, count = self.vector(index)
        return [_FlatTable(self.buf, at + struct.unpack_from("<I", self.buf, at)[0])
                for at in range(start, start + 4 * count, 4)]


# Type ids of the Type union in Schema.fbs that this reader decodes.
_NULL, _INT, _FLOAT, _BINARY, _UTF8, _BOOL = 1, 2, 3, 4, 5, 6
_LIST, _STRUCT, _FIXED_LIST, _LARGE_BINARY, _LARGE_UTF8, _LARGE_LIST = 12, 13, 16, 19, 20, 21
_INT_FORMATS = {8: "b", 16: "h", 32: "i", 64: "q"}
_FLOAT_FORMATS = {1: "f", 2: "d"}  # Precision: SINGLE, DOUBLE
_SCHEMA, _RECORD_BATCH = 1, 3  # MessageHeader union ids


@dataclass(frozen=True)
class _ArrowField:
    name: str
    type_id: int
    fmt: str = ""  # struct format of fixed-width values
    list_size: int = 0  # FixedSizeList
    children: tuple[_ArrowField, ...] = ()


def _arrow_field(table: _FlatTable, path: Path) -> _ArrowField:
    name, type_id = table.string(0), table.scalar(2, "B")
    if table.table(4) is not None:
        raise DataError(f"{path}: column '{name}' is dictionary-encoded, which this reader "
                        "does not decode.")
    type_table = table.table(3)
    fmt, list_size = "", 0
    if type_id == _INT:
        width, signed = type_table.scalar(0, "i"), type_table.scalar(1, "?", False)
        fmt = _INT_FORMATS.get(width, "")
        fmt = fmt if signed else fmt.upper()
    elif type_id == _FLOAT:
        fmt = _FLOAT_FORMATS.get(type_table.scalar(0, "h"), "")
    elif type_id == _FIXED_LIST:
        list_size = type_table.scalar(0, "i")
    decodable = {_NULL, _BINARY, _UTF8, _BOOL, _LIST, _STRUCT, _FIXED_LIST, _LARGE_BINARY,
                 _LARGE_UTF8, _LARGE_LIST}
    if not (type_id in decodable or fmt):
        raise DataError(f"{path}: column '{name}' has Arrow type id {type_id}, which this "
                        "reader does not decode (strings, numbers, booleans, lists, structs).")
    children = tuple(_arrow_field(child, path) for child in table.tables(5))
    return _ArrowField(name, type_id, fmt, list_size, children)


class _BatchReader:
    """Walks one RecordBatch's field nodes and buffers in schema order."""

    def __init__(self, header: _FlatTable, body: memoryview, path: Path):
        self.body, self.path = body, path
        self.nodes = self._pairs(header, 1)  # FieldNode {length, null_count}
        self.buffers = self._pairs(header, 2)  # Buffer {offset, length}

    @staticmethod
    def _pairs(header: _FlatTable, index: int) -> Iterator[tuple[int, int]]:
        start, count = header.vector(index)
        values = struct.unpack_from(f"<{2 * count}q", header.buf, start)
        return iter(list(zip(values[::2], values[1::2])))

    def _buffer(self) -> memoryview:
        try:
            offset, length = next(self.buffers)
        except StopIteration:
            raise DataError(f"{self.path}: a record batch has fewer buffers than its schema "
                            "needs; the file is damaged.") from None
        if offset < 0 or length < 0 or offset + length > len(self.body):
            raise DataError(f"{self.path}: a buffer lies outside its message; the file is "
                            "damaged.")
        return self.body[offset:offset + length]

    def column(self, field: _ArrowField) -> list[Any]:
        try:
            length, null_count = next(self.nodes)
        except StopIteration:
            raise DataError(f"{self.path}: a record batch has fewer field nodes than its "
                            "schema has columns; the file is damaged.") from None
        if field.type_id == _NULL:
            return [None] * length
        validity = self._buffer()
        try:
            values = self._values(field, length)
        except struct.error as exc:
            raise DataError(f"{self.path}: column '{field.name}' is shorter than its "
                            f"length says ({exc}); the file is damaged.") from None
        if null_count and len(validity):
            values = [value if validity[i >> 3] >> (i & 7) & 1 else None
                      for i, value in enumerate(values)]
        return values

    def _offsets(self, length: int, large: bool) -> tuple[int, ...]:
        return struct.unpack_from(f"<{length + 1}{'q' if large else 'i'}", self._buffer())

    def _values(self, field: _ArrowField, length: int) -> list[Any]:
        kind = field.type_id
        if field.fmt:
            return list(struct.unpack_from(f"<{length}{field.fmt}", self._buffer()))
        if kind == _BOOL:
            bits = self._buffer()
            return [bool(bits[i >> 3] >> (i & 7) & 1) for i in range(length)]
        if kind in (_UTF8, _LARGE_UTF8, _BINARY, _LARGE_BINARY):
            offsets = self._offsets(length, kind in (_LARGE_UTF8, _LARGE_BINARY))
            data = bytes(self._buffer())
            if kind in (_BINARY, _LARGE_BINARY):
                return [data[offsets[i]:offsets[i + 1]] for i in range(length)]
            try:
                return [data[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(length)]
            except UnicodeDecodeError:
                raise DataError(f"{self.path}: column '{field.name}' holds invalid UTF-8; "
                                "the file is damaged.") from None
        if kind in (_LIST, _LARGE_LIST):
            offsets = self._offsets(length, kind == _LARGE_LIST)
            items = self.column(field.children[0])
            return [items[offsets[i]:offsets[i + 1]] for i in range(length)]
        if kind == _FIXED_LIST:
            items, size = self.column(field.children[0]), field.list_size
            return [items[i * size:(i + 1) * size] for i in range(length)]
        # _STRUCT
        names = [child.name for child in field.children]
        columns = [self.column(child) for child in field.children]
        return [dict(zip(names, values)) for values in zip(*columns)] if columns \
            else [{} for _ in range(length)]


def _arrow_messages(data: bytes, path: Path) -> Iterator[tuple[_FlatTable, memoryview]]:
    view, position = memoryview(data), 0
    while position + 4 <= len(data):
        size = struct.unpack_from("<i", data, position)[0]
        position += 4
        if size == -1:  # continuation marker of the current format
            size = struct.unpack_from("<i", data, position)[0] if position + 4 <= len(data) else 0
            position += 4
        if size == 0:  # end of stream
            return
        if size < 0 or position + size > len(data):
            raise DataError(f"{path}: a message runs past the end of the file; it is truncated.")
        metadata = view[position:position + size]
        position += size
        message = _FlatTable(metadata, struct.unpack_from("<I", metadata, 0)[0])
        body_length = message.scalar(3, "q")
        if body_length < 0 or position + body_length > len(data):
            raise DataError(f"{path}: a message body runs past the end of the file; it is "
                            "truncated.")
        yield message, view[position:position + body_length]
        position += body_length


def read_arrow_stream(path: str | Path) -> list[dict[str, Any]]:
    """The rows of an Arrow IPC stream file (what ``datasets.save_to_disk`` writes).

    Each row is a dict of plain Python values (lists for list columns, dicts for
    structs, ``None`` for nulls). Where the file sits next to the
    ``dataset_info.json``/``state.json`` of a saved dataset, the row count is checked
    against the split size recorded there.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror}.") from None
    fields: list[_ArrowField] | None = None
    rows: list[dict[str, Any]] = []
    try:
        for message, body in _arrow_messages(data, path):
            kind, header = message.scalar(1, "B"), message.table(2)
            if kind == _SCHEMA:
                if header.scalar(0, "h") != 0:
                    raise DataError(f"{path} is big-endian; only little-endian Arrow is read.")
                fields = [_arrow_field(table, path) for table in header.tables(1)]
            elif kind == _RECORD_BATCH:
                if fields is None:
                    raise DataError(f"{path}: a record batch comes before the schema.")
                if header.table(3) is not None:
                    raise DataError(f"{path} is compressed; only uncompressed Arrow is read.")
                batch = _BatchReader(header, body, path)
                columns = [batch.column(field) for field in fields]
                if any(len(column) != header.scalar(0, "q") for column in columns):
                    raise DataError(f"{path}: columns of one record batch differ in length.")
                names = [field.name for field in fields]
                rows.extend(dict(zip(names, values)) for values in zip(*columns))
            else:
                raise DataError(f"{path} holds an Arrow message of type {kind} (dictionary "
                                "or tensor), which this reader does not decode.")
    except (struct.error, IndexError) as exc:
        raise DataError(f"{path} is not a readable Arrow IPC stream ({exc}). Reinstall the "
                        "package that ships it.") from None
    if fields is None:
        raise DataError(f"{path} holds no Arrow schema; it is not an Arrow IPC stream.")
    expected = _recorded_split_size(path)
    if expected is not None and expected != len(rows):
        raise DataError(f"{path} holds {len(rows)} rows but its dataset_info.json records "
                        f"{expected}; the file is damaged or was replaced.")
    return rows


def _recorded_split_size(path: Path) -> int | None:
    try:
        split = json.loads((path.parent / "state.json").read_text())["_split"]
        info = json.loads((path.parent / "dataset_info.json").read_text())
        return int(info["splits"][split]["num_examples"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
