"""Evidence-stage figures on the synthetic world (prints; asserts nothing about speed).

- OCR character accuracy on clean signs (1 - edit distance / length, best hit per sign) and ms
  per 640 px view on one thread, per backend (rapidocr PP-OCRv4, rapidocr-v5 PP-OCRv5, easyocr
  with the weights it finds) and per script of the synthetic town's signs (latin, cyrillic,
  arabic, japanese); target >= 0.95 for the default backend on Latin. These figures are what
  corebuild.stages.ocr.coverage.ACCURACY ranks readers by.
- SAM image-encoder time per image at the configured size (random weights: the architecture,
  not the checkpoint, sets the cost), when segment-anything and torch are installed.
Usage: python bench/bench_evidence.py [--views 40] [--scripts latin,japanese]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchline import emit  # noqa: E402


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def norm(s: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", s.upper())


def views(n: int, script: str = "latin", every: bool = False):
    """Up to `n` (jpeg, sign texts) street views of the demo town that show signs cleanly, its
    signs written in `script` (one of corebuild.synthetic.scripts.SCRIPTS; the demo's own: latin).
    every: all views in the demo's order, with or without clean signs (what a build reads)."""
    import dataclasses

    from corebuild.regions import load_region
    from corebuild.stages.sample import SampleConfig, sample_region
    from corebuild.synthetic.render import Camera, clean_signs, encode, render_street
    from corebuild.synthetic.world import World

    region = load_region("demo", ROOT / "region_manifests")
    if script != region.synthetic_world.script:
        region = dataclasses.replace(region, synthetic_world=dataclasses.replace(region.synthetic_world, script=script))
    world = World.for_region(region)
    out = []
    for lat, lon in sample_region(region, SampleConfig(seed=21)).points:
        pano = world.snap(lat, lon, 50)
        if pano is None:
            continue
        for h in (0, 90, 180, 270):
            cam = Camera(pano.x, pano.y, h)
            truth = [s.text for s in clean_signs(world, cam)]
            if truth or every:  # views that show a sign cleanly: where accuracy can be measured
                out.append((encode(render_street(world, cam), "jpeg"), truth))
        if len(out) >= n:
            return out
    return out


# Languages a region writing signs in each script asks for (what the backends load).
# Greek: no easyocr model reads it (None), PP-OCRv5's dictionary has its letters.
SCRIPT_LANGUAGES = {"latin": ["en"], "cyrillic": ["ru", "en"], "arabic": ["ar", "en"], "greek": None, "japanese": ["ja", "en"]}
_LETTERS = {"cyrillic": ("CYRILLIC",), "arabic": ("ARABIC",), "greek": ("GREEK",), "japanese": ("HIRAGANA", "KATAKANA", "CJK")}


def norm_script(text: str, script: str) -> str:
    """What is scored: Latin as before (upper case, letters and digits); other scripts their own
    letters and digits (a Latin look-alike reading of a Cyrillic sign scores nothing)."""
    text = unicodedata.normalize("NFC", text)
    if script == "latin":
        return norm(text)
    return "".join(c for c in text if c.isdigit() or unicodedata.name(c, "").startswith(_LETTERS[script]))


def score(engine, data, script: str) -> tuple[float, list[float], int]:
    lat, accs = [], []
    engine.read(data[0][0])  # warm-up: first-call allocations are not a view's cost
    for image, truth in data:
        t0 = time.perf_counter()
        hits = engine.read(image)
        lat.append(time.perf_counter() - t0)
        for text in truth:
            want = norm_script(text, script)
            best = min((edit_distance(want, norm_script(h.text, script)) for h in hits), default=len(want))
            accs.append(max(0.0, 1 - best / len(want)))
    return (statistics.mean(accs) if accs else float("nan")), lat, len(accs)


def bench_ocr(backend: str, script: str, engine, data) -> dict:
    acc, lat, signs = score(engine, data, script)
    med, p90 = statistics.median(lat) * 1000, sorted(lat)[int(0.9 * len(lat))] * 1000
    default = backend == "rapidocr" and script == "latin"
    print(f"{backend:<12} {script:<9} char accuracy {acc:.3f} on {signs} clean signs; {med:.0f} ms median (p90 {p90:.0f}) per 640 px view, one thread"
          + (f" (target >= 0.95: {'met' if acc >= 0.95 else 'NOT met'})" if default else ""))
    key = f"ocr.{backend}" if script == "latin" else f"ocr.{backend}.{script}"
    emit(f"{key}.ms_per_image", f"OCR ms/image ({backend}, {script} signs, 640x640 view, one thread)", round(med, 1), "ms", "none stated (figure)", None,
         f"median of {len(data)} views; p90 {p90:.0f} ms")
    emit(f"{key}.accuracy", f"OCR character accuracy ({backend}, clean {script} signs)", round(acc, 4), "", ">= 0.95" if default else "none stated (figure)",
         (acc >= 0.95) if default else None, f"{signs} clean signs")
    return {"backend": backend, "script": script, "accuracy": round(acc, 3), "ms": round(med)}


def bench_det_sides(sides: list[int], n: int) -> None:
    """The detection-side lever (OcrConfig.det_side) for the default backend on the demo's Latin
    signs: clean-sign accuracy and ms per view at each side, and, over every view a build reads
    (with or without signs), how many of the full-size readings each side still makes."""
    from corebuild.stages.ocr import OcrConfig, load_ocr

    clean, every = views(n), views(n, every=True)
    base = None
    print(f"\ndetection side (rapidocr, latin; {len(clean)} clean-sign views, {len(every)} views in build order, one thread)")
    for side in sides:
        engine = load_ocr(OcrConfig(backend="rapidocr", threads=1, det_side=side), [["en"]])
        acc, lat, signs = score(engine, clean, "latin")
        t0 = time.perf_counter()
        reads = [{norm(h.text) for h in engine.read(img) if h.confidence >= 0.5} - {""} for img, _ in every]
        per_view = (time.perf_counter() - t0) / len(every) * 1000
        base = base or reads
        kept = sum(len(a & b) for a, b in zip(reads, base)) / max(1, sum(len(b) for b in base))
        label = f"{side} px" if side else "full size"
        print(f"  {label:<9} clean-sign accuracy {acc:.3f}; {statistics.median(lat) * 1000:.0f} ms per clean-sign view, {per_view:.0f} ms per view in build order;"
              f" {sum(map(len, reads))} readings over all views, {kept:.1%} of the first side's")
        emit(f"ocr.det_side.{side}", f"OCR detection at {label} (rapidocr, latin): clean-sign accuracy", round(acc, 4), "", ">= 0.95", acc >= 0.95,
             f"{per_view:.0f} ms per view in build order (one thread); {kept:.1%} of the first side's readings over {len(every)} views")


def bench_runtimes(runtimes: list[str], n: int, n_every: int) -> None:
    """What runs the default reader's models (OcrConfig.runtime, .precision), on the demo's Latin
    signs: clean-sign accuracy, CPU per view over every view a build reads, and how many views read
    exactly as on the first runtime (the same texts and boxes). In one run: a ratio to the first."""
    from corebuild.stages.ocr import OcrConfig, load_ocr

    clean, every = views(n), views(n_every, every=True)
    print(f"\nOCR runtime (rapidocr, latin; {len(clean)} clean-sign views, {len(every)} views in build order, one thread, CPU time)")
    base = first_ms = None
    for name in runtimes:
        runtime, _, precision = name.partition(":")
        engine = load_ocr(OcrConfig(backend="rapidocr", threads=1, runtime=runtime, precision=precision or "f32"), [["en"]])
        acc, _, signs = score(engine, clean, "latin")
        t0 = time.process_time()
        reads = [[(h.text, h.box) for h in engine.read(img)] for img, _ in every]
        ms = (time.process_time() - t0) / len(every) * 1000
        base, first_ms = base or reads, first_ms or ms
        same = sum(a == b for a, b in zip(reads, base))
        print(f"  {name:<20} clean-sign accuracy {acc:.3f}; {ms:.1f} ms CPU per view ({ms / first_ms:.2f}x {runtimes[0]}); {same} of {len(every)} views read as on {runtimes[0]}"
              f" ({sum(map(len, reads))} readings); {engine.model_id}")
        emit(f"ocr.runtime.{name}", f"OCR on {name} (rapidocr, latin, detection at {OcrConfig().det_side} px): clean-sign accuracy", round(acc, 4), "", ">= 0.95", acc >= 0.95,
             f"{ms:.1f} ms CPU per view in build order, {ms / first_ms:.2f}x {runtimes[0]} (one thread); {same} of {len(every)} views read as on {runtimes[0]} (texts and boxes)",
             cpu_ratio=round(ms / first_ms, 3))


def bench_sam(size: int) -> None:
    try:
        import torch
        from segment_anything import sam_model_registry
    except ImportError:
        print("sam        not installed here (pip install 'corebuild[sam]'): encoder time not measured")
        emit("sam.encoder_s", "SAM vit_b encoder s/image (CPU)", None, "s", "none stated (figure)", None, "cannot run here: segment-anything/torch not installed")
        return
    torch.set_num_threads(os.cpu_count() or 1)  # easyocr's one-thread figures set torch's pool to one
    model = sam_model_registry["vit_b"](checkpoint=None).eval()
    x = torch.zeros(1, 3, size, size)
    with torch.inference_mode():
        model.image_encoder(x)  # warm-up
        t0 = time.perf_counter()
        model.image_encoder(x)
    seconds = time.perf_counter() - t0
    print(f"sam        vit_b image encoder {seconds:.1f} s per image at {size}x{size} on CPU ({torch.get_num_threads()} threads)")
    emit("sam.encoder_s", "SAM vit_b encoder s/image (CPU)", round(seconds, 2), "s", "none stated (figure)", None,
         f"{size}x{size}, random weights (the architecture sets the cost), {torch.get_num_threads()} threads")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--views", type=int, default=40)
    ap.add_argument("--easyocr-views", type=int, default=12, help="easyocr is ~10x slower on one core: fewer views")
    ap.add_argument("--scripts", default=",".join(SCRIPT_LANGUAGES), help="scripts whose signs each backend reads; '': skip")
    ap.add_argument("--det-sides", default="0,576,512,448,416,384", help="detection sides to compare (0: full size); '': skip")
    ap.add_argument("--runtimes", default="onnxruntime,openvino,openvino:bf16", help="OCR runtimes[:precision] to compare, the first as the reference; '': skip")
    ap.add_argument("--runtime-views", type=int, default=400, help="views in build order the runtimes read")
    ap.add_argument("--sam-size", type=int, default=1024, help="SAM encodes 1024x1024 (its fixed input size)")
    args = ap.parse_args()
    from corebuild.errors import CorebuildError
    from corebuild.stages.ocr import OcrConfig, load_ocr

    table = []
    for script in filter(None, args.scripts.split(",")):  # "": none (e.g. only --runtimes)
        try:
            data = views(args.views, script)
        except CorebuildError as exc:  # a font package missing: say so, measure the rest
            print(f"{script}: cannot render here: {exc}")
            continue
        print(f"{script}: {len(data)} synthetic views, {sum(len(t) for _, t in data)} clean signs")
        for backend in ("rapidocr", "rapidocr-v5", "easyocr"):
            try:
                if SCRIPT_LANGUAGES[script] is None and backend == "easyocr":
                    raise CorebuildError(f"no easyocr model reads {script}")
                engine = load_ocr(OcrConfig(backend=backend, threads=1), [SCRIPT_LANGUAGES[script] or ["en"]])
            except CorebuildError as exc:
                why = str(exc).splitlines()[0]
                print(f"{backend:<12} {script:<9} cannot run here: {why[:160]}")
                emit(f"ocr.{backend}.{script}.accuracy", f"OCR character accuracy ({backend}, clean {script} signs)", None, "", "none stated (figure)", None,
                     f"cannot run here: {why[:200]}")
                table.append({"backend": backend, "script": script, "accuracy": None, "ms": None})
                continue
            table.append(bench_ocr(backend, script, engine, data[: args.easyocr_views] if backend == "easyocr" else data))
    print("\nscript x backend: char accuracy on clean signs / ms per 640 px view (one thread); - : cannot run here")
    backends = ("rapidocr", "rapidocr-v5", "easyocr")
    print(f"{'script':<10}" + "".join(f"{b:>22}" for b in backends))
    for script in dict.fromkeys(r["script"] for r in table):
        cells = {r["backend"]: r for r in table if r["script"] == script}
        cell = {b: (f"{cells[b]['accuracy']:.3f} / {cells[b]['ms']} ms" if cells.get(b, {}).get("accuracy") is not None else "-") for b in backends}
        print(f"{script:<10}" + "".join(f"{cell[b]:>22}" for b in backends))
    if args.det_sides:
        bench_det_sides([int(x) for x in args.det_sides.split(",")], args.views)
    if args.runtimes:
        bench_runtimes(args.runtimes.split(","), args.views, args.runtime_views)
    bench_sam(args.sam_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
