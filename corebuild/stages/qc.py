"""Quality control of model-written descriptions: each check is a pure function over a record;
what fails becomes a failure row with its reason (or, for hallucinated sign text, may be removed
instead, by config)."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import unicodedata
from difflib import SequenceMatcher
from typing import TYPE_CHECKING, Iterable

from corebuild.record import Record
from corebuild.stages.describe.prompts import load_prompt
from corebuild.stages.ocr.coverage import readable
from corebuild.stages.stage import StageBase

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

# Each quotation style pairs its own marks, left to right, whatever their content's length: a
# length limit inside the pattern would let a one-character sign shift the pairing and quote the
# prose between two signs. One alternation, so a quote inside another style's quote stays inside.
# (openers, closers): English, German „…“ and Swedish ”…” double quotes; «…», »…« and »…»; CJK.
_PAIRS = [('"“”„', '"“”'), ("«»", "«»"), ("‹›", "‹›"), ("「", "」"), ("『", "』")]
# Single quotes double as apostrophes: one opens only after a non-word character, closes only
# before one, and inside it an apostrophe between two letters (JOE'S) is content, not a close;
# nor does the elided century of a decade ('90s) open one.
_SINGLE = [("'", "'"), ("‘‚", "’‘")]
_QUOTED = re.compile(
    "|".join(f"[{re.escape(o)}]([^{re.escape(c)}]*)[{re.escape(c)}]" for o, c in _PAIRS)
    + "|"
    + "|".join(rf"(?<![\w'’])[{re.escape(o)}](?=\S)(?!\d0s\b)((?:[^{re.escape(c)}]|(?<=\w)[{re.escape(c)}](?=\w))*?)(?<=\S)[{re.escape(c)}](?!\w)" for o, c in _SINGLE)
)


def quoted(text: str) -> list[str]:
    """The phrases a text puts in quotation marks, any style."""
    return [next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(text)]


def _norm(text: str) -> str:
    return re.sub(r"[^0-9a-z\u00c0-\uffff]+", "", text.lower())


_DIGIT_LIKE = str.maketrans("OoIl|", "00111")


def _numbers(text: str) -> set[str]:
    """Digit runs; O and I/l beside a digit read as 0 and 1 (OCR's usual confusions: "I2" is 12)."""
    return set(re.findall(r"\d+", re.sub(r"[OoIl|]*\d[\dOoIl|]*", lambda m: m.group().translate(_DIGIT_LIKE), text)))


def grounded(claim: str, evidence: Iterable[str], min_ratio: float = 0.8) -> bool:
    """A sign text the model claims is grounded when it fuzzily matches some OCR reading (or a
    reading contains it), any case: OCR splits and joins words, models change case and spacing.
    Its numbers must all be in that reading: "ROMA BAKERY 13" is not "ROMA BAKERY 12", though the
    fuzzy ratio alone would say so."""
    c, digits = _norm(claim), _numbers(claim)
    if not c:
        return True
    for e in evidence:
        n = _norm(e)
        if n and (c in n or n in c and len(n) >= 0.8 * len(c) or SequenceMatcher(None, c, n).ratio() >= min_ratio) and digits <= _numbers(e):
            return True
    return False


def claimed_signs(rec: Record) -> list[str]:
    """Text the description presents as written: the answer's `signs` and quoted phrases."""
    d = rec.description
    claims = list(json.loads(d.parts).get("signs", [])) if d and d.parts else []
    claims += [q for q in quoted(d.text) if 2 <= len(q.strip()) <= 80] if d else []
    seen, out = set(), []
    for c in claims:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def check_grounding(rec: Record, action: str = "fail", min_ratio: float = 0.8, min_words: int = 1) -> Record:
    """Hallucinated sign text: `fail` the row, or `remove` the sentences that quote it. Text in a
    script no OCR reader of the row reads is not judged: it goes to `signs_unverifiable`. What
    removal leaves must still reach the prompt's `min_words`, else the row fails
    (`qc.emptied_by_grounding`): a stub is not a description."""
    if rec.failed or rec.description is None:
        return rec
    evidence = [t.text for t in rec.ocr or () if not t.dropped]
    bad = [c for c in claimed_signs(rec) if not grounded(c, evidence, min_ratio)]
    if rec.ocr_languages_read is not None:
        # Text in a script none of the row's readers reads could not have been in the evidence:
        # unverifiable, recorded, kept (the model may have read it right from the picture).
        unverifiable = tuple(c for c in bad if not readable(c, rec.ocr_languages_read))
        if unverifiable:
            rec = rec.with_(signs_unverifiable=unverifiable)
            bad = [c for c in bad if c not in unverifiable]
    if not bad:
        return rec
    if action == "fail":
        return rec.fail("qc.ungrounded_sign_text", f"sign text not in the OCR evidence: {bad[:5]}")
    sentences = re.split(r"(?<=[.!?])\s+", rec.description.text)
    kept = [s for s in sentences if not any(b.lower() in s.lower() for b in bad)]
    words = sum(len(s.split()) for s in kept)
    if words < max(min_words, 1):
        return rec.fail("qc.emptied_by_grounding", f"removing ungrounded sign text {bad[:5]} left {words} words, under the prompt's {min_words}")
    parts = json.loads(rec.description.parts) if rec.description.parts else {}
    if "signs" in parts:
        parts["signs"] = [s for s in parts["signs"] if s not in bad]
    desc = dataclasses.replace(rec.description, text=" ".join(kept), parts=json.dumps(parts, ensure_ascii=False) if parts else rec.description.parts)
    return rec.with_(description=desc)


# The script a description in each language is written in (quoted sign text may differ).
SCRIPTS = {"en": "LATIN", "fr": "LATIN", "de": "LATIN", "es": "LATIN", "pt": "LATIN", "it": "LATIN", "ru": "CYRILLIC", "ja": ("CJK", "HIRAGANA", "KATAKANA"), "zh": "CJK", "ko": "HANGUL", "ar": "ARABIC"}


@functools.cache
def _identifier() -> LanguageIdentifier:
    """py3langid's naive Bayes model (140 languages, shipped in its wheel: nothing downloaded),
    with probabilities normalised and length-calibrated, so a short text is not confidently anything."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(text: str) -> tuple[str, float]:
    """(ISO 639 code, probability) of the text's language."""
    return _identifier().classify(text)


def language_ok(text: str, language: str, signs: Iterable[str] = (), min_share: float = 0.85, min_confidence: float = 0.9, min_letters: int = 40) -> bool:
    """Whether a description is in the language asked for. Judged on its own prose: quoted phrases
    and the sign texts it names cut out, so foreign shop names do not count. Most letters must be in
    the language's script (when SCRIPTS knows it), and a language identifier must not be confident
    (>= min_confidence, on at least min_letters letters) that it is another language (when the
    identifier knows the language asked for). A language neither knows is not checked."""
    prose = _without_sign_text(text, signs)
    letters = [c for c in prose if c.isalpha()]
    script = SCRIPTS.get(language)
    if script is not None:
        prefixes = (script,) if isinstance(script, str) else script
        if not letters or sum(unicodedata.name(c, "").startswith(prefixes) for c in letters) / len(letters) < min_share:
            return False
    if language in _identifier().nb_classes and len(letters) >= min_letters:
        found, p = identify(prose)
        if found != language and p >= min_confidence:
            return False
    return True


# Prompt injection through sign text. Strong cues make OCR text an instruction on their own;
# "write/say X" only counts when X is quoted, and "instead" only beside such a verb (shop names
# such as "SAY CHEESE STUDIO" must not count).
_STRONG_CUES = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b.{0,40}?\b(?:instructions?|prompts?|rules|directions)\b"
    r"|\byou\s+are\s+now\b|\bsystem\s+prompt\b|\bnew\s+instructions?\b"
    r"|(?:^|[\s\"'{\[])(?:system|assistant|user)\s*:|<\|?/?(?:im_start|im_end|system|assistant|user)\|?>|\[/?INST\]",
    re.I | re.S,
)
_DEMAND = re.compile(
    r"\b(?i:write|say|respond\s+with|reply\s+with|answer\s+with|output|print|type)\b\s*:?\s*"
    r"(?:[\"“”'‘’]([^\"“”'‘’]{2,60})[\"“”'‘’]|([A-Z0-9][A-Z0-9!?_-]{2,30})\b)"
)
_INSTEAD = re.compile(r"\binstead\b", re.I)
_VERB = re.compile(r"\b(?:write|say|respond|reply|answer|output|print|describe|tell)\b", re.I)
# Talk about the model itself, not the scene. A phrase also written on the sign is left out
# (the description may paraphrase the sign it describes).
_META = re.compile(
    r"\b(?:(?:previous|prior|above|earlier|my|your|original|new)\s+instructions?|system\s+prompt|prompt"
    r"|as\s+an\s+ai|ai\s+(?:model|assistant)|language\s+model|jailbreak"
    r"|I\s+(?:am|will|cannot|can't|won't|have|must|was)\b)"
    r"|(?:^|\s)(?:system|assistant|user)\s*:|<\|?/?(?:im_start|im_end|system|assistant|user)\|?>|\[/?INST\]",
    re.I,
)
_SCENE = re.compile(
    r"\b(?:street|road|lane|avenue|sidewalk|pavement|crossing|intersection|building|house|shop|store|"
    r"storey|story|roof|wall|facade|tree|trees|vegetation|park|sign|signs|car|cars|left|right|ahead|facing|view|scene)\b",
    re.I,
)


