"""Text no tokenizer can take is stopped at the door with a typed error that says where.

A lone surrogate ("\\ud800") is a valid Python string character but has no UTF-8
encoding; it used to surface as a TypeError from inside the tokenizers library.
Also: loading a regular file as an index is an IndexLoadError like any broken index.
"""

from __future__ import annotations

import json

import pytest

import ricl
from ricl.errors import ConfigError, CorpusError, IndexLoadError
from ricl.text import check_text

BAD = "bad \ud800 text"  # the surrogate is character 4


def _records(**bad_fields):
    records = [{"id": f"r{i}", "text": f"question {i} about cats", "label": "cat"} for i in range(4)]
    records[2].update(bad_fields)
    return records


@pytest.mark.parametrize("field, where", [
    ("text", "record 2: input field 'text'"),
    ("label", "record 2: output field 'label'"),
    ("id", "record 2: id"),
    ("source", "record 2: field 'source'"),  # kept as meta, saved with the index
])
def test_a_record_with_a_lone_surrogate_is_a_corpus_error_naming_record_field_and_position(
        field, where):
    with pytest.raises(CorpusError) as caught:
        ricl.Corpus.from_records(_records(**{field: BAD}), input="text", output="label")
    message = str(caught.value)
    assert message.startswith(where)
    assert "U+D800 at character 4" in message and "UTF-8" in message


def test_label_words_with_a_lone_surrogate_are_refused_before_any_scoring():
    with pytest.raises(CorpusError, match=r"labels\[1\] holds a lone surrogate U\+DFFF at character 0"):
        ricl.Corpus.from_records([{"text": "a", "label": 0}], input="text", output="label",
                                 labels=["cat", "\udfff"])


def test_a_jsonl_escape_that_decodes_to_a_lone_surrogate_names_the_file_and_record(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps({"text": "fine", "label": "a"}) + "\n"
                    + '{"text": "broken \\ud83d emoji", "label": "a"}\n')
    with pytest.raises(CorpusError, match=rf"{path.name}: record 1: input field 'text' holds a "
                                          "lone surrogate U\\+D83D at character 7"):
        ricl.Corpus.from_jsonl(path, input="text", output="label")


def test_a_csv_with_an_encoded_surrogate_is_not_valid_utf8(tmp_path):
    path = tmp_path / "pool.csv"
    path.write_bytes(b"text,label\nbad \xed\xa0\x80 text,a\n")
    with pytest.raises(CorpusError, match="not valid UTF-8"):
        ricl.Corpus.from_csv(path, input="text", output="label")


@pytest.fixture(scope="module")
def builder():
    corpus = ricl.Corpus.from_records(_records(), input="text", output="label")
    return ricl.PromptBuilder(corpus, retriever="bm25", k=2)


def test_a_query_with_a_lone_surrogate_is_a_config_error_naming_query_and_position(builder):
    with pytest.raises(ConfigError, match=r"query 1: field 'text' holds a lone surrogate U\+D800 "
                                          "at character 4"):
        builder.build_many(["a fine question", BAD])
    with pytest.raises(ConfigError, match="query 0: field 'text'"):
        builder.build({"text": BAD})


def test_a_document_with_a_lone_surrogate_is_a_config_error_naming_it(builder):
    with pytest.raises(ConfigError, match=r"document 1 of query 0 holds a lone surrogate"):
        builder.build("a fine question", documents=["a fine page", BAD])
    with pytest.raises(ConfigError, match=r"document 0 of query 0 holds"):
        builder.build("a fine question", documents=[(BAD, 1.0)])


def test_a_retriever_searched_directly_checks_its_queries(builder):
    with pytest.raises(ConfigError, match=r"query 0 holds a lone surrogate U\+D800 at character 4"):
        ricl.BM25Retriever().index(builder.corpus).search([BAD], n=2)


def test_check_text_passes_any_encodable_text_through_unchanged():
    text = "مرحبا 😀 Ham\u200blet \x00 \ufffd"
    assert check_text(text, "query 0") is text


def test_loading_a_regular_file_as_an_index_is_an_index_load_error(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an index")
    with pytest.raises(IndexLoadError, match="notes.txt is a file, not a saved PromptBuilder"):
        ricl.PromptBuilder.load(notes)
    with pytest.raises(IndexLoadError, match="notes.txt is a file, not a saved ricl index"):
        ricl.load_retriever(notes)
    for retriever in (ricl.BM25Retriever, ricl.DenseRetriever):
        with pytest.raises(IndexLoadError, match="no retriever.json"):
            retriever.load(notes)
    assert notes.read_text() == "not an index"


def test_label_words_given_straight_to_an_lm_are_checked_before_any_request():
    lm = ricl.OpenAICompletionsLM("http://127.0.0.1:9/v1", retry_delays=())  # nothing listens
    with pytest.raises(ConfigError, match=r"choices\[1\].*U\+D800"):
        lm.score_choices(["Review: fine\nSentiment:"], [" positive", " bad \ud800"])
