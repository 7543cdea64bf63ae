"""Dense retrieval with a sentence-transformers bi-encoder.

Vectors are L2-normalised, so a dot product is the cosine. Three backends answer the
same calls: ``exact`` (a numpy matrix product, chunked), ``chroma`` (embedded Chroma,
HNSW, saved inside the index directory) and ``chroma-server`` (a Chroma server at
``chroma://host:port/collection``). The unit vectors are also kept (and saved) as a
numpy array: diversity selectors need candidate-candidate similarities.

A change (``add``, ``update``, ``remove``; see ``ricl.changes``) embeds only its fresh
examples: the exact index splices their rows into the matrix; Chroma upserts and deletes
them by id. Chroma ids are stable slots, not rows (a removal shifts every row after it):
``slots[row]`` is the row's id in the collection, saved as ``slots.npy`` once an index
has changed (absent: the ids are the rows).
"""

from __future__ import annotations

import logging
import os
import shutil
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrievers.base import RETRIEVER_KIND, RetrieverBase, damaged_index_is_a_load_error, read_card
from retrievers.chroma_store import ChromaStore, ServerAddress
from ricl.changes import CorpusChange
from ricl.data import Corpus
from ricl.errors import ConfigError, IndexLoadError
from ricl.io import atomic_dir

log = logging.getLogger(__name__)

BACKENDS = ("exact", "chroma", "chroma-server")
_COLLECTION = "ricl-demos"
_QUERY_CHUNK = 256


