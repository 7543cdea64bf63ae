"""A suite's data files: found inside installed packages without importing them
(importing StaICC or OLMo pulls in a whole toolkit), and read once per process."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from eval.suites.model import DataFile, SuiteSpec
from eval.suites.registry import _spec
from ricl.errors import DataError, MissingPackageError


def _package_file(spec: SuiteSpec, data: DataFile | None = None) -> Path:
    """A data file inside an installed package, found without importing the package."""
    data = data or spec.main_file
    try:
        found = importlib.util.find_spec(data.package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise MissingPackageError(data.package, f"The suite '{spec.name}'", data.pip_args)
    for location in found.submodule_search_locations:
        candidate = Path(location) / data.resource
        if candidate.is_file():
            return candidate
    raise DataError(f"The package '{data.package}' is installed but lacks {data.resource}. "
                    f"Reinstall it with: pip install --force-reinstall {data.pip_args}")


def _raw_rows(name: str, side: str = "main") -> tuple[Any, ...]:
    """A suite file's rows as its reader returns them, parsed once per process (AG News
    alone is 127,600 rows). ``side`` is ``"main"`` or ``"test"``."""
    return _read_rows(name, side)


@functools.lru_cache(maxsize=None)
def _read_rows(name: str, side: str) -> tuple[Any, ...]:
    spec = _spec(name)
    data = spec.main_file if side == "main" else spec.test_file
    return tuple(data.reader(_package_file(spec, data), spec))