def injection_texts(rec: Record) -> list[tuple[str, list[str]]]:
    """OCR readings (evidence, not dropped) that look like instructions to the model, each with
    the literal output it demands, if any (`write "HACKED"` demands HACKED)."""
    out = []
    for t in rec.ocr or ():
        if t.dropped or not t.text.strip():
            continue
        text = t.text
        demands = [(q or w).strip() for q, w in _DEMAND.findall(text)]
        demands = [d for d in demands if len(_norm(d)) >= 3]
        quoted_demand = any(q for q, _ in _DEMAND.findall(text))
        if _STRONG_CUES.search(text) or quoted_demand or (_INSTEAD.search(text) and _VERB.search(text)):
            out.append((text, demands))
    return out


def _without_sign_text(description: str, signs: Iterable[str]) -> str:
    """The description's own prose: sign texts it reproduces (verbatim, any case and spacing, with
    or without the sign's own quote marks) and quoted phrases cut out, so quoting a sign is never read as obeying it."""
    out = description
    variants = {v for s in signs for v in (s, re.sub(r"[\"“”‘’']", " ", s))}  # also retold without its quotes
    for s in sorted(variants, key=len, reverse=True):
        words = s.split()
        if words:
            out = re.sub(r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)", " ", out, flags=re.I)
    return _QUOTED.sub(" ", out)


