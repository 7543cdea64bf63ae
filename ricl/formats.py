"""How a prompt is laid out: plain text, or chat messages in the target model's own
chat template.

Both formats answer the same three questions for the builder: the text of one
demonstration (its tokens are counted once and cached), the fixed part around the
query (instructions, documents, the query itself), and the whole prompt for a list
of placed demonstrations. The builder's budget loop is the same for both.

Chat follows LangChain's ``FewShotChatMessagePromptTemplate``: each demonstration is
a user turn (the rendered input, up to the answer slot) and an assistant turn (the
answer); instructions and supporting documents form the system turn; the query is
the last user turn. The text is ``apply_chat_template(messages,
add_generation_prompt=True)``, so label scoring continues inside the assistant turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ricl.errors import ConfigError
from ricl.template import Template

FORMATS = ("text", "chat")

Fields = Mapping[str, str]
Message = dict[str, str]


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise ConfigError(f"format={name!r} is unknown; choose one of {FORMATS}.")
    return name


class TextFormat:
    """Instructions, documents, demonstrations and the query joined by the template's
    separator."""

    name = "text"

    def __init__(self, template: Template):
        self.template = template

    @property
    def answer_prefix(self) -> str:
        return self.template.answer_prefix or " "

    def demo(self, fields: Fields) -> str:
        return self.template.render_demo(fields)

    def fixed(self, query: Fields, count) -> tuple[int, int]:
        """(tokens of everything but the demos, tokens each demo adds beyond its own)."""
        separator, instructions = count([self.template.separator, self.template.instructions or " "])
        query_tokens = count([self.template.render_query(query)])[0]
        if self.template.instructions:
            query_tokens += instructions + separator
        return query_tokens, separator

    def compose(self, demos: Sequence[Fields], query: Fields,
                documents: str = "") -> tuple[str, tuple[Message, ...]]:
        text = self.template.join([self.demo(d) for d in demos], self.template.render_query(query),
                                  documents=documents)
        return text, ()


class ChatFormat:
    """Demonstrations as user/assistant turns, in the tokenizer's chat template."""

    name = "chat"

    def __init__(self, template: Template, tokenizer: Any):
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ConfigError("format='chat' needs a tokenizer with a chat template (an "
                              "instruction-tuned model's); this one has none. Use "
                              "format='text', or pass the chat model's tokenizer or LM.")
        self.template, self.tokenizer = template, tokenizer

    @property
    def answer_prefix(self) -> str:
        return ""  # the assistant turn is open: the answer is its first text

    def messages(self, demos: Sequence[Fields], query: Fields,
                 documents: str = "") -> tuple[Message, ...]:
        system = "\n\n".join(part for part in (self.template.instructions, documents) if part)
        out: list[Message] = [{"role": "system", "content": system}] if system else []
        for fields in demos:
            out += self._turns(fields)
        out.append({"role": "user", "content": self.template.render_query(query)})
        return tuple(out)

    def _turns(self, fields: Fields) -> list[Message]:
        answer = fields[self.template.output_slot]
        return [{"role": "user", "content": self.template.render_query(fields)},
                {"role": "assistant", "content": answer}]

    def render(self, messages: Sequence[Message], generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def demo(self, fields: Fields) -> str:
        """A demonstration's two turns as the template renders them inside a conversation
        (the difference between a conversation with and without them)."""
        system = [{"role": "system", "content": "-"}]  # keeps templates from adding a default
        head = self.render(system, generation_prompt=False)
        whole = self.render(system + self._turns(fields), generation_prompt=False)
        return whole[len(head):] if whole.startswith(head) else whole

    def fixed(self, query: Fields, count) -> tuple[int, int]:
        return count([self.compose([], query)[0]])[0], 0

    def compose(self, demos: Sequence[Fields], query: Fields,
                documents: str = "") -> tuple[str, tuple[Message, ...]]:
        messages = self.messages(demos, query, documents)
        return self.render(messages), messages
