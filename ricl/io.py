"""Atomic writes that never lose a user's files.

A crash leaves either the old file/dir intact or the new one complete, and a writer
replaces only what ricl itself wrote before:

- a directory ricl writes whole (an index, a trained model, a model cache, a
  checkpoints folder) carries a marker file, ``.ricl-output.json`` holding
  ``{"format": 1, "kind": "<what wrote it>"}``; ``check_dir_target`` reads it to
  decide whether a path may be replaced (``atomic_dir`` asks it first);
- files ricl writes into a directory it shares with the user (a report beside the
  results) are listed with their SHA-256 in ``.ricl-files.json``; ``publish_files``
  replaces a file only while it still holds what ricl wrote there.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ricl.errors import OverwriteError

log = logging.getLogger(__name__)

MARKER = ".ricl-output.json"
MARKER_FORMAT = 1
FILES_MARKER = ".ricl-files.json"
# Cards of outputs written before markers existed: named in the refusal as a hint only,
# never taken as permission (a user's folder may hold a file of the same name).
_LEGACY_CARDS = {"builder.json", "retriever.json", "training_card.json"}


def write_marker(directory: str | Path, kind: str) -> None:
    """Mark ``directory`` as a ricl output of ``kind`` ("prompt-builder", "retriever", ...)."""
    (Path(directory) / MARKER).write_text(
        json.dumps({"format": MARKER_FORMAT, "kind": kind}) + "\n", encoding="utf-8")


def read_marker(directory: str | Path) -> dict[str, Any] | None:
    """The marker of a directory ricl wrote: ``{"format": int, "kind": str}``; None when
    there is none or it is not one ricl could have written."""
    try:
        marker = json.loads((Path(directory) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(marker, dict) or isinstance(marker.get("format"), bool)
            or not isinstance(marker.get("format"), int) or not isinstance(marker.get("kind"), str)):
        return None
    return marker


def check_dir_target(target: str | Path, kind: str, *, overwrite: bool = False) -> None:
    """Raise :class:`OverwriteError` unless a ``kind`` directory may be written at ``target``.

    Allowed: ``target`` does not exist; it is an empty directory; it is a directory
    ricl wrote as the same ``kind`` (re-saving replaces it); it is a ricl output of
    another kind and ``overwrite=True``. Refused whatever ``overwrite`` says: a regular
    file, a symbolic link, a directory without ricl's marker (the user's own files).
    """
    target = Path(target)
    if target.is_symlink():
        raise OverwriteError(f"{target} is a symbolic link; ricl will not replace it with a {kind} "
                             "directory. Pick another path, or give the link's target itself.")
    if not target.exists():
        return
    if not target.is_dir():
        raise OverwriteError(f"{target} is an existing file, not a directory ricl wrote; ricl will "
                             f"not replace it with a {kind} directory. Pick another path "
                             "(overwrite=True only replaces ricl's own output).")
    entries = sorted(p.name for p in target.iterdir())
    if not entries:
        return
    marker = read_marker(target)
    if marker is None:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        legacy = (" If it is an index or model saved by a ricl older than these markers, "
                  "delete it yourself first." if set(entries) & _LEGACY_CARDS else "")
        raise OverwriteError(f"{target} is a directory ricl did not write (no readable {MARKER}); "
                             f"what it holds ({shown}) would be lost. "
                             "Pick another path, or a new or empty directory (overwrite=True "
                             f"only replaces ricl's own output).{legacy}")
    if marker["kind"] != kind and not overwrite:
        raise OverwriteError(f"{target} holds a ricl {marker['kind']}, not a {kind}. Pass "
                             "overwrite=True to replace it, or pick another path.")


def claim_dir(target: str | Path, kind: str) -> Path:
    """A directory that a long job adds to over several runs (a grid, a study): created
    and marked as ``kind`` when absent or empty, accepted when it already holds a ricl
    ``kind``; anything else (a file, the user's own directory, another kind of ricl
    output) raises :class:`OverwriteError` before the job writes anything."""
    target = Path(target)
    check_dir_target(target, kind)
    target.mkdir(parents=True, exist_ok=True)
    if read_marker(target) is None:
        write_marker(target, kind)
    return target


@contextmanager
def atomic_dir(target: str | Path, kind: str, *, overwrite: bool = False,
               keep_existing: bool = False, mode: int | None = None) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it is marked as a ricl ``kind``
    output and replaces ``target`` whole.

    ``target`` is checked first (:func:`check_dir_target`, with ``overwrite``), before
    the caller does any work, and again just before the swap: a user's file or
    directory is never replaced. ``keep_existing=True`` (caches): a directory already
    at ``target`` when the new one is ready, say from a process that finished first,
    is kept and the new one dropped. ``mode``: permissions of the new directory
    (``mkdtemp`` makes it 0700).

    The temporary directory sits beside ``target``, so the final step is one atomic
    exchange of the two paths (Linux ``renameat2(RENAME_EXCHANGE)``): a process killed
    at any instant leaves either the old directory or the new one at ``target``,
    never neither and never a mix. Temporary directories left by killed processes
    are removed by the next save.
    """
    target = Path(target).absolute()
    check_dir_target(target, kind, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        if mode is not None:
            tmp.chmod(mode)
        yield tmp
        write_marker(tmp, kind)
        if _rename_noreplace(tmp, target):
            return
        if keep_existing and target.is_dir() and not target.is_symlink() \
                and any(target.iterdir()):
            log.info("Another process wrote %s first; keeping it.", target)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        check_dir_target(target, kind, overwrite=overwrite)  # it may have changed meanwhile
        if _exchange(tmp, target):
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


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2(a: Path, b: Path, flags: int) -> int | None:
    """0 on success, the errno on failure, None where renameat2 is unavailable."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), flags) == 0:
        return 0
    code = ctypes.get_errno()
    return None if code in (errno.ENOSYS, errno.EINVAL) else code


def _exchange(a: Path, b: Path) -> bool:
    return _renameat2(a, b, _RENAME_EXCHANGE) == 0


def _rename_noreplace(tmp: Path, target: Path) -> bool:
    """Move ``tmp`` to ``target`` if nothing is there (atomically where the kernel allows)."""
    code = _renameat2(tmp, target, _RENAME_NOREPLACE)
    if code is None:  # no renameat2 (or not on this file system): check, then rename
        if os.path.lexists(target):
            return False
        os.replace(tmp, target)
        return True
    if code == 0:
        return True
    if code == errno.EEXIST:
        return False
    raise OSError(code, os.strerror(code), str(target))


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
    if target.is_dir():
        raise OverwriteError(f"{target} is a directory; ricl writes a file there only in place "
                             "of a file. Pick another file name.")
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


@contextmanager
def staging_dir(out_dir: str | Path) -> Iterator[Path]:
    """A private temporary directory inside ``out_dir`` to write files in before
    :func:`publish_files` moves them into place; removed on leaving (one left by a
    killed process is removed by the next call)."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise OverwriteError(f"{out_dir} is an existing file; ricl writes its output files into a "
                             "directory there. Pick another output directory.")
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(out_dir / ".ricl-staging")
    tmp = Path(tempfile.mkdtemp(prefix=f".ricl-staging.tmp-{os.getpid()}-", dir=out_dir))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_files(out_dir: str | Path, files: Mapping[str, Path]) -> None:
    """Move finished files into ``out_dir``, a directory ricl shares with the user.

    ``files`` maps a file name to a finished file beside ``out_dir`` or in it (it is
    moved, not copied). A name may be written where nothing is, or where the file
    still holds exactly what ricl wrote there before (its SHA-256 is in
    ``.ricl-files.json``); anything else is the user's, and :class:`OverwriteError`
    names it before any file is touched. Each file is replaced in one rename; the list
    is updated before and after, so a crash never leaves a file ricl wrote unrecognised.
    """
    out_dir = Path(out_dir)
    known = _read_files_marker(out_dir)
    foreign = [name for name in files if _is_foreign(out_dir / name, known.get(name, ()))]
    if foreign:
        raise OverwriteError(f"{out_dir} already holds {', '.join(sorted(foreign))}, which ricl "
                             f"did not write (or which was changed since; see {FILES_MARKER}). "
                             "Nothing was written. Move those files away, or pick another "
                             "output directory.")
    new = {name: _sha256(path) for name, path in files.items()}
    pending = dict(known)
    for name, digest in new.items():
        pending[name] = sorted({*pending.get(name, ()), digest})
    write_json(out_dir / FILES_MARKER, {"format": MARKER_FORMAT, "files": pending})
    for name, path in files.items():
        os.replace(path, out_dir / name)
    write_json(out_dir / FILES_MARKER,
               {"format": MARKER_FORMAT, "files": {**known, **{k: [v] for k, v in new.items()}}})


def _read_files_marker(out_dir: Path) -> dict[str, list[str]]:
    try:
        value = json.loads((out_dir / FILES_MARKER).read_text(encoding="utf-8"))
        files = value["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {str(k): list(v) for k, v in files.items() if isinstance(v, list)}


def _is_foreign(path: Path, digests: Any) -> bool:
    if path.is_symlink() or path.is_dir():
        return True
    if not path.exists():
        return False
    return _sha256(path) not in digests


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
