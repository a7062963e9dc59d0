"""Run every benchmark in bench/ and print one table: figure | value | target | met.

Each benchmark runs as its own process, in order, with a time limit; its human output streams
through, and its `BENCH {...}` lines (bench/benchline.py) become the rows. A benchmark that
fails, times out or cannot run here gives rows that say so; the table is printed anyway. Every
run is saved in bench/results/<bench>.json (bench/results/quick/ for --quick), so a table can be
made again from saved runs (--use-saved) without running anything. The table is also written
as Markdown (default bench/results.md), to paste into a note.

    python bench/table.py                           # everything (the 100k load build takes ~1.5 h)
    python bench/table.py --only sampling,write     # a subset
    python bench/table.py --use-saved load          # run the others, take load from its last saved run
    python bench/table.py --use-saved all           # no runs: the table from saved results
    python bench/table.py --quick                   # small sizes of each (minutes), saved apart
    python bench/table.py --vllm-model /models/Qwen2.5-VL-7B-Instruct   # also the GPU describer
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from benchline import parse  # noqa: E402


@dataclass(frozen=True)
class Expected:
    key: str
    name: str
    target: str


@dataclass(frozen=True)
class Bench:
    name: str
    script: str  # relative to the repository root
    timeout_s: float
    rows: tuple[Expected, ...]  # the rows the table always shows for it, in order
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ()
    quick_timeout_s: float = 600
    note: str = ""
    needs: Optional[str] = None  # an option without which it is not run (the GPU bench)


BENCHES: tuple[Bench, ...] = (
    Bench("sampling", "bench/bench_sampling.py", 900, (
        Expected("sampling.points_per_s", "sampling points/s (all 1,034,786 points, one core)", ">= 103,479 points/s (<= 10 s; stretch <= 5 s)"),
        Expected("sampling.peak_rss", "sampling peak RSS", "< 2 GB"),
    )),
    Bench("fetch", "bench/bench_fetch.py", 1800, (
        Expected("fetch.raw_vs_img2dataset", "fetch images/s vs img2dataset (HttpClient+decode)", ">= 1x img2dataset images/s (stretch 1.5x)"),
        Expected("fetch.capture_vs_img2dataset", "fetch images/s vs img2dataset (StreetView.capture)", ">= 1x img2dataset images/s (stretch 1.5x)"),
    ), quick_args=("--n", "500", "--repeat", "1")),
    Bench("evidence", "bench/bench_evidence.py", 1200, (
        Expected("ocr.rapidocr.ms_per_image", "OCR ms/image (rapidocr, latin signs, 640x640 view, one thread)", "none stated (figure)"),
        Expected("ocr.rapidocr.accuracy", "OCR character accuracy (rapidocr, clean latin signs)", ">= 0.95"),
        Expected("ocr.rapidocr-v5.japanese.accuracy", "OCR character accuracy (rapidocr-v5, clean japanese signs)", "none stated (figure)"),
        Expected("ocr.easyocr.accuracy", "OCR character accuracy (easyocr, clean latin signs)", "none stated (figure)"),
        Expected("ocr.runtime.openvino", "OCR on openvino (rapidocr, latin, detection at 448 px): clean-sign accuracy", ">= 0.95"),
    ), quick_args=("--views", "12", "--runtime-views", "40")),
    Bench("describe_client", "bench/bench_describe_client.py", 600, (
        Expected("describe.req_per_s", "describe client req/s (openai backend, one core)", ">= 200 req/s, memory bounded"),
    ), quick_args=("--n", "500", "--inflight", "2000")),
    Bench("write", "bench/bench_write.py", 1200, (
        Expected("write.ratio", "Parquet MB/s vs raw disk (ShardWriter)", ">= 0.5x raw disk, memory bounded"),
    ), quick_args=("--rows", "400", "--repeat", "1", "--shard-mb", "64")),
    Bench("demo", "bench/bench_demo.py", 1800, (
        Expected("demo.wall_s", "demo end-to-end time", "<= 90 s (issue 21); >= 500 rows, consistent (issue 3)"),
    ), args=("--limit", "0"), quick_args=("--limit", "40")),
    Bench("yield", "bench/bench_yield.py", 2400, (
        Expected("yield.area", "demo yield over the area (kept / sampled)", "none stated (figure)"),
        Expected("yield.roads", "demo yield along roads (kept / sampled)", "higher along roads than over the area (issue 18)"),
    ), quick_args=("--limit", "40")),
    Bench("load", "bench/bench_load.py", 4 * 3600, (
        Expected("load.peak_rss", "100k build peak RSS (process tree)", "< 4 GB at 100k"),
        Expected("load.rows_per_s", "100k build rows/s", "none stated (figure)"),
    ), quick_args=("--quick",), note="OCR off, small images: see bench/bench_load.py"),
    Bench("grouping", "bench/bench_load.py", 2 * 3600, (
        Expected("load.grouping_per_point.10k", "grouping memory per point at 10k (launcher + workers)", "<= 2,000 B per point"),
        Expected("load.grouping_per_point.100k", "grouping memory per point at 100k (launcher + workers)", "<= 2,000 B per point"),
        Expected("load.grouping_per_point.1M", "grouping memory per point at 1M (launcher + workers)", "<= 2,000 B per point"),
    ), args=("--grouping", "10000,100000,1000000"), quick_args=("--grouping", "2000,10000"),
        note="sample + locate + dedupe + group only (RunnerConfig.stop_after): see bench/bench_load.py"),
    Bench("gpu_describe", "bench/gpu_describe/run.py", 3600, (
        Expected("describe.vllm.images_per_s", "vllm describer images/s (GPU)", "none stated (figure)"),
    ), needs="vllm_model"),
)
BY_NAME = {b.name: b for b in BENCHES}


# ------------------------------------------------------------------------------ running
def _kill(proc: subprocess.Popen) -> None:
    """SIGTERM to the bench's process group (bench_load then stops its own build tree), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_bench(bench: Bench, args: list[str], timeout_s: float, echo: bool = True) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / bench.script), *args]
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    lines: list[str] = []

    def pump():
        for line in proc.stdout:
            lines.append(line)
            if echo:
                sys.stdout.write("  | " + line)
                sys.stdout.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(proc)
    except KeyboardInterrupt:
        _kill(proc)
        raise
    reader.join(10)
    output = "".join(lines)
    return {
        "bench": bench.name, "cmd": [Path(sys.executable).name, bench.script, *args], "started_utc": started,
        "wall_s": round(time.perf_counter() - t0, 1), "rc": None if timed_out else proc.returncode, "timed_out": timed_out,
        "timeout_s": timeout_s, "rows": parse(output), "tail": output[-4000:],
    }


