"""Describe-client overhead: the `openai` backend against a zero-latency local
OpenAI-compatible server on one core. Target (issue 7): >= 200 requests/s, memory bounded with
10k requests submitted at once. Prints figures; asserts nothing about speed.
Usage: python bench/bench_describe_client.py [--n 2000] [--inflight 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchline import emit  # noqa: E402
SERVER = r'''
import asyncio, json, sys
from aiohttp import web
ANSWER = json.dumps({"road": "r", "buildings": "b", "environment": "e", "signs": [], "description": " ".join(["A calm street with low houses and trees."] * 6)})
BODY = json.dumps({"model": "bench", "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ANSWER}}], "usage": {"prompt_tokens": 1000, "completion_tokens": 80}}).encode()
async def chat(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
async def main():
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
    print(f"http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
'''


def records(n: int):
    from corebuild.record import OcrText, Record, StreetCapture, StreetView

    from corebuild.synthetic.render import Camera, encode, render_street
    from corebuild.synthetic.world import World

    world = World.generate(7, 47.0, 8.0, 400, 400)  # a real-looking payload (~25 KB per view)
    road = world.roads[1].line.interpolate(50)
    views = tuple(StreetView(h, 90, 0, 640, 640, encode(render_street(world, Camera(road.x, road.y, h)), "jpeg")) for h in (0, 90, 180, 270))
    ocr = (OcrText(0.0, "LUNA CAFE", 0.9, ((0, 0), (1, 0), (1, 1), (0, 1))),)
    cap = StreetCapture("t", "p", 0, 0, None, 0, views)
    return [Record(f"b-s0-{i:07d}", "b", 0, i, 0, 0, street=cap, ocr=ocr) for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--inflight", type=int, default=10000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})  # the client on one core; the server on the other
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(server.pid, {os.cpu_count() - 1})
    url = server.stdout.readline().strip()
    try:
        from corebuild.stages.describe import DescribeConfig, load_describer

        d = load_describer(DescribeConfig(backend="openai", prompt_id="cvg-progressive-v1", prompts_dir=str(ROOT / "prompts"), base_url=url, model="bench", concurrency=64))
        ctx = {"b": {"name": "Bench", "country": "ZZ"}}
        d.describe(records(50), ctx)  # warm-up
        recs = records(args.n)
        t0, c0 = time.perf_counter(), time.process_time()
        out = d.describe(recs, ctx)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        ok = sum(not r.failed for r in out)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        big = records(args.inflight)
        t1 = time.perf_counter()
        out2 = d.describe(big, ctx)
        wall2 = time.perf_counter() - t1
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        d.close()
    finally:
        server.kill()
    rate = ok / wall
    print("openai describer, 4 x 640px images per request, concurrency 64, client on one core")
    print(f"{args.n} requests: {ok} ok, {wall:.2f} s wall, {cpu:.2f} s CPU -> {rate:.0f} requests/s ({ok / cpu:.0f} per CPU-s); target >= 200/s: {'met' if rate >= 200 else 'NOT met'}")
    print(f"{args.inflight} submitted at once: {sum(not r.failed for r in out2)} ok in {wall2:.1f} s; peak RSS {rss_before:.0f} MB before, {rss_after:.0f} MB after (bounded: bodies are built only when one of 64 slots is free)")
    print(json.dumps({"requests_per_s": round(rate, 1), "peak_rss_mb": round(rss_after)}))
    emit("describe.req_per_s", "describe client req/s (openai backend, one core)", round(rate, 1), "req/s", ">= 200 req/s, memory bounded",
         rate >= 200 and ok == args.n, f"{ok}/{args.n} ok; peak RSS {rss_after:.0f} MB with {args.inflight:,} submitted at once ({rss_before:.0f} MB before)")
    return 0 if ok == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
