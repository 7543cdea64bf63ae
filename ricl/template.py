"""How an example is rendered as a demonstration, and how the query is rendered."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

from ricl.errors import TemplateError
from ricl.text import check_text


@dataclass(frozen=True)
class Template:
    """A format string with one answer slot.

    ``"Review: {input}\\nSentiment: {output}"`` renders a demonstration by filling
    every slot; the query is rendered up to the answer slot (``"...Sentiment:"``),
    so the model continues with ``" " + answer``. Slots may name any input field,
    ``input`` (all input fields joined) and ``output`` (or the corpus's output name).
    """

    text: str
    output_slot: str = "output"
    separator: str = "\n\n"
    instructions: str = ""

    def __post_init__(self):
        for name in ("text", "output_slot", "separator", "instructions"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TemplateError(f"Template {name} must be a string, not {type(value).__name__}.")
            check_text(value, f"Template {name}", TemplateError)
        slots = self.slots
        if self.output_slot not in slots:
            raise TemplateError(
                f"Template {self.text!r} has no {{{self.output_slot}}} slot for the answer. "
                f"Add one, e.g. 'Q: {{input}}\\nA: {{{self.output_slot}}}'.")
        if slots[-1] != self.output_slot:
            raise TemplateError(
                f"Template {self.text!r}: the answer slot {{{self.output_slot}}} must come last, "
                "since the query is rendered up to it and the model continues from there.")
        if slots.count(self.output_slot) != 1:
            raise TemplateError(f"Template {self.text!r} has the answer slot more than once.")

    @property
    def slots(self) -> list[str]:
        try:
            parsed = list(string.Formatter().parse(self.text))
        except ValueError as exc:
            raise TemplateError(f"Template {self.text!r} is not a valid format string: {exc}. "
                                "Escape literal braces as {{ and }}.") from None
        names = [name for _, name, _, _ in parsed if name is not None]
        if any(name == "" or not name.isidentifier() for name in names):
            raise TemplateError(f"Template {self.text!r} has an unnamed or odd slot; "
                                "use named slots such as {input} and {output}.")
        return names

    @property
    def query_prefix(self) -> str:
        """The template up to the answer slot, without trailing spaces."""
        head, _, _ = self.text.partition("{" + self.output_slot + "}")
        return head.rstrip(" ")

    @property
    def answer_prefix(self) -> str:
        """What goes before the answer when it is scored: a space if the template had one."""
        head, _, _ = self.text.partition("{" + self.output_slot + "}")
        return head[len(head.rstrip(" ")):] or ""

    def check_fields(self, available: set[str]) -> None:
        missing = [slot for slot in self.slots if slot not in available]
        if missing:
            raise TemplateError(
                f"Template {self.text!r} uses {missing} but the examples have "
                f"{sorted(available)}. Rename the slots or the fields.")

    def render_demo(self, fields: Mapping[str, str]) -> str:
        return self.text.format_map(_Strict(fields, self.text))

    def render_query(self, fields: Mapping[str, str]) -> str:
        return self.query_prefix.format_map(_Strict(fields, self.text))

    def join(self, demo_texts: list[str], query_text: str, documents: str = "") -> str:
        """Instructions, documents, demonstrations, query: in that order."""
        parts = ([self.instructions] if self.instructions else []) + \
            ([documents] if documents else []) + demo_texts + [query_text]
        return self.separator.join(parts)


class _Strict(dict):
    def __init__(self, fields: Mapping[str, str], template: str):
        super().__init__(fields)
        self.template = template

    def __missing__(self, key: str) -> str:
        raise TemplateError(f"Template {self.template!r} needs field {key!r}, which this "
                            f"example lacks (it has {sorted(self)}).")


def as_template(template: str | Template, output_name: str = "output") -> Template:
    if isinstance(template, Template):
        return template
    if not isinstance(template, str) or not template.strip():
        raise TemplateError("`template` must be a non-empty format string such as "
                            "'Q: {input}\\nA: {output}', or a ricl.Template.")
    slot = output_name if "{" + output_name + "}" in template else "output"
    return Template(template, output_slot=slot)