def results_dir(base: Path, quick: bool) -> Path:
    return base / "quick" if quick else base


def save(run: dict[str, Any], where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{run['bench']}.json").write_text(json.dumps(run, indent=1, ensure_ascii=False))


def load_saved(name: str, where: Path) -> Optional[dict[str, Any]]:
    try:
        run = json.loads((where / f"{name}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    run["saved"] = True
    return run


# ------------------------------------------------------------------------------ the table
def _why_no_rows(run: Optional[dict[str, Any]]) -> str:
    if run is None:
        return "not run"
    if run.get("skipped"):
        return run["skipped"]
    if run.get("timed_out"):
        return f"timed out after {run['timeout_s']:,.0f} s"
    tail = [ln.strip() for ln in (run.get("tail") or "").splitlines() if ln.strip() and not ln.startswith("BENCH ")]
    cannot = next((ln for ln in reversed(tail) if "cannot run here" in ln), None)
    if cannot:
        return cannot[cannot.index("cannot run here"):][:200]
    last = tail[-1][:200] if tail else "no output"
    return f"failed (rc {run.get('rc')}) after {run.get('wall_s', 0):,.0f} s: {last}"


def rows_for(bench: Bench, run: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bench's expected rows (filled from its BENCH lines, the last line of a key winning),
    then any other rows it printed; rows it did not print say why."""
    got: dict[str, dict[str, Any]] = {}
    for row in (run or {}).get("rows", []):
        got[row["key"]] = row
    why = _why_no_rows(run)
    problem = None
    if run and not run.get("skipped") and (run.get("timed_out") or run.get("rc")):
        problem = why
    out = []
    for exp in bench.rows:
        row = got.pop(exp.key, None)
        if row is None:
            out.append({"key": exp.key, "name": exp.name, "value": None, "unit": "", "target": exp.target, "met": None, "detail": why, "missing": True})
        else:
            out.append(dict(row))
    out += [dict(r) for r in got.values()]
    for row in out:
        row["bench"] = bench.name
        if run and run.get("saved") and not row.get("missing"):
            row["detail"] = (row.get("detail") or "") + f" [saved run of {run.get('started_utc', '?')[:10]}]"
        if problem and not row.get("missing"):
            row["detail"] = (row.get("detail") or "") + f" [bench: {problem}]"
    return out


def fmt_value(value: Any, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value} {unit}".strip()
    a = abs(value)
    num = f"{value:,.0f}" if a >= 1000 else f"{value:.0f}" if a >= 100 else f"{value:.1f}" if a >= 10 else f"{value:.2f}" if a >= 0.1 or a == 0 else f"{value:.3g}"
    if unit == "x":
        return f"{num}×"
    return f"{num} {unit}".strip()


def fmt_met(row: dict[str, Any]) -> str:
    if row.get("missing") or row.get("value") is None:
        return "—"
    met = row.get("met")
    return "n/a" if met is None else "yes" if met else "NO"


HEAD = ("figure", "value", "target", "met")


def table_cells(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [(r["name"], fmt_value(r.get("value"), r.get("unit", "")), r.get("target", ""), fmt_met(r)) for r in rows]


def format_text(rows: list[dict[str, Any]]) -> str:
    cells = table_cells(rows)
    widths = [max(len(c[i]) for c in [HEAD, *cells]) for i in range(4)]

    def line(c):
        return "  ".join((c[i].rjust(widths[i]) if i == 1 else c[i].ljust(widths[i])) for i in range(4)).rstrip()

    out = [line(HEAD), line(tuple("-" * w for w in widths))] + [line(c) for c in cells]
    notes = [f"  {r['name']}: {r['detail']}" for r in rows if r.get("detail")]
    return "\n".join(out + (["", "notes:"] + notes if notes else []))


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_markdown(rows: list[dict[str, Any]], header: str = "") -> str:
    out = [header, ""] if header else []
    out += ["| figure | value | target | met | notes |", "|---|---:|---|---|---|"]
    for r, c in zip(rows, table_cells(rows)):
        out.append("| " + " | ".join(_md(x) for x in (*c, r.get("detail", ""))) + " |")
    return "\n".join(out) + "\n"


def machine() -> str:
    try:
        mem = next(int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.startswith("MemTotal:")) / 1024 / 1024
        mem_s = f", {mem:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        mem_s = ""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    return f"{platform.node() or 'host'}: {os.cpu_count()} cores{mem_s}, Python {platform.python_version()}" + (
        f", commit {commit}{' + local changes' if dirty else ''}" if commit else "")


# ------------------------------------------------------------------------------ command line
def _names(text: Optional[str], flag: str) -> list[str]:
    if not text:
        return []
    if text == "all":
        return list(BY_NAME)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"{flag}: unknown bench(es) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    return names


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Run bench/ and print one table", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(BY_NAME)}")
    ap.add_argument("--skip", default=None, help="comma-separated benches to leave out")
    ap.add_argument("--use-saved", default=None, metavar="NAMES|all", help="take these benches from their last saved run instead of running them")
    ap.add_argument("--quick", action="store_true", help="small sizes (minutes in all); saved under bench/results/quick/")
    ap.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every bench's time limit")
    ap.add_argument("--results", default=str(HERE / "results"), help="where runs are saved (default bench/results/)")
    ap.add_argument("--md", default=None, help="Markdown copy of the table (default bench/results.md, bench/results-quick.md with --quick; '' for none)")
    ap.add_argument("--vllm-model", default=os.environ.get("COREBUILD_VLLM_MODEL"), help="run bench/gpu_describe with this model (a GPU machine with vllm)")
    ap.add_argument("--quiet", action="store_true", help="do not echo the benches' own output")
    args = ap.parse_args(argv)

    selected = _names(args.only, "--only") or list(BY_NAME)
    skip = set(_names(args.skip, "--skip"))
    saved = set(_names(args.use_saved, "--use-saved"))
    where = results_dir(Path(args.results), args.quick)
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for name in selected:
        if name in skip:
            continue
        bench = BY_NAME[name]
        if name in saved:
            run = load_saved(name, where) or {"bench": name, "skipped": f"no saved run in {where}"}
        elif bench.needs and not getattr(args, bench.needs):
            run = {"bench": name, "skipped": "not run: needs a GPU machine with vllm and --vllm-model PATH"}
        else:
            bench_args = list(bench.quick_args if args.quick else bench.args)
            if bench.needs == "vllm_model":
                bench_args = ["--model", args.vllm_model, *bench_args]
            timeout = (bench.quick_timeout_s if args.quick else bench.timeout_s) * args.timeout_scale
            print(f"== {name}: {' '.join([bench.script, *bench_args])} (limit {timeout:,.0f} s)", flush=True)
            run = run_bench(bench, bench_args, timeout, echo=not args.quiet)
            save(run, where)
            print(f"== {name}: {'timed out' if run['timed_out'] else 'rc ' + str(run['rc'])} in {run['wall_s']:,.0f} s, {len(run['rows'])} BENCH line(s)\n", flush=True)
        rows += rows_for(bench, run)

    mode = "quick sizes (--quick)" if args.quick else "full sizes"
    header = f"Benchmarks, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {mode}; {machine()}"
    print(header)
    print(format_text(rows))
    print(f"\n({time.perf_counter() - t_all:,.0f} s)")
    if args.md is None:
        args.md = str(HERE / ("results-quick.md" if args.quick else "results.md"))
    if args.md:
        Path(args.md).write_text(format_markdown(rows, f"**{header}**"), encoding="utf-8")
        print(f"Markdown: {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
