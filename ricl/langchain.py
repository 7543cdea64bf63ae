"""ricl as a LangChain example selector.

``ExampleSelector`` answers langchain-core's ``BaseExampleSelector`` over a
:class:`ricl.PromptBuilder`: ricl's retrieval, selection, order and token budget choose
the examples of a ``FewShotPromptTemplate`` or a ``FewShotChatMessagePromptTemplate``,
and ``add_example`` adds to the builder's index in place (no rebuild). Needs
langchain-core, which ricl itself does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ricl.errors import ConfigError, MissingPackageError

try:
    from langchain_core.example_selectors import BaseExampleSelector
except ImportError as exc:  # a clear error, not a deep one, when LangChain is absent
    raise MissingPackageError("langchain-core", "ricl.langchain (the LangChain example "
                              "selector)", "langchain-core==1.8.1") from exc


class ExampleSelector(BaseExampleSelector):
    """Examples for a LangChain few-shot template, chosen by a ricl ``PromptBuilder``.

    >>> selector = ExampleSelector(builder)
    >>> FewShotPromptTemplate(example_selector=selector, example_prompt=..., suffix=...,
    ...                       input_variables=["text"])

    ``select_examples(input_variables)`` builds the ricl prompt for the query and returns
    its demonstrations in ricl's order (by default the most similar last, next to the
    query), each a dict of the corpus's fields: its input names and output name. The
    query is read from ``input_variables``: the corpus's input fields when all are
    there, else ``query_key``, else the one variable given. ``add_example(example)``
    adds one demonstration (a dict with those fields, an optional ``id``) and returns
    its id; the next selection sees it. The async forms run these in a thread; a
    builder serves many threads, and each selection sees one version of its corpus.
    """

    def __init__(self, builder: Any, query_key: str | None = None):
        if not hasattr(builder, "build") or not hasattr(builder, "corpus"):
            raise ConfigError(f"ExampleSelector needs a ricl.PromptBuilder, not "
                              f"{type(builder).__name__}.")
        self.builder = builder
        self.query_key = query_key

    def select_examples(self, input_variables: dict[str, str]) -> list[dict[str, Any]]:
        prompt = self.builder.build(self._query(input_variables))
        output = self.builder.corpus.output_name
        return [{**demo.fields, output: demo.output}
                for demo in sorted(prompt.demos, key=lambda d: d.position)]

    def add_example(self, example: dict[str, str]) -> str:
        return self.builder.add([example]).added_ids[0]

    def _query(self, variables: Mapping[str, Any]) -> str | dict[str, Any]:
        if not isinstance(variables, Mapping):
            raise ConfigError(f"select_examples() takes a dict of input variables, not "
                              f"{type(variables).__name__}.")
        names = self.builder.corpus.input_names
        if all(name in variables for name in names):
            return {name: variables[name] for name in names}
        if self.query_key is not None:
            if self.query_key not in variables:
                raise ConfigError(f"input variables {sorted(variables)} lack query_key "
                                  f"{self.query_key!r}.")
            return variables[self.query_key]
        if len(variables) == 1 and len(names) == 1:
            return next(iter(variables.values()))
        raise ConfigError(f"input variables {sorted(variables)} do not name the corpus's input "
                          f"field(s) {list(names)}; use those names, or pass query_key=... to "
                          "ExampleSelector.")
