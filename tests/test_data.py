import json
import math

import pytest

import ricl
from ricl.errors import CorpusError, TemplateError
from ricl.template import Template

RECORDS = [
    {"text": "a gripping, beautifully shot film", "label": "positive"},
    {"text": "a tedious mess", "label": "negative"},
]


def test_from_records_builds_examples_with_stable_content_ids():
    first = ricl.Corpus.from_records(RECORDS, input="text", output="label")
    again = ricl.Corpus.from_records(list(reversed(RECORDS)), input="text", output="label")
    assert len(first) == 2
    assert first[0].inputs == {"text": "a gripping, beautifully shot film"}
    assert first[0].output == "positive"
    assert {e.id for e in first} == {e.id for e in again}  # ids follow content, not position
    assert first.row_of(first[1].id) == 1


def test_given_ids_are_kept_and_integer_labels_map_to_words():
    records = [{"id": 7, "text": "great", "y": 1}, {"id": "b", "text": "awful", "y": 0}]
    corpus = ricl.Corpus.from_records(records, input="text", output="y",
                                      labels=["negative", "positive"])
    assert [e.id for e in corpus] == ["7", "b"]
    assert [e.output for e in corpus] == ["positive", "negative"]


def test_multiple_input_fields_are_kept_in_order():
    records = [{"premise": "It rains.", "hypothesis": "It is wet.", "label": "yes"}]
    corpus = ricl.Corpus.from_records(records, input=["premise", "hypothesis"], output="label")
    assert corpus[0].text == "It rains.\nIt is wet."


@pytest.mark.parametrize("records, kwargs, fragment", [
    ([], {}, "empty"),
    ([{"txt": "x", "label": "a"}], {}, "no input field 'text'"),
    ([{"text": "x"}], {}, "no output field 'label'"),
    ([{"text": 3, "label": "a"}], {}, "not a string"),
    ([{"text": "   ", "label": "a"}], {}, "is empty"),
    ([{"text": "x", "label": None}], {}, "missing"),
    ([{"text": "x", "label": math.nan}], {}, "missing"),
    ([{"text": "x", "label": 1}], {}, "labels=[...]"),
    ([{"text": "x", "label": 5}], {"labels": ["a", "b"]}, "outside labels"),
    ([{"text": "x", "label": "c"}], {"labels": ["a", "b"]}, "not one of labels"),
    ([{"id": "1", "text": "x", "label": "a"}, {"id": "1", "text": "y", "label": "b"}], {}, "Duplicate id"),
    (["just a string"], {}, "not a dict"),
])
def test_bad_records_raise_a_typed_error_that_says_what_to_fix(records, kwargs, fragment):
    with pytest.raises(CorpusError, match=None) as caught:
        ricl.Corpus.from_records(records, input="text", output="label", **kwargs)
    assert fragment in str(caught.value)


def test_jsonl_and_csv_loaders(tmp_path):
    jsonl = tmp_path / "demos.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    csv_path = tmp_path / "demos.csv"
    csv_path.write_text('text,label\n"a gripping, beautifully shot film",1\na tedious mess,0\n')
    from_jsonl = ricl.Corpus.from_jsonl(jsonl, input="text", output="label")
    from_csv = ricl.Corpus.from_csv(csv_path, input="text", output="label",
                                    labels=["negative", "positive"])
    assert [e.output for e in from_jsonl] == [e.output for e in from_csv] == ["positive", "negative"]
    assert [e.id for e in from_jsonl] == [e.id for e in from_csv]


def test_file_errors_name_the_line_and_the_fix(tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "ok", "label": "a"}\n{"text": \n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2 is not valid JSON"):
        ricl.Corpus.from_jsonl(bad_json, input="text", output="label")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,label\nfine,a\ntoo,many,cells\n")
    with pytest.raises(CorpusError, match=r"ragged.csv:3 has 3 cells"):
        ricl.Corpus.from_csv(ragged, input="text", output="label")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    with pytest.raises(CorpusError, match="not valid UTF-8"):
        ricl.Corpus.from_csv(latin1, input="text", output="label")
    with pytest.raises(CorpusError, match="does not exist"):
        ricl.Corpus.from_jsonl(tmp_path / "missing.jsonl")


def test_template_renders_demos_and_stops_the_query_at_the_answer_slot():
    template = Template("Review: {input}\nSentiment: {output}")
    fields = {"input": "fine film", "output": "positive"}
    assert template.render_demo(fields) == "Review: fine film\nSentiment: positive"
    assert template.render_query(fields) == "Review: fine film\nSentiment:"
    assert template.answer_prefix == " "


@pytest.mark.parametrize("text, fragment", [
    ("Review: {input}", "no {output} slot"),
    ("{output} is the answer to {input}", "must come last"),
    ("Review: {input\nSentiment: {output}", "not a valid format string"),
    ("Review: {}\nSentiment: {output}", "unnamed"),
])
def test_bad_templates_raise_template_error(text, fragment):
    with pytest.raises(TemplateError) as caught:
        Template(text)
    assert fragment in str(caught.value)


def test_texts_with_unicode_line_separators_survive_files(tmp_path):
    """MR reviews hold U+0085 and TriviaQA U+2028: JSON keeps them raw, so reading a
    JSONL or CSV file must not split lines there."""
    texts = ["it\x85s a mess", "one\u2028two", "para\u2029graph", "plain"]
    corpus = ricl.Corpus.from_records([{"text": t, "label": i % 2} for i, t in enumerate(texts)],
                                      input="text", output="label", labels=["neg", "pos"])
    corpus.to_jsonl(tmp_path / "saved.jsonl")
    assert [e.text for e in ricl.Corpus.read_saved(tmp_path / "saved.jsonl")] == texts
    (tmp_path / "data.jsonl").write_text(
        "".join(json.dumps({"text": t, "label": "pos"}, ensure_ascii=False) + "\n" for t in texts),
        encoding="utf-8")
    assert [e.text for e in ricl.Corpus.from_jsonl(tmp_path / "data.jsonl", input="text",
                                                   output="label")] == texts
    (tmp_path / "data.csv").write_text("text,label\n" + "".join(f'"{t}",pos\n' for t in texts),
                                       encoding="utf-8")
    assert [e.text for e in ricl.Corpus.from_csv(tmp_path / "data.csv", input="text",
                                                 output="label")] == texts
