"""Atomic writes: a crash leaves either the old file/dir intact or the new one complete."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``target`` whole.

    The temporary directory sits beside ``target``, so the final step is one atomic
    exchange of the two paths (Linux ``renameat2(RENAME_EXCHANGE)``): a process killed
    at any instant leaves either the old directory or the new one at ``target``,
    never neither and never a mix. Temporary directories left by killed processes
    are removed by the next save.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        if not target.exists():
            os.replace(tmp, target)
        elif _exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)  # now holds the old version
        else:  # no renameat2: two renames; recover_dir() repairs a kill in between
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-",
                                        dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(target: str | Path) -> None:
    """Put back the previous version if a save was killed between its two renames
    (only possible where the atomic exchange is unavailable)."""
    target = Path(target).absolute()
    if target.exists() or not target.parent.is_dir():
        return
    for old in sorted(target.parent.glob(f".{target.name}.old-*/x")):
        os.replace(old, target)
        shutil.rmtree(old.parent, ignore_errors=True)
        return


def _exchange(a: Path, b: Path) -> bool:
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _remove_stale(target: Path) -> None:
    """Delete temporary siblings (files or directories) whose writing process no longer
    exists."""
    for path in target.parent.glob(f".{target.name}.tmp-*"):
        pid = path.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary file beside ``target``; on success it replaces
    ``target`` in one rename.

    Write the yielded path any way (a stream, a gzip writer, ``np.save`` on an open
    handle), so large outputs never have to be assembled in memory. A process killed
    at any instant leaves the old file or the whole new one; its temporary file is
    removed by the next write to ``target``.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``path`` so that a crash leaves either the old file or the whole new one."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")
