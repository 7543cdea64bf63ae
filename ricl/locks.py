"""A readers-writer lock: many threads build prompts at once, a change waits for them
and then runs alone, so no prompt ever sees half of a change."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    """Shared ``read()`` or exclusive ``write()`` sections.

    A waiting writer goes before readers that arrive after it, so a stream of builds
    cannot starve a change. Reentrant where it is safe: a thread inside ``write()`` may
    enter ``read()`` or ``write()`` again, a thread inside ``read()`` may read again
    (even while a writer waits). A thread inside ``read()`` may not enter ``write()``:
    two such threads would wait for each other forever, so it raises instead.
    """

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._write_depth = 0
        self._waiting_writers = 0
        self._local = threading.local()

    def _read_depth(self) -> int:
        return getattr(self._local, "depth", 0)

    @contextmanager
    def read(self) -> Iterator[None]:
        depth = self._read_depth()
        with self._cond:
            if self._writer != threading.get_ident() and depth == 0:
                while self._writer is not None or self._waiting_writers:
                    self._cond.wait()
            self._readers += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._write_depth += 1
            else:
                if self._read_depth():
                    raise RuntimeError("a thread that holds the read lock cannot take the write "
                                       "lock (it would wait for itself); change the corpus "
                                       "outside build().")
                self._waiting_writers += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._waiting_writers -= 1
                self._writer, self._write_depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._write_depth -= 1
                if self._write_depth == 0:
                    self._writer = None
                    self._cond.notify_all()
