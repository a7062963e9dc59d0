"""OCR language codes as easyocr knows them, and which codes can load together.

The lists are easyocr 1.7.2's (`easyocr/config.py`): one recognition model serves a whole
script family, so a reader can combine Latin languages freely, languages of one other family
with English, and each of th/ch_sim/ch_tra/ja/ko/ta/te/kn only with English.
"""

from __future__ import annotations

from typing import Iterable, Optional

LATIN = ("af", "az", "bs", "cs", "cy", "da", "de", "en", "es", "et", "fr", "ga", "hr", "hu", "id", "is", "it", "ku", "la", "lt", "lv", "mi", "ms", "mt", "nl", "no", "oc", "pi", "pl", "pt", "ro", "rs_latin", "sk", "sl", "sq", "sv", "sw", "tl", "tr", "uz", "vi")
FAMILIES: dict[str, tuple[str, ...]] = {
    "arabic": ("ar", "fa", "ug", "ur"),
    "bengali": ("bn", "as", "mni"),
    "cyrillic": ("ru", "rs_cyrillic", "be", "bg", "uk", "mn", "abq", "ady", "kbd", "ava", "dar", "inh", "che", "lbe", "lez", "tab", "tjk"),
    "devanagari": ("hi", "mr", "ne", "bh", "mai", "ang", "bho", "mah", "sck", "new", "gom", "sa", "bgc"),
}
SOLO = ("th", "ch_sim", "ch_tra", "ja", "ko", "ta", "te", "kn")  # each only with "en"
ALL_CODES = frozenset(LATIN) | frozenset(c for f in FAMILIES.values() for c in f) | frozenset(SOLO)

# Geonames language tags (ISO 639 with optional region) whose easyocr code differs or is split.
_SPECIAL = {
    "zh-CN": ("ch_sim",), "zh-SG": ("ch_sim",), "zh": ("ch_sim",),
    "zh-TW": ("ch_tra",), "zh-HK": ("ch_tra",), "zh-MO": ("ch_tra",),
    "sr": ("rs_cyrillic", "rs_latin"), "nb": ("no",), "nn": ("no",), "fil": ("tl",),
    "tg": ("tjk",), "ms": ("ms",), "ps": ("fa",), "prs": ("fa",),
}


def family_of(code: str) -> Optional[str]:
    if code in LATIN:
        return "latin"
    for name, codes in FAMILIES.items():
        if code in codes:
            return name
    return code if code in SOLO else None


def group_problem(group: Iterable[str]) -> Optional[str]:
    """Why easyocr cannot load these codes in one reader, or None if it can."""
    codes = list(group)
    unknown = [c for c in codes if c not in ALL_CODES]
    if unknown:
        return f"unknown easyocr language code(s) {unknown}"
    families = {family_of(c) for c in codes if c != "en"}
    if len(families) > 1 and families != {"latin"}:
        return f"{sorted(families)} cannot share one reader: split them into groups (each with 'en')"
    return None


def easyocr_codes(geonames_tag: str) -> tuple[str, ...]:
    """easyocr codes for a geonames language tag ('es-AR', 'zh-TW', 'sr'); () if unsupported."""
    if geonames_tag in _SPECIAL:
        return _SPECIAL[geonames_tag]
    base = geonames_tag.split("-")[0]
    if base in _SPECIAL:
        return _SPECIAL[base]
    return (base,) if base in ALL_CODES else ()


def ocr_groups(geonames_languages: str, max_languages: int = 3) -> tuple[list[list[str]], list[str]]:
    """Loadable groups for a country's language list (geonames order: most used first) and the
    tags no easyocr model reads. English joins every group: signs carry it and easyocr needs it
    beside any non-Latin script."""
    tags = [t for t in geonames_languages.split(",") if t][:max_languages]
    groups: dict[str, list[str]] = {}
    unsupported: list[str] = []
    for tag in tags:
        codes = easyocr_codes(tag)
        if not codes:
            unsupported.append(tag)
        for code in codes:
            fam = family_of(code)
            g = groups.setdefault(fam, [])
            if code not in g:
                g.append(code)
    if not groups:
        groups["latin"] = []
    out = []
    for g in groups.values():
        if "en" not in g:
            g.append("en")
        out.append(g)
    if len(out) > 1:
        out = [g for g in out if g != ["en"]]  # English already rides with every other group
    return out, unsupported
