"""`corebuild` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys

from .errors import CorebuildError


def _build(args: argparse.Namespace) -> int:
    from .build import run_build
    from .config import BuildConfig, RunnerConfig, WriteConfig
    from .ocr import OcrConfig
    from .providers import AerialConfig, StreetViewConfig
    from .providers.localfolder import LocalFolderConfig
    from .providers.mapillary import MapillaryConfig
    from .fetch import FetchConfig
    from .describe import DescribeConfig
    from .sample import SampleConfig
    from .secrets import parse_resource_name
    from .segment import SegmentConfig

    _check_numbers(args)
    workers = max(1, args.workers)
    # Each worker runs its own OCR sessions: share the cores instead of oversubscribing them.
    ocr_threads = args.ocr_threads if args.ocr_threads is not None else (max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0)
    street = StreetViewConfig(base_url=args.streetview_url) if args.streetview_url else StreetViewConfig()
    aerial = AerialConfig(url_template=args.aerial_url or "", api_key_env=args.aerial_key_env)
    http, http_by_stage = _http_configs(args)
    mapillary = MapillaryConfig(base_url=args.mapillary_url) if args.mapillary_url else MapillaryConfig()
    local = LocalFolderConfig(root=args.local_folder or "")
    secret_names = []
    for item in args.secret:
        env, sep, name = item.partition("=")
        if not sep or not env or not name.startswith("projects/"):
            raise CorebuildError(f"--secret wants ENV_NAME=projects/<project>/secrets/<name>[/versions/<v>], got {item.split('=', 1)[0]!r}=...")
        parse_resource_name(name, f"--secret {env!r}", "--secret")  # malformed names fail here, not on the workers
        secret_names.append((env, name))
    cfg = BuildConfig(
        region_id=args.region,
        output_dir=args.output,
        manifests_dir=args.manifests,
        sample=SampleConfig(seed=args.seed, min_spacing_m=args.min_spacing, limit=args.limit),
        fetch=FetchConfig(
            streetview=street,
            aerial=aerial,
            http=http,
            http_by_stage=http_by_stage,
            mapillary=mapillary,
            local=local,
            cache_url=args.cache,
            secret_names=tuple(secret_names),
        ),
        street_provider=args.street_provider,
        aerial_preset=args.aerial_preset,
        map_preset=args.map_preset,
        ocr=OcrConfig(threads=ocr_threads, backend=args.ocr_backend, easyocr_model_dir=args.easyocr_dir or ""),
        segment=SegmentConfig(
            prompts_dir=args.prompts,
            backend=args.segment,
            model_type=args.sam_model,
            checkpoint=args.sam_checkpoint or os.environ.get("COREBUILD_SAM_CHECKPOINT", ""),
            labeler=args.labeler,
            clip_checkpoint=args.clip_checkpoint or os.environ.get("COREBUILD_CLIP_CHECKPOINT", ""),
        ),
        describe=DescribeConfig(
            backend=args.describer,
            prompt_id=args.prompt or ("template-v1" if args.describer == "template" else "cvg-progressive-v1"),
            prompts_dir=args.prompts,
            base_url=args.llm_url or "",
            model=args.llm_model or "",
            api_key_env=args.llm_key_env,
            api_key_secret=dict(secret_names).get(args.llm_key_env or "", ""),
            grounding=args.grounding,
            self_review=args.self_review,
        ),
        write=WriteConfig(unit_points=args.unit_points, shard_bytes=int(args.shard_mb * 1024 * 1024)),
        runner=RunnerConfig(
            runner=args.runner,
            direct_num_workers=workers,
            direct_running_mode="multi_processing" if workers > 1 else "in_memory",
            extra_args=tuple(args.beam_args),
        ),
    )
    if args.dry_run_job:
        from .dataflow import dry_run_requested

        if not dry_run_requested(args.beam_args):
            raise CorebuildError("--dry-run-job writes the job of a dry run: add the Beam option --dry_run=True after -- (with --runner DataflowRunner)")
    from .dataflow import DryRunResult

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

    from .redact import redact_text

    argv = list(argv)
    if not any(a == "--retry-failed" or a.startswith("--retry-failed=") for a in argv[: argv.index("--") if "--" in argv else len(argv)]):
        argv.insert(argv.index("--") if "--" in argv else len(argv), "--retry-failed")
    return redact_text(shlex.join(["corebuild", *argv]))


def _retry_choice(text: str) -> str:
    """`--retry-failed` value: every item a known failure kind, a reason of one, or a class."""
    from .failures import KINDS, PERMANENT, TRANSIENT, kind_of

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
    )
    for flag, value, ok, want in checks:
        if not ok:
            raise CorebuildError(f"{flag} must be {want}, got {value}")


def _http_configs(args: argparse.Namespace):
    """(HttpConfig, FetchConfig.http_by_stage) from --rate, --concurrency and the repeatable
    --retry-attempts / --max-retry-wait [STAGE=]VALUE: a bare value sets every stage, a STAGE=
    one wins over it whatever the order. Defaults stay HttpConfig's."""
    from dataclasses import replace

    from .fetch import FETCH_STAGES
    from .providers import HttpConfig

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
    base = HttpConfig(rate_per_s=args.rate, concurrency=args.concurrency, **fields.pop("", {}))
    return base, tuple((stage, replace(base, **f)) for stage, f in sorted(fields.items()))


