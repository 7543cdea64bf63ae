"""What a suite is: its records, the files behind it, and how they are split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ricl.data import Corpus
from ricl.errors import ConfigError

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
