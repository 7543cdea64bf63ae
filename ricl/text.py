"""Text checks and normalisation shared by loaders, the builder, self-exclusion and BM25."""

from __future__ import annotations

import re
import unicodedata

from ricl.errors import ConfigError, RiclError

_SPACE = re.compile(r"\s+")
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


def normalize(text: str) -> str:
    """Case-folded, NFKC, zero-width characters removed, whitespace collapsed.

    Two inputs that a reader would call "the same text" map to the same string.
    """
    text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    return _SPACE.sub(" ", text).strip().casefold()


def check_text(value: str, where: str, error: type[RiclError] = ConfigError) -> str:
    """``value`` unchanged if every tokenizer can take it, else ``error`` naming
    ``where`` (a record, a query, a document) and the offending character.

    Python strings may hold lone surrogates (U+D800..U+DFFF), for instance from a JSON
    ``"\\ud800"`` escape or bytes decoded with ``errors="surrogateescape"``; UTF-8
    cannot encode them, so tokenizers and file writers fail on them deep inside.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = value[exc.start]
        raise error(f"{where} holds a lone surrogate U+{ord(char):04X} at character {exc.start} "
                    f"(after {value[max(0, exc.start - 20):exc.start]!r}), which UTF-8 cannot "
                    "encode and no tokenizer accepts. Fix the text where it was decoded, or "
                    "drop it.") from None
    return value
