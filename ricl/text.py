"""Text normalisation shared by leakage checks, self-exclusion and BM25."""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


def normalize(text: str) -> str:
    """Case-folded, NFKC, zero-width characters removed, whitespace collapsed.

    Two inputs that a reader would call "the same text" map to the same string.
    """
    text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    return _SPACE.sub(" ", text).strip().casefold()
