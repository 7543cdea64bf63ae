"""Chroma behind one small interface: on disk (embedded) or on a Chroma server.

Every collection is created with ``embedding_function=None`` and filled with our
own vectors: a collection without one would fall back to Chroma's ONNX default,
which downloads a model. Telemetry is off.

An embedded index is built once, in a private staging directory that lives as long
as the store; saving copies that directory (files, not a second HNSW build) and the
retriever then serves from the saved copy. An in-memory client would hold every
vector in its SQLite log as well as in the HNSW graph, and saving it would mean
inserting every vector again.

Chroma keeps one system (SQLite pool, HNSW cache) per path string for the whole process,
shared by every client of that path and kept while any of them lives. A saved index is
replaced whole by a later save (a directory swap), so a system shared with some other
reader of the old files would serve them stale to a store opened on the new ones. Each
embedded store therefore opens its files through a path of its own (a symbolic link in
a private temporary directory) and gets a system of its own.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ricl.errors import ConfigError, IndexLoadError, ServerUnavailableError
from ricl.transport import with_retries

COLLECTION = "ricl-demos"
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 200}


@dataclass(frozen=True)
class ServerAddress:
    host: str
    port: int
    collection: str

    @classmethod
    def parse(cls, url: str) -> ServerAddress:
        """``chroma://host:port/collection`` (collection optional)."""
        parsed = urlparse(url)
        if parsed.scheme != "chroma" or not parsed.hostname:
            raise ConfigError(f"{url!r} is not a Chroma server address; write "
                              "'chroma://HOST:PORT/COLLECTION', e.g. 'chroma://127.0.0.1:8000/demos'.")
        try:
            port = parsed.port or 8000
        except ValueError:
            raise ConfigError(f"{url!r}: the port must be a number.") from None
        name = parsed.path.strip("/") or COLLECTION
        return cls(parsed.hostname, port, name)

    @property
    def url(self) -> str:
        return f"chroma://{self.host}:{self.port}/{self.collection}"


