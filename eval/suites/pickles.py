"""StaICC's pickled datasets, read without letting a pickle run code."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from eval.suites.model import SuiteSpec
from ricl.errors import DataError

# Constructors that build plain values and cannot reach the interpreter or the system.
_SAFE_BUILTINS = frozenset({"set", "frozenset", "bytearray", "complex"})


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only plain values: any global outside ``_SAFE_BUILTINS`` is refused."""

    def find_class(self, module: str, name: str) -> Any:
        # Pickles of protocol < 3 name the module "__builtin__" (Python 2's name).
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        raise DataError(
            f"Refused to load the pickle: it asks for the global '{module}.{name}', "
            "which could run code. Only plain data (lists, tuples, dicts, strings, numbers) "
            "is accepted. Reinstall the package or check where the file came from."
        )


def load_restricted_pickle(path: str | Path) -> Any:
    """Read a pickle of plain data; raise :class:`DataError` for anything else.

    Unlike ``pickle.load`` this never imports a module or calls a function named in
    the file, so a tampered data file cannot execute code.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror}.") from None
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except DataError:
        raise
    except Exception as exc:  # truncated or corrupt pickles raise many kinds of errors
        raise DataError(f"{path} is not a readable pickle ({type(exc).__name__}: {exc}). "
                        "Reinstall the package that ships it.") from None


def read_staicc_pickle(path: Path, spec: SuiteSpec) -> list[tuple[str, int]]:
    """StaICC's cached datasets: a list of ``([text], label_index)``."""
    table = load_restricted_pickle(path)
    if not isinstance(table, list):
        raise DataError(f"{path} holds a {type(table).__name__}, not StaICC's list of rows.")
    rows = []
    for index, row in enumerate(table):
        ok = isinstance(row, (tuple, list)) and len(row) == 2
        texts, label = row if ok else (None, None)
        if isinstance(texts, (list, tuple)) and len(texts) == 1:
            texts = texts[0]
        if not (ok and isinstance(texts, str) and isinstance(label, int)
                and not isinstance(label, bool) and 0 <= label < len(spec.labels)):
            raise DataError(f"{path}: row {index} is {row!r:.80}, not ([text], label index "
                            f"0..{len(spec.labels) - 1}). Reinstall {spec.pip_args}.")
        rows.append((texts, label))
    return rows
