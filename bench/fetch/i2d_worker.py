"""Run img2dataset once on a URL list and print one JSON line of figures.

Runs under bench/fetch/.venv-img2dataset (never imports corebuild). Called by run.py:

    .venv-img2dataset/bin/python i2d_worker.py --urls urls.txt --out DIR --mode noresize|resize [--cpu 0]

The process pins itself (and so the processes img2dataset spawns) to one core, imports
img2dataset, then times `download(...)`: wall clock, CPU of this process plus its reaped
children (the spawned download and logger processes), and the peak RSS of either.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import sys
import time


def cpu_s() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--urls", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", choices=("noresize", "resize"), required=True)
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--cpu", type=int, default=None)
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import warnings

    warnings.filterwarnings("ignore")
    from img2dataset import download

    if args.mode == "noresize":
        # Decode (cv2.imdecode validates the JPEG) but keep the original bytes: no resize, no re-encode.
        mode = dict(resize_mode="no", skip_reencode=True)
    else:
        # Its usual use: shorter side to 512, re-encoded as JPEG (quality 95, its default).
        mode = dict(image_size=512, resize_mode="keep_ratio")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), cpu_s()
    download(
        url_list=args.urls,
        input_format="txt",
        output_folder=args.out,
        output_format="parquet",
        processes_count=1,
        thread_count=args.threads,
        number_sample_per_shard=10**6,  # one shard: the one process does all of it
        timeout=10,
        retries=0,
        enable_wandb=False,
        **mode,
    )
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    count = ok = fdl = frs = 0
    shard_s = 0.0
    statuses: dict[str, int] = {}
    for f in glob.glob(os.path.join(args.out, "*_stats.json")):
        st = json.load(open(f))
        count += st["count"]
        ok += st["successes"]
        fdl += st["failed_to_download"]
        frs += st["failed_to_resize"]
        shard_s += st["end_time"] - st["start_time"]
        for k, v in st.get("status_dict", {}).items():
            statuses[k] = statuses.get(k, 0) + v
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    out_bytes = sum(os.path.getsize(p) for p in glob.glob(os.path.join(args.out, "*.parquet")))
    print(
        json.dumps(
            {
                "tool": "img2dataset",
                "mode": args.mode,
                "count": count,
                "ok": ok,
                "failed": count - ok,
                "failed_to_download": fdl,
                "failed_to_resize": frs,
                "statuses": statuses,
                "wall_s": wall,
                "cpu_s": cpu,
                "shard_s": shard_s,
                "rss_mb": rss / 1024,
                "rss_base_mb": rss0 / 1024,
                "parquet_mb": out_bytes / 2**20,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