def _serve(args: argparse.Namespace) -> int:
    from .regions import load_region
    from .synthetic.server import serve_forever
    from .synthetic.world import World

    region = load_region(args.region, args.manifests)
    if region.imagery != "synthetic":
        raise CorebuildError(f"region {region.id!r} has no synthetic world (its manifest says imagery={region.imagery!r})")
    faults = None
    if args.fault_rate:
        from .synthetic.faults import FaultConfig

        kinds = tuple(k for k in (args.fault_kinds or "").split(",") if k)
        try:
            faults = FaultConfig(rate=args.fault_rate, seed=args.fault_seed, persistent=args.fault_persistent, **({"kinds": kinds} if kinds else {}))
        except ValueError as exc:
            raise CorebuildError(f"synthetic serve: {exc}") from None
    serve_forever(World.for_region(region), args.host, args.port, faults)
    return 0


def _regions(args: argparse.Namespace) -> int:
    from collections import defaultdict

    from .regions import load_all

    if args.regions_command == "generate":
        from .assets import locate
        from .regions_gen import write_manifests

        out = locate(args.manifests)  # by default the packaged directory (in a checkout: the repository's)
        paths = write_manifests(out)
        print(f"wrote {len(paths)} region manifests to {out}")
        return 0
    regions, errors = load_all(args.manifests)
    if args.regions_command == "list":
        print(f"{'id':<32} {'country':<7} {'continent':<14} {'quota':>7} {'km²':>8}  ocr groups")
        for r in regions:
            groups = " | ".join("+".join(g) for g in r.ocr_languages)
            print(f"{r.id:<32} {r.country:<7} {r.continent:<14} {r.quota:>7} {r.area_km2():>8.1f}  {groups}")
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


def _models(args: argparse.Namespace) -> int:
    from .models import check_models, default_easyocr_dir, format_table

    rows = check_models(
        args.manifests,
        args.easyocr_dir or default_easyocr_dir(),
        args.sam_checkpoint or os.environ.get("COREBUILD_SAM_CHECKPOINT"),
        args.clip_checkpoint or os.environ.get("COREBUILD_CLIP_CHECKPOINT"),
        prompts_dir=args.prompts,
    )
    print(format_table(rows))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from .stats import build_texts, format_stats, text_stats
    from .storage import open_storage

    output, _, region = args.build.rstrip("/").rpartition("/")
    texts = build_texts(open_storage(output or "."), region)
    if not texts:
        raise CorebuildError(f"{args.build}: no kept descriptions in its shards")
    print(format_stats(text_stats(texts)))
    return 0


def _audit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .audit import render_csv, render_html, sample_rows
    from .storage import open_storage

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
        from .redact import redact_text

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


