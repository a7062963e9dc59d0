"""Demo yield (kept / sampled) over the whole area and along the demo's road network.

Builds the demo's first N kept samples twice, with the default quota of kept samples (top-up
rounds): once sampling over the area, once along the roads the synthetic world writes
(`corebuild synthetic roads`). Prints each build's yield, rounds and points sampled; issue 18's
acceptance is a higher yield along roads.
Usage:
    python bench/bench_yield.py [--limit N (default 200; 0: the whole demo, 600)] [--workers W]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchline import emit  # noqa: E402


def build(out: str, limit: int, workers: int, extra: list[str]) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "corebuild", "build", "--region", "demo", "--output", out, "--workers", str(workers), "--no-progress", *extra]
    cmd += ["--limit", str(limit)] if limit else []
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads((Path(out) / "demo" / "manifest.json").read_text()), time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=200, help="kept samples (0: the whole demo)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        roads = f"{tmp}/demo_roads.osm.pbf"
        subprocess.run([sys.executable, "-m", "corebuild", "synthetic", "roads", "--region", "demo", "--out", roads], cwd=ROOT, check=True, capture_output=True)
        area, area_s = build(f"{tmp}/area", args.limit, args.workers, [])
        along, along_s = build(f"{tmp}/roads", args.limit, args.workers, ["--roads", roads])
    what = f"first {args.limit} kept" if args.limit else "whole demo"
    for key, name, m, wall in (("area", "over the area", area, area_s), ("roads", "along roads", along, along_s)):
        q, c = m["quota"], m["counts"]
        detail = (
            f"{c['kept']} kept of {c['sampled']} sampled in {q['rounds']} round(s) ({what}); "
            + (", ".join(f"{k} {v}" for k, v in c["failed_by_reason"].items()) or "no failures")
            + f"; {wall:.0f} s; quota {'met' if not q['missing'] else 'short: ' + q['shortfall']}"
        )
        print(f"demo yield {name}: {100 * q['yield']:.1f}% ({detail})")
        higher = along["quota"]["yield"] > area["quota"]["yield"] if key == "roads" else None
        emit(f"yield.{key}", f"demo yield {name} (kept / sampled)", round(100 * q["yield"], 1), "%",
             "higher along roads than over the area (issue 18)" if key == "roads" else "none stated (figure)", higher, detail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
