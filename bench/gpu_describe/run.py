"""GPU throughput of the `vllm` describer: images/s and output tokens/s on a 7B-class VLM.

Needs a GPU machine with vllm installed and the model's weights on local disk (nothing is
downloaded). It drives the same `VllmDescriber` the pipeline's describe stage uses, on synthetic street
views, and prints the `vllm bench throughput` command to compare against on the same model.
Usage: python bench/gpu_describe/run.py --model /models/Qwen2.5-VL-7B-Instruct [--n 256] [--batch 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from benchline import emit  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="local path (or name already in the HF cache) of the VLM")
    ap.add_argument("--n", type=int, default=256, help="records (4 views each)")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()

    from corebuild.stages.describe import DescribeConfig
    from corebuild.errors import ModelUnavailableError
    from corebuild.record import OcrText, Record, StreetCapture, StreetView
    from corebuild.synthetic.render import Camera, encode, render_street
    from corebuild.synthetic.world import World
    from corebuild.stages.describe.vllm_describe import VllmDescriber

    cfg = DescribeConfig(backend="vllm", prompt_id="cvg-progressive-v1", prompts_dir=str(ROOT / "corebuild" / "assets" / "prompts"), model=args.model)
    context = {"bench": {"name": "Demo town", "country": "CH"}}
    try:
        t_load = time.perf_counter()
        describer = VllmDescriber(cfg)
        load_s = time.perf_counter() - t_load
    except ModelUnavailableError as exc:
        print(f"cannot run here: {exc}", file=sys.stderr)
        emit("describe.vllm.images_per_s", "vllm describer images/s (GPU)", None, "images/s", "none stated (figure)", None, f"cannot run here: {str(exc).splitlines()[0][:200]}")
        return 2

    world = World.generate(7, 47.0, 8.0, 600, 600)
    records = []
    for i in range(args.n):
        road = world.roads[i % len(world.roads)].line
        p = road.interpolate((i * 37.0) % road.length)
        views = tuple(StreetView(h, 90, 0, 640, 640, encode(render_street(world, Camera(p.x, p.y, h)), "jpeg")) for h in (0, 90, 180, 270))
        ocr = (OcrText(0.0, "LUNA CAFE", 0.95, ((0, 0), (1, 0), (1, 1), (0, 1))),)
        records.append(Record(f"bench-s0-{i:07d}", "bench", 0, i, 47.0, 8.0, street=StreetCapture("synthetic", f"P{i}", 47.0, 8.0, None, 0, views), ocr=ocr))

    t0 = time.perf_counter()
    results = []
    for start in range(0, len(records), args.batch):
        results += describer.describe(records[start : start + args.batch], context)
    wall = time.perf_counter() - t0
    ok = [r for r in results if not r.failed]
    out_tokens = sum(r.description.completion_tokens or 0 for r in ok)
    reasons: dict[str, int] = {}
    for r in results:
        if r.failed:
            reasons[r.failure_reason] = reasons.get(r.failure_reason, 0) + 1
    print(f"model {args.model}: loaded in {load_s:.0f} s; {len(records)} records x 4 views in {wall:.1f} s")
    print(f"  {len(ok)} described, failed {reasons or 0}")
    print(f"  {4 * len(records) / wall:.1f} images/s, {len(records) / wall:.2f} descriptions/s, {out_tokens / wall:.0f} output tokens/s")
    print("compare: vllm bench throughput --model", args.model, "--backend vllm-chat --dataset-name random-mm",
          f"--num-prompts {args.n} --random-mm-base-items-per-request 4 --random-output-len 200")
    emit("describe.vllm.images_per_s", "vllm describer images/s (GPU)", round(4 * len(records) / wall, 2), "images/s", "none stated (figure)", None,
         f"{args.model}: {len(ok)}/{len(records)} described, {out_tokens / wall:.0f} output tokens/s, batch {args.batch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