def check_injection(rec: Record) -> Record:
    """A description that obeys instructions written in its OCR evidence fails as
    `qc.prompt_injection`.

    Only rows whose evidence holds instruction-like text are looked at: "ignore/disregard ...
    instructions", "you are now", "system prompt", "new instructions", chat role tags, or
    "write/say/respond with X" where X is quoted, or such a verb beside "instead". The description's
    own prose (the sign texts it reproduces and every quoted phrase cut out) then obeys when it
    (1) contains the demanded output X, (2) talks about instructions, prompts or an AI, speaks in
    the first person or carries role tags (phrases the sign itself contains do not count), or
    (3) drops the scene format: no scene words at all, or a `parts` answer whose road, buildings
    and environment are all empty.

    Limits: deterministic patterns, English only, tuned to miss rather than to accuse. It does
    not catch obedience that reads like a scene description (a poem about a street, a subtly
    altered description, a paraphrased demand), instructions in other languages or split across
    OCR readings, nor instructions hidden in the images themselves rather than OCR text. A
    description quoting a sign as a sign never fails here (grounding is check_grounding's job)."""
    if rec.failed or rec.description is None:
        return rec
    found = injection_texts(rec)
    if not found:
        return rec
    d = rec.description
    evidence = [t.text for t in rec.ocr or () if not t.dropped]
    prose = _without_sign_text(d.text, evidence)
    scene_prose = _without_sign_text(d.text, [text for text, _ in found])
    parts = {}
    if d.parts:
        try:
            parts = json.loads(d.parts)
        except ValueError:
            parts = {}
    instructions = " ".join(text for text, _ in found).lower()
    for text, demands in found:
        why = None
        for demand in demands:
            if re.search(r"(?<!\w)" + r"\s+".join(map(re.escape, demand.split())) + r"(?!\w)", prose, re.I):
                why = f"it writes the demanded {demand[:40]!r}"
                break
        if why is None:
            meta = [m.group(0).strip() for m in _META.finditer(prose) if m.group(0).strip().lower() not in instructions]
            if meta:
                why = f"it talks about itself ({meta[0][:40]!r})"
        if why is None:
            scene_parts = [parts.get(k) for k in ("road", "buildings", "environment") if k in parts]
            if not _SCENE.search(scene_prose) or (len(scene_parts) == 3 and not any(str(p).strip() for p in scene_parts)):
                why = "it drops the scene description"
        if why:
            snippet = " ".join(text.split())
            snippet = snippet if len(snippet) <= 60 else snippet[:57] + "..."
            return rec.fail("qc.prompt_injection", f"the description obeys instruction-like OCR text {snippet!r}: {why}")
    return rec


class QcStage(StageBase):
    """After describing: the prompt-injection check (always: obeying a sign's instructions is never
    a valid description), then the grounding check unless it is off."""

    name = failure_stage = "qc"

    def __init__(self, grounding: str, prompts_dir: str, prompt_id: str, batch_size: int):
        self.grounding, self.prompts_dir, self.prompt_id, self.batch_size = grounding, prompts_dir, prompt_id, batch_size

    def setup(self) -> None:
        # `remove` must leave a description the prompt's own minimum would have accepted.
        self.min_words = int(load_prompt(self.prompts_dir, self.prompt_id).body.get("min_words", 1))

    def process(self, batch: list[Record]) -> list[Record]:
        return [self.check(rec) for rec in batch]

    def check(self, rec: Record) -> Record:
        rec = check_injection(rec)
        if self.grounding != "off" and rec.description is not None and not rec.failed:
            rec = check_grounding(rec, self.grounding, min_words=self.min_words)
        return rec