def add_data_flags(p: argparse.ArgumentParser, prompts: bool = False) -> None:
    """--manifests (and --prompts): a directory, by default the data packaged with corebuild,
    whatever the working directory (configs record it by the name given here)."""
    from .assets import MANIFESTS, PROMPTS

    p.add_argument("--manifests", default=MANIFESTS, metavar="DIR", help=f"region manifests directory (default {MANIFESTS}: the packaged ones)")
    if prompts:
        p.add_argument("--prompts", default=PROMPTS, metavar="DIR", help=f"prompt sets directory, segment vocabulary included (default {PROMPTS}: the packaged ones)")


def parser() -> argparse.ArgumentParser:
    # Choice flags are checked against the registries here, before any server or worker starts
    # (names only: no backend, model or torch is imported).
    from .describe import DescribeConfig, describer_names
    from .ocr import OCR_BACKENDS, OcrConfig
    from .providers import AERIAL_PRESETS, STREET_PROVIDERS
    from .segment import LABELER_MODULES, SAM_CHECKPOINTS, SEGMENTER_MODULES, SegmentConfig

    p = argparse.ArgumentParser(prog="corebuild", description=__doc__)
    p.add_argument(
        "--log-level",
        default=os.environ.get("COREBUILD_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="corebuild's log level (default INFO, or $COREBUILD_LOG_LEVEL); DEBUG also turns on the libraries' debug logs",
    )
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build one region's shards")
    b.add_argument("--region", required=True, help="region id (a file in --manifests)")
    b.add_argument("--output", default="build", help="output root; the build goes to <output>/<region>/")
    add_data_flags(b, prompts=True)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--limit", type=int, default=None, help="only the first N sampled points")
    b.add_argument("--min-spacing", type=float, default=25.0, help="metres between sampled points")
    b.add_argument("--workers", type=int, default=1, help="DirectRunner worker processes")
    b.add_argument("--unit-points", type=int, default=100, help="points per work unit: the grain of resume and the most rows per shard")
    b.add_argument("--shard-mb", type=float, default=256.0, help="roll over to a new shard past this size")
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
    b.add_argument("--ocr-threads", type=int, default=None, help="ONNX threads per worker (default: cores / workers)")
    b.add_argument("--ocr-backend", default=OcrConfig.backend, choices=sorted(OCR_BACKENDS), help="rapidocr (offline default), easyocr, or off (no OCR: empty evidence, recorded as such)")
    b.add_argument("--easyocr-dir", default=None, help="easyocr weights directory")
    b.add_argument("--segment", default=SegmentConfig.backend, choices=["off", *SEGMENTER_MODULES], help="segmentation backend: off (default) or sam")
    b.add_argument("--sam-model", default=SegmentConfig.model_type, choices=sorted(SAM_CHECKPOINTS), help="SAM model type")
    b.add_argument("--sam-checkpoint", default=None, help="SAM weights file (default $COREBUILD_SAM_CHECKPOINT)")
    b.add_argument("--labeler", default=SegmentConfig.labeler, choices=["off", *LABELER_MODULES], help="mask labels: off (default) or clip")
    b.add_argument("--clip-checkpoint", default=None, help="open_clip weights file (default $COREBUILD_CLIP_CHECKPOINT)")
    b.add_argument("--describer", default=DescribeConfig.backend, choices=describer_names(), help="template (offline default), openai (any OpenAI-compatible endpoint, e.g. vllm serve) or vllm (in-process on GPU workers)")
    b.add_argument("--prompt", default=None, help="prompt set id in --prompts (default: template-v1 or cvg-progressive-v1)")
    b.add_argument("--llm-url", default=None, help="base URL of the /v1/chat/completions server")
    b.add_argument("--llm-model", default=None, help="model name to request")
    b.add_argument("--llm-key-env", default=None, help="env var holding the endpoint's bearer token, if it needs one")
    b.add_argument("--grounding", default="fail", choices=["fail", "remove", "off"], help="sign text the model invents: fail the row (default) or remove it")
    b.add_argument("--self-review", action="store_true", help="model backends: a second pass where the model checks its description against the images")
    b.add_argument("--runner", default="DirectRunner")
    b.add_argument("--streetview-url", default=None, help="Street View API base URL (default: Google's)")
    b.add_argument("--aerial-url", default=None, help="XYZ tile URL template, e.g. https://host/{z}/{x}/{y}.png")
    b.add_argument("--aerial-key-env", default=None, help="env var holding the key for {key} in --aerial-url")
    b.add_argument("--street-provider", default=None, choices=sorted(STREET_PROVIDERS), help="google_streetview (default), mapillary or local; overrides the manifest")
    b.add_argument("--aerial-preset", default=None, choices=sorted(AERIAL_PRESETS), help="a named aerial source (see README); overrides the manifest")
    b.add_argument("--map-preset", default=None, choices=sorted(AERIAL_PRESETS), help="add a map-tile modality, e.g. osm")
    b.add_argument("--mapillary-url", default=None, help="Mapillary Graph API base URL (default: graph.mapillary.com)")
    b.add_argument("--local-folder", default=None, help="folder of geotagged JPEGs for --street-provider local")
    b.add_argument("--cache", default=None, help="response cache (directory or gs://bucket/prefix): reruns do not refetch")
    b.add_argument(
        "--secret", action="append", default=[], metavar="ENV=projects/P/secrets/NAME",
        help="read the key named by env var ENV from Secret Manager on the workers (Dataflow); repeatable",
    )
    b.add_argument("--rate", type=float, default=0.0, help="requests/s per provider per worker, any positive number (0.2: one every 5 s; 0: unlimited)")
    b.add_argument(
        "--retry-attempts", action="append", default=[], metavar="[STAGE=]N",
        help="attempts per request, the first included; STAGE: street, aerial or map (bare: every stage); repeatable (default: fetch.http.attempts)",
    )
    b.add_argument(
        "--max-retry-wait", action="append", default=[], metavar="[STAGE=]SECONDS",
        help="the longest Retry-After honoured; a longer one fails the record as transient (see --retry-failed); "
        "STAGE as for --retry-attempts; repeatable (default: fetch.http.max_retry_wait_s)",
    )
    b.add_argument("--concurrency", type=int, default=16, help="HTTP requests in flight per worker")
    b.add_argument("beam_args", nargs="*", help="extra Beam pipeline options after --")
    b.set_defaults(func=_build)

    rg = sub.add_parser("regions", help="region manifests: generate, list, check")
    rg.add_argument("regions_command", choices=["generate", "list", "check"])
    add_data_flags(rg)
    rg.set_defaults(func=_regions)

    m = sub.add_parser("models", help="which model backends can run here")
    m.add_argument("models_command", choices=["check"])
    add_data_flags(m, prompts=True)
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
        ("splits", "splits", "train/val/test assignments without geographic leakage (spatial blocks, min distance, continents)"),
        ("inspect", "report", "static HTML report of a build: gallery, coverage maps, failure reasons, text statistics"),
        ("estimate", "estimate", "requests, bytes, CPU/GPU hours and cost of building regions, with every assumption printed"),
    ):
        sp = sub.add_parser(name, help=help_)
        importlib.import_module(f".{module}", __package__).add_arguments(sp)
        sp.set_defaults(func=lambda args, module=module: importlib.import_module(f".{module}", __package__).main(args))

    s = sub.add_parser("synthetic", help="the synthetic imagery world")
    ssub = s.add_subparsers(dest="synthetic_command", required=True)
    serve = ssub.add_parser("serve", help="serve a region's synthetic world (Street View, XYZ, Mapillary and OpenAI chat wire formats)")
    serve.add_argument("--region", default="demo")
    add_data_flags(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--fault-rate", type=float, default=0.0, help="share of requests that misbehave (429, 5xx, timeouts, resets, cut bodies, placeholder tiles, malformed LLM JSON)")
    serve.add_argument("--fault-seed", type=int, default=0)
    serve.add_argument("--fault-kinds", default=None, help="comma-separated subset of the fault kinds (default: all)")
    serve.add_argument("--fault-persistent", action="store_true", help="faulty requests fail on every attempt (default: the first one or two)")
    serve.set_defaults(func=_serve)
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
        from .redact import redact_text

        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `corebuild regions list | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
