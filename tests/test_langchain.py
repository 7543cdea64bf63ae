"""ricl's example selector inside LangChain's few-shot templates, offline."""

import asyncio
import sys

import pytest

import ricl
from ricl.errors import ConfigError, MissingPackageError

pytest.importorskip("langchain_core")

TEMPLATE = "Question: {input}\nAnswer type: {output}"


@pytest.fixture()
def builder(trec, tokenizer):
    corpus = ricl.Corpus.from_records(trec.pool[:300], input="text", output="label",
                                      labels=trec.labels)
    return ricl.PromptBuilder(corpus, retriever="bm25", k=4, template=TEMPLATE,
                              tokenizer=tokenizer)


def test_few_shot_prompt_template_renders_ricls_prompt(builder, trec_queries):
    from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate

    from ricl.langchain import ExampleSelector

    template = FewShotPromptTemplate(
        example_selector=ExampleSelector(builder),
        example_prompt=PromptTemplate.from_template("Question: {text}\nAnswer type: {label}"),
        suffix="Question: {text}\nAnswer type:", input_variables=["text"])
    for query in trec_queries[:5]:
        # same demos, same order, same separator: the same text as ricl's own prompt
        assert template.format(text=query) == builder.build(query).text
    assert asyncio.run(template.aformat(text=trec_queries[0])) == \
        builder.build(trec_queries[0]).text


def test_chat_template_gets_the_demos_as_turns_and_new_examples_at_once(builder, trec_queries):
    from langchain_core.prompts import ChatPromptTemplate, FewShotChatMessagePromptTemplate

    from ricl.langchain import ExampleSelector

    selector = ExampleSelector(builder)
    few_shot = FewShotChatMessagePromptTemplate(
        example_selector=selector, input_variables=["text"],
        example_prompt=ChatPromptTemplate.from_messages([("human", "{text}"), ("ai", "{label}")]))
    chat = ChatPromptTemplate.from_messages([("system", "Classify the question."), few_shot,
                                             ("human", "{text}")])
    query = "Which river flows through the old town of Heidelberg ?"
    messages = chat.format_messages(text=query)
    demos = builder.build(query).demos
    assert [m.type for m in messages] == ["system"] + ["human", "ai"] * len(demos) + ["human"]
    assert [m.content for m in messages[1:-1:2]] == [d.fields["text"] for d in demos]
    assert [m.content for m in messages[2:-1:2]] == [d.output for d in demos]

    new_id = selector.add_example({"text": "Which river flows through Heidelberg ?",
                                   "label": "location"})
    assert builder.corpus.has_id(new_id)
    messages = chat.format_messages(text=query)
    assert messages[-3].content == "Which river flows through Heidelberg ?"  # most similar last
    assert messages[-2].content == "location"
    other = asyncio.run(selector.aadd_example({"id": "fix-2", "text": "Where is the Neckar ?",
                                               "label": "location"}))
    assert other == "fix-2"
    picked = asyncio.run(selector.aselect_examples({"text": "Where does the Neckar river flow ?"}))
    assert {"text": "Where is the Neckar ?", "label": "location"} in picked


def test_misuse_and_a_missing_langchain_are_clear_errors(builder, monkeypatch):
    from ricl.langchain import ExampleSelector

    with pytest.raises(ConfigError, match="query_key"):
        ExampleSelector(builder).select_examples({"question": "a", "other": "b"})
    assert ExampleSelector(builder, query_key="q").select_examples({"q": "Where is Paris ?",
                                                                    "x": "y"})
    with pytest.raises(ConfigError, match="PromptBuilder"):
        ExampleSelector(object())
    monkeypatch.setitem(sys.modules, "langchain_core.example_selectors", None)
    monkeypatch.delitem(sys.modules, "ricl.langchain")
    with pytest.raises(MissingPackageError, match="pip install langchain-core"):
        import ricl.langchain  # noqa: F401
