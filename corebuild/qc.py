"""Quality control of model-written descriptions: each check is a pure function over a record;
what fails becomes a failure row with its reason (or, for hallucinated sign text, may be removed
instead, by config)."""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from difflib import SequenceMatcher
from typing import Iterable

from .record import Record

# Quotes pair up left to right whatever their content's length: a length limit inside the pattern
# would let a one-character sign shift the pairing and quote the prose between two signs.
_QUOTED = re.compile(r"[\"“”]([^\"“”]*)[\"“”]")


def _norm(text: str) -> str:
    return re.sub(r"[^0-9a-z\u00c0-\uffff]+", "", text.lower())


def grounded(claim: str, evidence: Iterable[str], min_ratio: float = 0.8) -> bool:
    """A sign text the model claims is grounded when it fuzzily matches some OCR reading (or a
    reading contains it): OCR splits and joins words, models change case and spacing."""
    c = _norm(claim)
    if not c:
        return True
    for e in evidence:
        n = _norm(e)
        if n and (c in n or n in c and len(n) >= 0.8 * len(c) or SequenceMatcher(None, c, n).ratio() >= min_ratio):
            return True
    return False


def claimed_signs(rec: Record) -> list[str]:
    """Text the description presents as written: the answer's `signs` and quoted phrases."""
    d = rec.description
    claims = list(json.loads(d.parts).get("signs", [])) if d and d.parts else []
    claims += [q for q in _QUOTED.findall(d.text) if 2 <= len(q.strip()) <= 80] if d else []
    seen, out = set(), []
    for c in claims:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def check_grounding(rec: Record, action: str = "fail", min_ratio: float = 0.8) -> Record:
    """Hallucinated sign text: `fail` the row, or `remove` the sentences that quote it."""
    if rec.failed or rec.description is None:
        return rec
    evidence = [t.text for t in rec.ocr or () if not t.dropped]
    bad = [c for c in claimed_signs(rec) if not grounded(c, evidence, min_ratio)]
    if not bad:
        return rec
    if action == "fail":
        return rec.fail("qc.ungrounded_sign_text", f"sign text not in the OCR evidence: {bad[:5]}")
    sentences = re.split(r"(?<=[.!?])\s+", rec.description.text)
    kept = [s for s in sentences if not any(b in s for b in bad)]
    parts = json.loads(rec.description.parts) if rec.description.parts else {}
    if "signs" in parts:
        parts["signs"] = [s for s in parts["signs"] if s not in bad]
    desc = dataclasses.replace(rec.description, text=" ".join(kept), parts=json.dumps(parts, ensure_ascii=False) if parts else rec.description.parts)
    return rec.with_(description=desc)


# The script a description in each language is written in (quoted sign text may differ).
SCRIPTS = {"en": "LATIN", "fr": "LATIN", "de": "LATIN", "es": "LATIN", "pt": "LATIN", "it": "LATIN", "ru": "CYRILLIC", "ja": ("CJK", "HIRAGANA", "KATAKANA"), "zh": "CJK", "ko": "HANGUL", "ar": "ARABIC"}


def language_ok(text: str, language: str, min_share: float = 0.85) -> bool:
    """Whether most letters are in the script of the language asked for (a cheap check that
    catches a model answering in another language; quoted foreign sign text is tolerated)."""
    script = SCRIPTS.get(language)
    if script is None:
        return True  # no rule for this language: not checked, rather than guessed
    prefixes = (script,) if isinstance(script, str) else script
    letters = [c for c in _QUOTED.sub(" ", text) if c.isalpha()]
    if not letters:
        return False
    return sum(unicodedata.name(c, "").startswith(prefixes) for c in letters) / len(letters) >= min_share