class ChromaStore:
    """One collection of unit vectors whose ids are corpus row numbers."""

    def __init__(self, location: Path | ServerAddress):
        self.location = location
        self.name = location.collection if isinstance(location, ServerAddress) else COLLECTION
        self.is_staging = False  # a private temporary directory, not a saved index
        self._alias = None if isinstance(location, ServerAddress) else _private_alias(location)
        try:
            self._client = self._retry(self._connect, "a connection", reconnect=False)
        except BaseException:
            if self._alias is not None:
                shutil.rmtree(self._alias.parent, ignore_errors=True)
            raise
        self._collection = None
        if self.is_local:
            # A store dropped without close() releases its system and alias with itself.
            self._release = weakref.finalize(self, _release, self._client, self._alias)

    @classmethod
    def staging(cls, copy_of: Path | None = None) -> ChromaStore:
        """An embedded store in a fresh temporary directory, removed with the store
        (holding a copy of the store files at ``copy_of``, if given)."""
        path = Path(tempfile.mkdtemp(prefix="ricl-chroma-"))
        if copy_of is not None:
            shutil.copytree(copy_of, path, dirs_exist_ok=True)
        store = cls(path)
        store.is_staging = True
        # one finalizer, so that the files go only after the system holding them is stopped
        store._release.detach()
        store._release = weakref.finalize(store, _release, store._client, store._alias, path)
        return store

    def private_copy(self, expected: int) -> ChromaStore:
        """A staging copy of this embedded store's files, opened (``expected`` vectors):
        what a change to a saved index writes to, so the saved files stay as saved."""
        store = ChromaStore.staging(copy_of=self.location)
        store.open_existing(expected)
        return store

    @property
    def is_local(self) -> bool:
        return not isinstance(self.location, ServerAddress)

    def copy_to(self, target: Path) -> None:
        """Copy an embedded store's files to ``target`` (a path that does not exist yet)."""
        if not self.is_local:
            raise ValueError("Only an embedded Chroma store can be copied.")
        shutil.copytree(self.location, target)

    def close(self) -> None:
        """Release the client and the store's own Chroma system (open files, HNSW cache)."""
        if self.is_local:
            self._release()
        else:
            self._client.close()

    # -- connection ----------------------------------------------------------------------
    def _connect(self):
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        if isinstance(self.location, ServerAddress):
            client = chromadb.HttpClient(host=self.location.host, port=self.location.port,
                                         settings=settings)
            client.heartbeat()
            return client
        return chromadb.PersistentClient(path=str(self._alias), settings=settings)

    def _retry(self, action, what: str, reconnect: bool = True):
        """``action()``; against a server, retried by ricl's one policy while the server cannot
        be reached, with a fresh connection before each new try when ``reconnect``."""
        if not isinstance(self.location, ServerAddress):
            return action()
        host, port = self.location.host, self.location.port
        return with_retries(
            action, server=f"the Chroma server at {host}:{port}", what=what,
            remedy=(f"Start it with `chroma run --path DIR --host {host} --port {port}`, "
                    "or use the embedded backend 'dense:chroma'."),
            is_transient=_is_connection_error, before_retry=self._reconnect if reconnect else None)

    def _reconnect(self) -> None:
        self._client = self._connect_quietly()

    def _connect_quietly(self):
        try:
            return self._connect()
        except Exception:  # noqa: BLE001 - the next try reports it
            return self._client

    # -- collection ----------------------------------------------------------------------
    def replace(self, embeddings: np.ndarray) -> None:
        """A fresh collection holding exactly these vectors (ids "0".."n-1")."""
        def fill():
            name = self.name
            if isinstance(self.location, ServerAddress):
                try:
                    self._client.delete_collection(name)
                except Exception as exc:  # noqa: BLE001 - absent collection is fine
                    if _is_connection_error(exc):
                        raise
            collection = self._client.get_or_create_collection(
                name, embedding_function=None, configuration={"hnsw": dict(HNSW)})
            batch = self._client.get_max_batch_size()
            ids = [str(row) for row in range(len(embeddings))]
            for start in range(0, len(ids), batch):
                collection.add(ids=ids[start:start + batch],
                               embeddings=embeddings[start:start + batch])
            return collection

        self._collection = self._retry(fill, "a write")

    def upsert(self, ids: np.ndarray, embeddings: np.ndarray) -> None:
        """Write these vectors under these ids, replacing any that are there."""
        def write():
            batch = self._client.get_max_batch_size()
            names = [str(int(i)) for i in ids]
            for start in range(0, len(names), batch):
                self._collection.upsert(ids=names[start:start + batch],
                                        embeddings=embeddings[start:start + batch])

        if len(ids):
            self._retry(write, "a write")

    def delete(self, ids: np.ndarray) -> None:
        """Delete the vectors with these ids (ids not there are ignored, so a retry is safe)."""
        if len(ids):
            names = [str(int(i)) for i in ids]
            self._retry(lambda: self._collection.delete(ids=names), "a write")

    def open_existing(self, expected: int) -> None:
        def get():
            return self._client.get_collection(self.name, embedding_function=None)

        try:
            self._collection = self._retry(get, "a read")
        except ServerUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - chroma's NotFound differs across versions
            raise IndexLoadError(f"The Chroma collection {self.name!r} is missing ({exc}). "
                                 "Rebuild the index.") from None
        count = self._retry(self._collection.count, "a count")
        if count != expected:
            raise IndexLoadError(f"The Chroma collection {self.name!r} holds {count} vectors "
                                 f"for {expected} examples. Rebuild the index.")

    def query(self, vectors: np.ndarray, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        result = self._retry(lambda: self._collection.query(
            query_embeddings=vectors, n_results=n, include=["distances"]), "a query")
        rows = [np.array([int(i) for i in ids], dtype=np.int64) for ids in result["ids"]]
        scores = [1.0 - np.asarray(d, dtype=np.float32) for d in result["distances"]]
        return rows, scores


def _close_quietly(client) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001 - at interpreter exit Chroma may already be torn down
        pass


def _private_alias(location: Path) -> Path:
    """A symbolic link to ``location`` in a fresh temporary directory: a path string that
    no other store uses, so Chroma gives the store a system of its own."""
    alias = Path(tempfile.mkdtemp(prefix="ricl-link-")) / "store"
    alias.symlink_to(Path(location).resolve(), target_is_directory=True)
    return alias


def _release(client, alias: Path | None, staging: Path | None = None) -> None:
    _close_quietly(client)
    for directory in (alias.parent if alias is not None else None, staging):
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _is_connection_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, (ConnectionError, TimeoutError, OSError)) or any(
        word in text for word in ("connect", "unreachable", "timed out", "timeout", "refused"))



class LocalChromaServer:
    """A Chroma server (``chroma run``) on loopback, for tests and benchmarks: started
    with :meth:`start`, stopped with :meth:`stop`, its data under ``path``."""

    def __init__(self, path: Path, port: int | None = None, command: Path | None = None):
        import sys

        self.path = Path(path)
        self.port = port if port is not None else free_port()
        self.command = command or Path(sys.executable).parent / "chroma"
        self.process = None

    @property
    def url(self) -> str:
        return f"chroma://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> LocalChromaServer:
        import socket
        import subprocess
        import time

        if not self.command.exists():
            raise FileNotFoundError(f"{self.command} is not installed (it comes with chromadb).")
        self.process = subprocess.Popen(
            [str(self.command), "run", "--path", str(self.path), "--host", "127.0.0.1",
             "--port", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the Chroma server did not start within {timeout:g} s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
