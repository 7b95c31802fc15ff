"""Text tokenisation shared by indexing and querying: NFKC, casefold, Unicode letter/digit runs."""

from __future__ import annotations

import re
import unicodedata

_TOKEN = re.compile(r"[^\W_]+")
_ASCII_TOKEN = re.compile(r"[A-Za-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Maximal runs of Unicode letters and digits after NFKC and casefolding (no stemming)."""
    if text.isascii():  # NFKC is the identity on ASCII and casefold() equals lower() there
        return _ASCII_TOKEN.findall(text.lower())
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def query_terms(query: str) -> list[str]:
    """Distinct query tokens in first-seen order."""
    return list(dict.fromkeys(tokenize(query)))
