"""`corebuild models check`: which model backends can run on this machine, and what is missing.

Nothing is downloaded: each line says where the weights are expected, so a user can put them
there (or point the config at them) before a build.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from corebuild.assets import PROMPTS


@dataclass(frozen=True)
class ModelStatus:
    backend: str
    kind: str
    usable: bool
    detail: str


def default_easyocr_dir() -> str:
    from corebuild.stages.ocr import OcrConfig
    from corebuild.stages.ocr.coverage import easyocr_dirs

    return easyocr_dirs(OcrConfig())[0]  # the configured one: $COREBUILD_EASYOCR_DIR or ~/.EasyOCR/model


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _rapidocr(backend: str = "rapidocr") -> ModelStatus:
    from corebuild.stages.ocr import OcrConfig, load_ocr
    from corebuild.stages.ocr.coverage import scripts_read

    try:
        engine = load_ocr(OcrConfig(backend=backend))
    except Exception as exc:  # report, do not crash the table
        return ModelStatus(backend, "ocr", False, str(exc))
    return ModelStatus(backend, "ocr", True, f"{engine.model_id} (models ship in wheels; reads {', '.join(scripts_read(backend))})")


def _easyocr(model_dir: str, groups: list[tuple[str, ...]]) -> ModelStatus:
    if not _installed("easyocr"):
        return ModelStatus("easyocr", "ocr", False, "not installed: pip install 'corebuild[easyocr]'")
    try:
        from corebuild.stages.ocr.easyocr_backend import required_files
    except ImportError as exc:
        return ModelStatus("easyocr", "ocr", False, f"backend unavailable: {exc}")
    from corebuild.stages.ocr import OcrConfig
    from corebuild.stages.ocr.coverage import easyocr_dirs

    dirs = easyocr_dirs(OcrConfig(easyocr_model_dir=model_dir))
    have = {p.name for d in dirs if Path(d).is_dir() for p in Path(d).glob("*")}
    model_dir = " or ".join(dirs)
    needed = {g: required_files(list(g)) for g in groups}
    ready = [g for g, files in needed.items() if set(files) <= have]
    missing = sorted({f for files in needed.values() for f in files} - have)
    detail = f"{len(ready)} of {len(needed)} language groups of the region manifests have their files in {model_dir}"
    if missing:
        detail += f"; missing: {', '.join(missing)} (from the easyocr model releases)"
    return ModelStatus("easyocr", "ocr", bool(ready) and not missing, detail)


def _weights(backend: str, kind: str, module: str, extra: str, path: Optional[str], what: str) -> ModelStatus:
    if not _installed(module):
        return ModelStatus(backend, kind, False, f"not installed: pip install 'corebuild[{extra}]'")
    if not path:
        return ModelStatus(backend, kind, False, f"{module} installed; no {what} configured")
    if not Path(path).is_file():
        return ModelStatus(backend, kind, False, f"{what} not found: {path}")
    return ModelStatus(backend, kind, True, f"{what}: {path}")


def check_models(manifests_dir: str, easyocr_dir: str, sam_checkpoint: Optional[str], clip_checkpoint: Optional[str], prompts_dir: str = PROMPTS) -> list[ModelStatus]:
    from corebuild.stages.describe import DescribeConfig, load_describer
    from corebuild.regions import load_all

    regions, _ = load_all(manifests_dir)
    groups = sorted({tuple(g) for r in regions for g in r.ocr_languages})
    out = [_rapidocr(), _rapidocr("rapidocr-v5"), _easyocr(easyocr_dir, groups)]
    out.append(_weights("sam", "segmentation", "segment_anything", "sam", sam_checkpoint, "SAM checkpoint"))
    out.append(_weights("clip", "mask labels", "open_clip", "sam", clip_checkpoint, "open_clip weights"))
    try:
        d = load_describer(DescribeConfig(prompts_dir=prompts_dir))
        out.append(ModelStatus("template", "describer", True, f"offline, prompt {d.prompt.id} ({d.prompt.hash})"))
    except Exception as exc:
        out.append(ModelStatus("template", "describer", False, str(exc)))
    return out


def format_table(rows: list[ModelStatus]) -> str:
    lines = [f"{'backend':<10} {'kind':<13} {'usable':<7} detail"]
    lines += [f"{r.backend:<10} {r.kind:<13} {'yes' if r.usable else 'no':<7} {r.detail}" for r in rows]
    return "\n".join(lines)


def region_coverage(regions, ocr_cfg) -> list[tuple[Any, Any]]:
    """(region, its OCR plan) for each region: which reader reads each of its scripts here."""
    from corebuild.stages.ocr.coverage import region_plan

    return [(r, region_plan(ocr_cfg, r)) for r in regions]


def coverage_cell(plan) -> str:
    """One region's OCR choice in a column: `latin:rapidocr japanese:rapidocr-v5 arabic:NONE`."""
    return " ".join(f"{s}:{b if b != 'none' else 'NONE'}" for s, b in plan.by_script)


def format_coverage(rows) -> str:
    lines = [f"{'region':<32} {'read':<30} {'unread here':<18} by script"]
    for r, plan in rows:
        lines.append(f"{r.id:<32} {','.join(plan.read) or '-':<30} {','.join(plan.unread) or '-':<18} {coverage_cell(plan)}")
    full = sum(1 for _, p in rows if not p.unread)
    none = sum(1 for _, p in rows if not p.read)
    lines.append(f"{len(rows)} regions: every script read in {full}, some unread in {len(rows) - full - none}, none read in {none}. "
                 "NONE: no reader here reads that script (its sign text is recorded as unverifiable); "
                 "`corebuild models download --regions ...` fetches easyocr weights that read most of them.")
    return "\n".join(lines)

