"""Demo build throughput: wall time, rows/s and seconds per record in each stage.

Prints figures, asserts nothing about speed (machines differ). Usage:
    python bench/bench_demo.py [--limit N] [--workers W]
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=120)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "corebuild", "build", "--region", "demo", "--output", out, "--workers", str(args.workers), "--limit", str(args.limit)]
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode:
            print(r.stderr[-3000:], file=sys.stderr)
            return r.returncode
        m = json.loads((Path(out) / "demo" / "manifest.json").read_text())
        stages = defaultdict(list)
        for f in glob.glob(f"{out}/demo/shards/*.parquet"):
            for timings in pq.read_table(f, columns=["stage_seconds"]).column(0).to_pylist():
                for t in timings or []:
                    stages[t["stage"]].append(t["seconds"])
    c = m["counts"]
    print(f"demo build, {args.limit} points, {args.workers} workers: wall {wall:.1f} s (pipeline {m['timings']['pipeline_s']:.1f} s)")
    print(f"rows {c['rows']} (kept {c['kept']}, failed {c['failed']}): {c['rows'] / wall:.2f} rows/s end to end, {c['rows'] / m['timings']['pipeline_s']:.2f} rows/s in the pipeline")
    for stage, xs in stages.items():
        print(f"  {stage:<9} median {statistics.median(xs) * 1000:7.1f} ms/record  (n={len(xs)}, per worker, overlapping I/O)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
