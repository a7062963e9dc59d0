"""Evidence-stage figures on the synthetic world (prints; asserts nothing about speed).

- OCR character accuracy on clean signs (1 - edit distance / length, best hit per sign) for each
  OCR backend that can run here; target >= 0.95. Per-image latency and images/s on CPU.
- SAM image-encoder time per image at the configured size (random weights: the architecture,
  not the checkpoint, sets the cost), when segment-anything and torch are installed.
Usage: python bench/bench_evidence.py [--views 60]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
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


def views(n: int):
    from corebuild.regions import load_region
    from corebuild.stages.sample import SampleConfig, sample_region
    from corebuild.synthetic.render import Camera, clean_signs, encode, render_street
    from corebuild.synthetic.world import World

    region = load_region("demo", ROOT / "region_manifests")
    world = World.for_region(region)
    out = []
    for lat, lon in sample_region(region, SampleConfig(seed=21)).points:
        pano = world.snap(lat, lon, 50)
        if pano is None:
            continue
        for h in (0, 90, 180, 270):
            cam = Camera(pano.x, pano.y, h)
            truth = [s.text for s in clean_signs(world, cam)]
            if truth:  # views that show a sign cleanly: where accuracy can be measured
                out.append((encode(render_street(world, cam), "jpeg"), truth))
        if len(out) >= n:
            return out
    return out


def bench_ocr(name: str, engine, data) -> None:
    lat, accs = [], []
    t_all = time.perf_counter()
    for image, truth in data:
        t0 = time.perf_counter()
        hits = engine.read(image)
        lat.append(time.perf_counter() - t0)
        for text in truth:
            best = min((edit_distance(norm(text), norm(h.text)) for h in hits), default=len(norm(text)))
            accs.append(max(0.0, 1 - best / len(norm(text))))
    wall = time.perf_counter() - t_all
    acc = statistics.mean(accs) if accs else float("nan")
    med, p90 = statistics.median(lat) * 1000, sorted(lat)[int(0.9 * len(lat))] * 1000
    print(f"{name:<10} char accuracy {acc:.3f} on {len(accs)} clean signs (target >= 0.95: {'met' if acc >= 0.95 else 'NOT met'})")
    print(f"{'':<10} latency median {med:.0f} ms, p90 {p90:.0f} ms per 640x640 view; {len(data) / wall:.2f} images/s")
    emit(f"ocr.{name}.ms_per_image", f"OCR ms/image ({name}, 640x640 view, CPU)", round(med, 1), "ms", "none stated (figure)", None,
         f"median of {len(data)} views; p90 {p90:.0f} ms; {len(data) / wall:.2f} images/s with {'all cores' if name == 'rapidocr' else 'its default threads'}")
    emit(f"ocr.{name}.accuracy", f"OCR character accuracy ({name}, clean signs)", round(acc, 4), "", ">= 0.95", acc >= 0.95, f"{len(accs)} clean signs")


def bench_sam(size: int) -> None:
    try:
        import torch
        from segment_anything import sam_model_registry
    except ImportError:
        print("sam        not installed here (pip install 'corebuild[sam]'): encoder time not measured")
        emit("sam.encoder_s", "SAM vit_b encoder s/image (CPU)", None, "s", "none stated (figure)", None, "cannot run here: segment-anything/torch not installed")
        return
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
    ap.add_argument("--views", type=int, default=60)
    ap.add_argument("--sam-size", type=int, default=1024, help="SAM encodes 1024x1024 (its fixed input size)")
    args = ap.parse_args()
    from corebuild.errors import ModelUnavailableError
    from corebuild.stages.ocr import OCR_BACKENDS, OcrConfig, load_ocr

    data = views(args.views)
    print(f"{len(data)} synthetic views, {sum(len(t) for _, t in data)} clean signs")
    for backend in sorted(OCR_BACKENDS):
        if backend == "off":  # reads nothing by design: no accuracy or latency to measure
            continue
        try:
            engine = load_ocr(OcrConfig(backend=backend), [["en"]])
        except ModelUnavailableError as exc:
            print(f"{backend:<10} cannot run here: {str(exc).splitlines()[0]}")
            emit(f"ocr.{backend}.ms_per_image", f"OCR ms/image ({backend}, 640x640 view, CPU)", None, "ms", "none stated (figure)", None,
                 f"cannot run here: {str(exc).splitlines()[0][:200]}")
            continue
        bench_ocr(backend, engine, data)
    bench_sam(args.sam_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
