"""Chat-format prompts: demonstrations as user/assistant turns in the target model's
own chat template, counted and packed like plain ones."""

from __future__ import annotations

import pytest

import ricl
from ricl.errors import ConfigError


@pytest.fixture(scope="module")
def chat_builder(trec_corpus, trec, tokenizer):
    return ricl.PromptBuilder(trec_corpus, retriever="bm25", k=3, template=trec.template,
                              tokenizer=tokenizer, format="chat",
                              instructions="Classify the question by its answer type.")


def test_chat_prompt_is_the_models_own_chat_template_over_the_turns(chat_builder, tokenizer,
                                                                   trec_queries, trec):
    prompt = chat_builder.build(trec_queries[0])
    roles = [m["role"] for m in prompt.messages]
    assert roles == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert prompt.messages[0]["content"] == "Classify the question by its answer type."
    template = ricl.Template(trec.template)
    for demo, (user, assistant) in zip(prompt.demos, zip(prompt.messages[1:-1:2],
                                                         prompt.messages[2:-1:2])):
        assert user["content"] == template.render_query({**demo.fields, "input": demo.fields["text"]})
        assert assistant["content"] == demo.output
    assert prompt.messages[-1]["content"] == template.render_query(
        {"text": trec_queries[0], "input": trec_queries[0]})
    assert prompt.text == tokenizer.apply_chat_template(list(prompt.messages), tokenize=False,
                                                        add_generation_prompt=True)
    assert prompt.answer_prefix == ""  # the label continues the open assistant turn
    assert prompt.token_count == len(tokenizer(prompt.text, add_special_tokens=False)["input_ids"])


def test_chat_prompts_fit_the_budget_of_the_templated_text(trec_corpus, trec, tokenizer,
                                                           trec_queries):
    builder = ricl.PromptBuilder(trec_corpus, retriever="bm25", k=8, template=trec.template,
                                 tokenizer=tokenizer, format="chat", max_tokens=150)
    for prompt in builder.build_many(trec_queries[:5]):
        assert prompt.token_count <= 150
        assert prompt.dropped and len(prompt.demos) + len(prompt.dropped) == 8
        assert prompt.messages[-1]["role"] == "user"


def test_chat_needs_a_tokenizer_with_a_chat_template(trec_corpus):
    from ricl.models import load_embedder

    plain = load_embedder().tokenizer  # a BERT tokenizer: no chat template
    builder = ricl.PromptBuilder(trec_corpus, retriever="bm25", k=2, tokenizer=plain, format="chat")
    with pytest.raises(ConfigError, match="chat template"):
        builder.build("what is the tallest mountain ?")
    with pytest.raises(ConfigError, match="format"):
        ricl.PromptBuilder(trec_corpus, format="html")


def test_chat_format_is_saved_with_the_builder(chat_builder, trec_queries, tmp_path):
    chat_builder.save(tmp_path / "idx")
    loaded = ricl.PromptBuilder.load(tmp_path / "idx")
    assert loaded.format == "chat"
    assert loaded.build(trec_queries[1]).text == chat_builder.build(trec_queries[1]).text


@pytest.mark.lm
def test_a_chat_model_predicts_labels_from_chat_prompts(chat_builder, trec_queries):
    predictions = ricl.Predictor(chat_builder, ricl.TransformersLM()).predict(trec_queries[:3])
    assert all(p.output in chat_builder.labels and p.prompt.messages for p in predictions)


def test_recompose_gives_the_same_text_for_the_same_query_in_both_formats(chat_builder, trec_corpus,
                                                                         trec, tokenizer,
                                                                         trec_queries):
    plain = ricl.PromptBuilder(trec_corpus, retriever="bm25", k=3, template=trec.template,
                               tokenizer=tokenizer)
    for builder in (plain, chat_builder):
        prompt = builder.build(trec_queries[2])
        assert builder.recompose(prompt, {"text": trec_queries[2]}) == prompt.text
        content_free = builder.recompose(prompt, {"text": "N/A"})
        assert "N/A" in content_free and trec_queries[2] not in content_free


@pytest.mark.lm
def test_chat_prompts_can_be_calibrated(chat_builder, trec_queries):
    predictions = ricl.Predictor(chat_builder, ricl.TransformersLM(), calibrate=True).predict(
        trec_queries[:2])
    assert all(p.calibrated in chat_builder.labels for p in predictions)