class DenseRetriever(RetrieverBase):
    """Bi-encoder retrieval. ``model``: None (the packaged MiniLM), a local
    sentence-transformers directory (e.g. one trained by ``training``), or a
    loaded ``SentenceTransformer``.

    Queries may carry an instruction, through sentence-transformers' own prompts:
    ``query_prompt_name`` names one of the model's saved ``prompts`` (a multi-task
    retriever trained by ``training.train_multitask`` saves one per training task),
    ``query_prompt`` gives the text itself (a task it never saw; ``""`` for none).
    With neither, the model's ``"query"`` prompt applies if it has one; a model that
    saved task prompts but no ``"query"`` one refuses to guess which task this is.
    Demonstrations are always encoded without a prompt.
    """

    kind = "dense"

    def __init__(self, model: Any = None, backend: str = "exact", batch_size: int = 64,
                 show_progress: bool | None = None, server: str | None = None,
                 device: Any = "auto", query_prompt_name: str | None = None,
                 query_prompt: str | None = None):
        super().__init__()
        if query_prompt_name is not None and query_prompt is not None:
            raise ConfigError("Give a query prompt by name (query_prompt_name) or as text "
                              "(query_prompt), not both.")
        self.query_prompt_name, self.query_prompt = query_prompt_name, query_prompt
        from ricl.devices import resolve_device

        self.device = resolve_device(device)  # the embedder's; vectors come back as numpy
        if backend not in BACKENDS:
            raise ConfigError(f"Dense backend {backend!r} is unknown; choose one of {BACKENDS}.")
        if batch_size <= 0:
            raise ConfigError(f"batch_size={batch_size}: must be a positive integer.")
        if (backend == "chroma-server") != (server is not None):
            raise ConfigError("A Chroma server needs both backend='chroma-server' and "
                              "server='chroma://HOST:PORT/COLLECTION' (or pass the URL as retriever).")
        self.server = ServerAddress.parse(server) if server is not None else None
        self.model_spec = model
        self.backend = backend
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._encoder = None
        self.embeddings: np.ndarray | VectorFile | EditedVectors | None = None
        self._store: ChromaStore | None = None
        self._slots: np.ndarray | None = None  # row -> Chroma id once changed (None: the row)
        self._row_of_slot: np.ndarray | None = None  # and back (-1: no row)

    # -- encoding ---------------------------------------------------------------------------
    @property
    def encoder(self):
        if self._encoder is None:
            from ricl.models import load_embedder

            self._encoder = load_embedder(self.model_spec, self.device)
        return self._encoder

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        vectors = self.encoder.encode(list(texts), batch_size=self.batch_size,
                                      normalize_embeddings=True, convert_to_numpy=True,
                                      show_progress_bar=progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of queries, each with the query instruction before it (if any)."""
        vectors = self.encoder.encode(list(texts), prompt=self.query_instruction(),
                                      batch_size=self.batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def query_instruction(self) -> str | None:
        """The text put before every query (see the class docstring); None: the model's
        own default, sentence-transformers' ``default_prompt_name`` if it has one."""
        if self.query_prompt is not None:
            return self.query_prompt
        prompts = dict(getattr(self.encoder, "prompts", None) or {})
        if self.query_prompt_name is not None:
            if self.query_prompt_name not in prompts:
                raise ConfigError(f"query_prompt_name={self.query_prompt_name!r}: the model "
                                  f"{self.model_spec} has the prompts {sorted(prompts) or 'none'}. "
                                  "Name one of them, or give the text as query_prompt.")
            return prompts[self.query_prompt_name]
        if prompts.get("query"):  # sentence-transformers gives every model "query": "" otherwise
            return prompts["query"]
        tasks = sorted(name for name, text in prompts.items() if text and name != "document")
        if tasks:
            raise ConfigError(
                f"The model {self.model_spec} was trained with task instructions ({', '.join(tasks)}); "
                "say which applies to this corpus: DenseRetriever(model, query_prompt_name=NAME) "
                "(PromptBuilder: retriever_options={'query_prompt_name': NAME}), or an instruction "
                "of your own for a new task with query_prompt='...' ('' for none).")
        return None

    def token_embeddings(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Unit-normalised contextual token vectors per text, without [CLS]/[SEP].

        Used by the coverage selector (BERTScore-recall, Zhang et al. 2020).
        """
        outputs = self.encoder.encode(list(texts), batch_size=self.batch_size,
                                      output_value="token_embeddings", convert_to_numpy=False,
                                      show_progress_bar=False)
        result = []
        for tokens in outputs:
            tokens = tokens.float().cpu().numpy()
            tokens = tokens[1:-1] if len(tokens) > 2 else tokens
            norms = np.linalg.norm(tokens, axis=1, keepdims=True)
            result.append(tokens / np.maximum(norms, 1e-12))
        return result

    # -- index --------------------------------------------------------------------------------
    def index(self, corpus: Corpus, embeddings: np.ndarray | None = None) -> DenseRetriever:
        """Embed the corpus (or take precomputed unit ``embeddings``) and build the backend."""
        if not isinstance(corpus, Corpus):
            self._set_corpus(corpus)  # raises the usual error
        if embeddings is None:
            progress = self.show_progress if self.show_progress is not None else len(corpus) > 2000
            embeddings = self.encode(corpus.texts(), progress=progress)
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.shape[0] != len(corpus):
            raise ConfigError(f"{embeddings.shape[0]} embeddings for {len(corpus)} examples.")
        with self._rw.write():
            self._set_corpus(corpus)
            self.embeddings = embeddings
            self._set_slots(None)
            if self.backend != "exact":
                self._replace_store(ChromaStore(self.server) if self.server
                                    else ChromaStore.staging())
                self._store.replace(embeddings)
        return self

    # -- changes ------------------------------------------------------------------------------
    def stage(self, change: CorpusChange) -> np.ndarray:
        """The fresh examples' unit vectors (the only embedding a change needs)."""
        texts = super().stage(change)
        if not texts:
            return np.zeros((0, self.embeddings.shape[1]), dtype=np.float32)
        return self.encode(texts)

    def _apply(self, change: CorpusChange, staged: np.ndarray) -> None:
        fresh = np.ascontiguousarray(staged, dtype=np.float32)
        if fresh.shape != (len(change.fresh), self.embeddings.shape[1]):
            raise ConfigError(f"{fresh.shape[0]} staged vectors of width {fresh.shape[1:]} for "
                              f"{len(change.fresh)} fresh examples; stage the change again.")
        if self._store is not None:
            self._set_slots(self._change_store(change, fresh))
        self.embeddings = edit_rows(self.embeddings, change, fresh)

    def _set_slots(self, slots: np.ndarray | None) -> None:
        self._slots, self._row_of_slot = slots, None
        if slots is not None:
            self._row_of_slot = np.full(int(slots.max()) + 1 if len(slots) else 0, -1,
                                        dtype=np.int64)
            self._row_of_slot[slots] = np.arange(len(slots))

    def _change_store(self, change: CorpusChange, fresh: np.ndarray) -> np.ndarray:
        """Upsert the fresh vectors and delete the removed ones; return the new slots.

        Upserts first: a failure part-way leaves the old rows answering, and the same
        change, tried again, writes the same slots (an updated example keeps its slot,
        added ones take the next free numbers)."""
        if self._store.is_local and not self._store.is_staging:
            # Serving from a saved directory: change a private copy, never the saved files.
            self._replace_store(self._store.private_copy(len(self.embeddings)))
        slots = self._slots if self._slots is not None else np.arange(len(change.old),
                                                                      dtype=np.int64)
        fresh_slots = slots[np.maximum(change.origin[change.fresh], 0)]
        added = change.origin[change.fresh] < 0
        first = int(slots.max()) + 1
        fresh_slots[added] = first + np.arange(int(added.sum()), dtype=np.int64)
        new_slots = np.concatenate([slots, fresh_slots])[change.gather]
        self._store.upsert(fresh_slots, fresh)
        self._store.delete(slots[change.removed])
        return new_slots

    def _rows_of(self, slot_lists: list[np.ndarray], score_lists: list[np.ndarray]):
        """Chroma ids to corpus rows (ids the index does not hold are left out)."""
        if self._slots is None:
            return slot_lists, score_lists
        row_of = self._row_of_slot
        rows, scores = [], []
        for ids, values in zip(slot_lists, score_lists):
            mapped = np.where(ids < len(row_of), row_of[np.minimum(ids, len(row_of) - 1)], -1)
            rows.append(mapped[mapped >= 0])
            scores.append(values[mapped >= 0])
        return rows, scores

    def _replace_store(self, store: ChromaStore | None) -> None:
        old, self._store = self._store, store
        if old is not None and old is not store:
            old.close()

    # -- search -------------------------------------------------------------------------------
    def _top(self, queries: list[str], fetch: int, query_vectors: np.ndarray | None = None):
        if query_vectors is None:
            query_vectors = self.encode_queries(queries)
        if self._store is not None:
            return self._rows_of(*self._store.query(query_vectors, fetch))
        return self._search_exact(query_vectors, fetch)

    def _search_exact(self, query_vectors: np.ndarray, fetch: int):
        rows, scores = [], []
        for start in range(0, len(query_vectors), _QUERY_CHUNK):
            sims = query_vectors[start:start + _QUERY_CHUNK] @ self.embeddings.T
            if fetch < sims.shape[1]:
                top = np.argpartition(-sims, fetch - 1, axis=1)[:, :fetch]
            else:
                top = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
            top_sims = np.take_along_axis(sims, top, axis=1)
            order = np.argsort(-top_sims, axis=1, kind="stable")
            rows.extend(np.take_along_axis(top, order, axis=1).astype(np.int64))
            scores.extend(np.take_along_axis(top_sims, order, axis=1))
        return rows, scores

    def score_rows(self, queries: Sequence[str], rows: Sequence[np.ndarray]) -> list[np.ndarray]:
        query_vectors = self.encode_queries(list(queries))
        with self._rw.read():
            self._require_index()
            return [self.embeddings[np.asarray(r, dtype=np.int64)] @ q
                    for q, r in zip(query_vectors, rows)]

    def features(self, rows: np.ndarray) -> np.ndarray:
        """Unit embeddings of the given corpus rows."""
        with self._rw.read():
            self._require_index()
            return self.embeddings[np.asarray(rows, dtype=np.int64)]

    def kernel(self, rows: np.ndarray) -> np.ndarray:
        block = self.features(rows).astype(np.float64)
        return block @ block.T

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Write the index to ``path``: new, an empty directory, or a retriever saved
        before (replaced, also where this one was loaded from). ``overwrite=True`` also
        replaces another kind of ricl output; a user's file or directory is never
        replaced (``ricl.errors.OverwriteError``)."""
        with self._rw.write():  # the saved copy of an embedded store becomes the one served
            self._save(path, overwrite)

    def _save(self, path: str | Path, overwrite: bool) -> None:
        self._require_index()
        target = (Path(path) / "chroma").resolve()
        released = False
        try:
            with atomic_dir(path, RETRIEVER_KIND, overwrite=overwrite) as tmp:
                write_vectors(self.embeddings, tmp / "embeddings.npy")
                if self._slots is not None:
                    np.save(tmp / "slots.npy", self._slots)
                model = self._model_card(tmp)
                if self.backend == "chroma":
                    # Copy the built store's files (no second HNSW build).
                    self._store.copy_to(tmp / "chroma")
                self._write_card(tmp, {"model": model, "backend": self.backend,
                                       "dim": int(self.embeddings.shape[1]),
                                       "server": self.server.url if self.server else None,
                                       "query_prompt_name": self.query_prompt_name,
                                       "query_prompt": self.query_prompt})
                if self.backend == "chroma" and self._store.location == target:
                    # Re-saving where it was loaded from: release the old files before
                    # the swap, so that no open handle outlives them.
                    self._store.close()
                    released = True
        except BaseException:
            if released:  # the swap failed: the old files are still there; serve them again
                self._replace_store(self._open_store(target))
            raise
        if self.backend == "chroma":  # serve from the saved copy
            # Release the staging copy first: both open at once hold two HNSW graphs.
            self._replace_store(None)
            self._replace_store(self._open_store(target))
        if self.backend != "exact":  # as after load(): read the saved vectors, drop the array
            self.embeddings = VectorFile(Path(path) / "embeddings.npy")

    def _open_store(self, location: Path | ServerAddress) -> ChromaStore:
        store = ChromaStore(location)
        store.open_existing(len(self.embeddings))
        return store

    def _model_card(self, tmp: Path) -> str | None:
        spec = self.model_spec
        if spec is None:
            return None
        if isinstance(spec, (str, Path)):
            return str(Path(spec).resolve())
        self.encoder.save(str(tmp / "model"))
        return "model"

    @classmethod
    @damaged_index_is_a_load_error
    def load(cls, path: str | Path) -> DenseRetriever:
        path = Path(path)
        card, corpus = read_card(path)
        model = card["model"]
        if model == "model":
            model = str(path / "model")
        retriever = cls(model=model, backend=card["backend"], server=card.get("server"),
                        query_prompt_name=card.get("query_prompt_name"),
                        query_prompt=card.get("query_prompt"))
        # Behind Chroma the vectors are read only for the few candidates a diversity
        # selector compares, so read those rows from the file instead of holding a
        # second copy in memory (save() does the same).
        try:
            if card["backend"] == "exact":
                embeddings = np.load(path / "embeddings.npy")
            else:
                embeddings = VectorFile(path / "embeddings.npy")
        except (OSError, ValueError) as exc:
            raise IndexLoadError(f"The dense index at {path} is corrupted ({exc}). "
                                 "Rebuild it with index() + save().") from None
        if embeddings.shape != (len(corpus), card["dim"]):
            raise IndexLoadError(f"The dense index at {path} holds {embeddings.shape} embeddings "
                                 f"for {len(corpus)} examples. Rebuild it.")
        retriever._set_corpus(corpus)
        retriever.embeddings = embeddings
        if (path / "slots.npy").is_file():
            slots = np.load(path / "slots.npy")
            if slots.shape != (len(corpus),) or slots.dtype.kind != "i" \
                    or len(np.unique(slots)) != len(slots) or (len(slots) and slots.min() < 0):
                raise IndexLoadError(f"The Chroma ids saved at {path}/slots.npy do not fit its "
                                     f"{len(corpus)} examples. Rebuild the index.")
            retriever._set_slots(slots.astype(np.int64))
        if retriever.backend == "chroma":
            if not (path / "chroma").is_dir():
                raise IndexLoadError(f"The Chroma store under {path}/chroma is missing. Rebuild it.")
            retriever._store = retriever._open_store((path / "chroma").resolve())
        elif retriever.backend == "chroma-server":
            retriever._store = retriever._open_store(retriever.server)
        return retriever


class VectorFile:
    """The rows of a saved ``.npy`` float32 matrix, read on demand with ``pread``.

    Behind Chroma only the few candidates a diversity selector compares are ever read.
    A memory map would do that too, but every page fault maps the neighbouring cached
    pages in as well, so after a few thousand queries the whole file (1.5 GB at a
    million demos) counts as the process's resident memory. ``pread`` leaves the file
    to the page cache, and is safe from many threads.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran_order, dtype = read_header(handle)
            self._offset = handle.tell()
        if len(shape) != 2 or fortran_order or dtype != np.float32:
            raise ValueError(f"expected a C-ordered 2-d float32 array, found {dtype} {shape}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(np.float32)
        self._row_bytes = self.shape[1] * 4
        expected = self._offset + self.shape[0] * self._row_bytes
        if self.path.stat().st_size != expected:
            raise ValueError(f"the file holds {self.path.stat().st_size} bytes where its header "
                             f"promises {expected}: it is truncated or damaged")
        self._fd = os.open(self.path, os.O_RDONLY)
        weakref.finalize(self, os.close, self._fd)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Any) -> np.ndarray:
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        if rows.size and (rows.min() < -self.shape[0] or rows.max() >= self.shape[0]):
            raise IndexError(f"row out of range for {self.shape[0]} vectors")
        out = np.empty((len(rows), self.shape[1]), dtype=np.float32)
        for i, row in enumerate(rows % self.shape[0]):
            data = os.pread(self._fd, self._row_bytes, self._offset + int(row) * self._row_bytes)
            out[i] = np.frombuffer(data, dtype=np.float32)
        return out


class EditedVectors:
    """A saved matrix's rows after changes, without reading the file whole: row ``i`` is
    row ``source[i]`` of ``base`` when ``source[i] >= 0``, else row ``-1 - source[i]``
    of ``extra`` (the vectors that changes brought). Saving writes it out as one matrix."""

    def __init__(self, base: VectorFile, source: np.ndarray, extra: np.ndarray):
        self.base, self.source, self.extra = base, source, extra
        self.shape = (len(source), base.shape[1])
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Any) -> np.ndarray:
        source = self.source[np.atleast_1d(np.asarray(rows, dtype=np.int64))]
        out = np.empty((len(source), self.shape[1]), dtype=np.float32)
        saved = source >= 0
        if saved.any():
            out[saved] = self.base[source[saved]]
        out[~saved] = self.extra[-1 - source[~saved]]
        return out


def edit_rows(vectors: Any, change: CorpusChange, fresh: np.ndarray) -> Any:
    """``vectors`` (one row per example of ``change.old``) for ``change.new``: unchanged
    rows kept, ``fresh`` rows spliced in where ``change`` puts them."""
    if isinstance(vectors, np.ndarray):
        if not len(fresh):  # removals only
            return np.ascontiguousarray(vectors[change.gather])
        stacked = np.concatenate([vectors, fresh])
        return stacked if change.is_append else np.ascontiguousarray(stacked[change.gather])
    if isinstance(vectors, VectorFile):
        vectors = EditedVectors(vectors, np.arange(len(vectors), dtype=np.int64),
                                np.zeros((0, vectors.shape[1]), dtype=np.float32))
    new_sources = -1 - (len(vectors.extra) + np.arange(len(fresh), dtype=np.int64))
    source = np.concatenate([vectors.source, new_sources])[change.gather]
    extra = np.concatenate([vectors.extra, fresh])
    used = source[source < 0]
    if len(extra) > 2 * len(used) + 1024:  # mostly vectors of changed or removed rows
        keep = np.unique(-1 - used)
        position = np.full(len(extra), -1, dtype=np.int64)
        position[keep] = np.arange(len(keep))
        source = np.where(source < 0, -1 - position[np.maximum(-1 - source, 0)], source)
        extra = extra[keep]
    return EditedVectors(vectors.base, source, extra)


def write_vectors(vectors: Any, path: Path, block: int = 65_536) -> None:
    """Save a matrix of unit vectors as ``.npy``: a saved file is copied and an edited
    one streamed block by block, so neither is ever read whole."""
    if isinstance(vectors, VectorFile):
        shutil.copyfile(vectors.path, path)
        return
    if isinstance(vectors, np.ndarray):
        np.save(path, vectors)
        return
    with open(path, "wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                  "fortran_order": False, "shape": tuple(vectors.shape)}
        np.lib.format.write_array_header_1_0(handle, header)
        for start in range(0, len(vectors), block):
            handle.write(vectors[np.arange(start, min(start + block, len(vectors)))].tobytes())
