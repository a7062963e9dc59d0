"""The command line as a user meets it: real subprocesses, exit codes, messages."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _cli(*args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, "-m", "corebuild", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_missing_manifest_is_a_clear_error_without_traceback(tmp_path):
    r = _cli("build", "--region", "atlantis", "--output", str(tmp_path))
    assert r.returncode == 2
    assert "region_manifests/atlantis.json: <file>: no manifest for region 'atlantis'" in r.stderr
    assert "Traceback" not in r.stderr


def test_real_providers_without_a_key_fail_before_any_work(tmp_path, manifests_dir):
    doc = json.loads((manifests_dir / "tiny.json").read_text())
    doc.update(id="real", imagery="providers")
    doc.pop("synthetic_world")
    (tmp_path / "real.json").write_text(json.dumps(doc))
    env_less = {k: v for k, v in __import__("os").environ.items() if k != "GOOGLE_MAPS_API_KEY"}
    r = subprocess.run(
        [sys.executable, "-m", "corebuild", "build", "--region", "real", "--manifests", str(tmp_path), "--output", str(tmp_path / "o")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env_less,
    )
    assert r.returncode == 2 and "set GOOGLE_MAPS_API_KEY" in r.stderr and "Traceback" not in r.stderr


def test_build_command_end_to_end_with_synthetic_server_subprocess(tmp_path, manifests_dir):
    r = _cli("build", "--region", "tiny", "--manifests", str(manifests_dir), "--limit", "6", "--output", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    line = r.stdout.strip().splitlines()[-1]
    m = json.loads((tmp_path / "tiny" / "manifest.json").read_text())
    c, q = m["counts"], m["quota"]
    assert m["consistent"] and c["kept"] == 6 and q["missing"] == 0  # --limit 6: six kept samples
    assert line.startswith(f"tiny: sampled {c['sampled']} / kept 6 / failed {c['failed']}") and str(tmp_path / "tiny" / "shards") in line
    assert f"quota 6 kept met; yield {100 * q['yield']:.1f}% in {q['rounds']} round" in line


def _build_args(*flags):
    from corebuild.cli import parser

    return parser().parse_args(["build", "--region", "tiny", *flags])


def test_retry_flags_set_every_stage_or_one():
    from corebuild.cli import _check_numbers, _http_configs
    from corebuild.stages.fetch.fetcher import FetchConfig
    from corebuild.stages.fetch.http import HttpConfig

    args = _build_args("--retry-attempts", "street=1", "--retry-attempts", "6", "--max-retry-wait", "map=300", "--rate", "0.2")
    _check_numbers(args)  # 0.2/s is a rate like any other
    http, by_stage = _http_configs(args)
    fetch = FetchConfig(http=http, http_by_stage=by_stage)
    got = {s: (fetch.http_for(s).attempts, fetch.http_for(s).max_retry_wait_s, fetch.http_for(s).rate_per_s) for s in ("street", "aerial", "map")}
    default_wait = HttpConfig().max_retry_wait_s
    assert got == {"street": (1, default_wait, 0.2), "aerial": (6, default_wait, 0.2), "map": (6, 300.0, 0.2)}
    assert _http_configs(_build_args()) == (HttpConfig(), ())  # no flag: the dataclass defaults


def test_bad_retry_flags_are_one_line_errors(tmp_path, manifests_dir):
    import pytest

    from corebuild.cli import _http_configs
    from corebuild.errors import CorebuildError

    for flag, value, words in (
        ("--retry-attempts", "0", "--retry-attempts must be an integer >= 1, got '0'"),
        ("--retry-attempts", "aerial=1.5", "--retry-attempts must be an integer >= 1, got 'aerial=1.5'"),
        ("--retry-attempts", "describe=2", "--retry-attempts wants [STAGE=]VALUE with STAGE one of street, aerial, map, got 'describe=2'"),
        ("--max-retry-wait", "map=-1", "--max-retry-wait must be a finite number of seconds >= 0, got 'map=-1'"),
        ("--max-retry-wait", "inf", "--max-retry-wait must be a finite number of seconds >= 0, got 'inf'"),
    ):
        with pytest.raises(CorebuildError) as err:
            _http_configs(_build_args(flag, value))
        assert str(err.value) == words
    r = _cli("build", "--region", "tiny", "--manifests", str(manifests_dir), "--output", str(tmp_path), "--retry-attempts", "street=0", timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "error: --retry-attempts must be an integer >= 1, got 'street=0'", r.stderr


def test_retry_failed_flag_and_the_command_it_prints():
    from corebuild.cli import parser, retry_command

    p = parser()
    assert p.parse_args(["build", "--region", "demo"]).retry_failed is None
    assert p.parse_args(["build", "--region", "demo", "--retry-failed"]).retry_failed == "transient"
    assert p.parse_args(["build", "--region", "demo", "--retry-failed", "street.over_query_limit,http_5xx"]).retry_failed == "street.over_query_limit,http_5xx"
    with pytest.raises(SystemExit):
        p.parse_args(["build", "--region", "demo", "--retry-failed", "street.no_such_kind"])
    cmd = retry_command(["build", "--region", "x", "--aerial-url", "https://h/{z}/{x}/{y}?key=SECRET123", "--", "--project=p"])
    assert cmd.endswith("--retry-failed -- --project=p") and "SECRET123" not in cmd
    assert retry_command(["build", "--region", "x", "--retry-failed"]).count("--retry-failed") == 1


@pytest.mark.parametrize(
    "flag", ["--ocr-backend", "--describer", "--segment", "--sam-model", "--labeler", "--street-provider", "--aerial-preset", "--map-preset", "--grounding"]
)
def test_every_choice_flag_is_checked_by_argparse_before_any_work(flag, capsys):
    from corebuild.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["build", "--region", "demo", flag, "no-such-backend"])  # parsing fails: nothing is started
    assert exc.value.code == 2 and f"argument {flag}: invalid choice: 'no-such-backend'" in capsys.readouterr().err


def test_choice_lists_are_the_registries():
    from corebuild.cli import parser
    from corebuild.stages.describe import DESCRIBERS
    from corebuild.stages.ocr import OCR_BACKENDS
    from corebuild.stages.segment import LABELERS, SEGMENTERS

    build = next(a for a in parser()._subparsers._group_actions[0].choices["build"]._actions if a.dest == "segment")
    assert set(build.choices) == {"off", *SEGMENTERS} and set(LABELERS) == {"clip"}
    assert {"template", "openai", "vllm"} == set(DESCRIBERS)
    assert {"auto", "rapidocr", "rapidocr-v5", "easyocr", "off"} == set(OCR_BACKENDS)


def test_the_printed_retry_command_and_log_lines_carry_no_credential():
    """Userinfo, secret query values, Beam options and a traceback quoting them: redacted in the
    command the CLI prints and in every log line, DEBUG included."""
    import logging

    from corebuild.cli import RedactSecrets, retry_command

    argv = [
        "build", "--region", "x", "--llm-url", "https://llm-user:PW-USERINFO-1@h", "--aerial-url", "https://h/{z}/{x}/{y}?key={key}&access_token=TOK-QUERY-2",
        "--aerial-key-env", "TILE_KEY", "--", "--some_token=BEAM-EQ-3", "--s3_session_token", "BEAM-SPACED-4", "--project=p",
    ]
    cmd = retry_command(argv)
    assert not [s for s in ("PW-USERINFO-1", "TOK-QUERY-2", "BEAM-EQ-3", "BEAM-SPACED-4") if s in cmd], cmd
    assert "https://REDACTED@h" in cmd and "key={key}" in cmd and "--aerial-key-env TILE_KEY" in cmd and cmd.endswith("--project=p")

    record = logging.LogRecord("x", logging.DEBUG, __file__, 1, "GET %s sent %s", ("https://u:PW-USERINFO-1@h/?token=TOK-QUERY-2", "Authorization: Basic dXNlcjpQVy0x"), None)
    try:
        raise RuntimeError("cannot reach https://u:PW-USERINFO-1@h with --s3_session_token BEAM-SPACED-4")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactSecrets().filter(record)
    line = logging.Formatter("%(levelname)s %(message)s").format(record)
    assert line.startswith("DEBUG GET https://REDACTED@h/?token=REDACTED") and "Traceback" in line
    assert not [s for s in ("PW-USERINFO-1", "TOK-QUERY-2", "BEAM-SPACED-4", "dXNlcjpQVy0x") if s in line], line


# -- the build flags are generated from the config fields (corebuild.options): one source ----------

# Every `corebuild build` flag (scripts, the Makefile, docker/flex and the README use them): a flag
# that stops being generated, or is renamed, fails here.
# Flags whose field refuses the generic 7: a value it takes.
VALIDATED = {"--ocr-det-side": 320}
BUILD_FLAGS = {
    "--region", "--output", "--manifests", "--prompts", "--seed", "--limit", "--min-spacing", "--workers", "--unit-points", "--shard-mb",
    "--ocr-threads", "--ocr-parallel", "--ocr-backend", "--ocr-det-side", "--ocr-runtime", "--ocr-precision", "--easyocr-dir", "--segment", "--sam-model", "--sam-checkpoint", "--labeler", "--clip-checkpoint",
    "--describer", "--prompt", "--llm-url", "--llm-model", "--llm-key-env", "--grounding", "--self-review", "--runner", "--streetview-url",
    "--aerial-url", "--aerial-key-env", "--street-provider", "--aerial-preset", "--map-preset", "--mapillary-url", "--local-folder",
    "--cache", "--rate", "--concurrency", "--roads", "--road-tags", "--quota-of", "--expected-yield", "--max-rounds",
    "--local-license", "--local-attribution", "--aerial-license",
}
# The flags that set no one config field (hand-written in cli._build_parser; none has a default value).
HAND_WRITTEN = {"-h", "--help", "--overwrite", "--no-progress", "--dry-run-job", "--retry-failed", "--secret", "--retry-attempts", "--max-retry-wait"}


def _build_actions():
    from corebuild.cli import parser

    sub = next(a for a in parser()._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    build = sub.choices["build"]
    return build, {s: a for a in build._actions for s in a.option_strings}


def _at(cfg, path: str):
    import functools

    return functools.reduce(getattr, path.split("."), cfg)


def test_every_build_flag_is_generated_from_a_config_field_or_is_one_of_the_few_others():
    from corebuild.config import BuildConfig
    from corebuild.options import flag_paths

    _, actions = _build_actions()
    generated = set(flag_paths(BuildConfig).values())
    assert generated == BUILD_FLAGS
    assert set(actions) == generated | HAND_WRITTEN


def test_every_generated_flag_defaults_to_its_field_and_the_help_shows_it(monkeypatch):
    """No default written twice: the flag's default is the dataclass field's (in the flag's units),
    --help prints it, and a command line with no flag builds exactly the default BuildConfig."""
    import dataclasses
    import re

    from corebuild.cli import build_config
    from corebuild.config import BuildConfig
    from corebuild.options import flagged

    monkeypatch.delenv("COREBUILD_SAM_CHECKPOINT", raising=False)
    monkeypatch.delenv("COREBUILD_CLIP_CHECKPOINT", raising=False)
    build, actions = _build_actions()
    shown = re.sub(r"\s+", " ", build.format_help())
    for x in flagged(BuildConfig):
        action, field_default = actions[x.option.flag], x.field.default
        if x.option.unset is not None:
            assert action.default is None and f"(default: {x.option.unset_text()})" in " ".join(action.help.split()), x.path
            continue
        if field_default is dataclasses.MISSING:  # --region
            assert action.default is None and action.required, x.path
            continue
        value = field_default / x.option.scale if x.option.scale else field_default
        assert action.default == value, x.path
        if value is not None and value != "" and x.type is not bool:
            if isinstance(value, tuple):  # a comma list, which --help may wrap anywhere
                assert f"(default:{','.join(value)})" in re.sub(r"\s+", "", shown), x.path
                continue
            assert (f"(default: {value:g})" if isinstance(value, float) else f"(default: {value})") in shown, x.path
    assert "(default: 256)" in shown and "(default: 25)" in shown and "(default: auto)" in shown  # --shard-mb, --min-spacing, --ocr-backend
    args = build.parse_args(["--region", "demo"])
    assert build_config(args) == BuildConfig("demo")  # the unset flags (ocr threads, prompt) too, with one worker
    # and no hand-written flag has a default value of its own to drift from a field's
    assert all(a.default in (None, False, [], "==SUPPRESS==") for s, a in actions.items() if s in HAND_WRITTEN), [(s, a.default) for s, a in actions.items() if s in HAND_WRITTEN]


def test_every_generated_flag_reaches_its_field():
    """Each flag's value lands in the field it was generated from (through the unit of --shard-mb;
    --prompts sets both prompt directories)."""
    from corebuild.cli import build_config
    from corebuild.config import BuildConfig
    from corebuild.options import flagged

    build, actions = _build_actions()
    argv, want = ["--region", "r-region"], {}
    for x in flagged(BuildConfig):
        flag, choices = x.option.flag, actions[x.option.flag].choices
        if flag == "--region":
            value, expected = "r-region", "r-region"
        elif x.type is bool:
            argv.append(flag)
            want[x.path] = True
            continue
        elif choices:
            value = expected = list(choices)[-1]
        elif x.option.scale:
            value, expected = 3.5, int(3.5 * x.option.scale)
        elif x.type is tuple or getattr(x.type, "__origin__", None) is tuple:  # a comma list
            value, expected = "a, b", ("a", "b")
        elif flag in VALIDATED:
            value = expected = VALIDATED[flag]
        else:
            value = expected = {int: 7, float: 2.5}.get(x.type, f"v{flag}")
        if flag not in argv:
            argv += [flag, str(value)]
        want[x.path] = expected
    cfg = build_config(build.parse_args(argv))
    assert {path: _at(cfg, path) for path in want} == want


def test_choice_flags_take_their_choices_from_the_stage_registries():
    from corebuild.config import BuildConfig
    from corebuild.options import flagged
    from corebuild.stages.describe import DESCRIBERS
    from corebuild.stages.fetch import AERIAL_PRESETS, STREET_PROVIDERS
    from corebuild.stages.ocr import OCR_BACKENDS
    from corebuild.stages.segment import LABELERS, SEGMENTERS

    _, actions = _build_actions()
    with_choices = {x.option.flag: x.option.choice_list() for x in flagged(BuildConfig) if x.option.choices is not None}
    assert {f: list(actions[f].choices) for f in with_choices} == with_choices
    registries = {
        "--ocr-backend": OCR_BACKENDS, "--describer": DESCRIBERS, "--segment": SEGMENTERS, "--labeler": LABELERS,
        "--street-provider": STREET_PROVIDERS, "--aerial-preset": AERIAL_PRESETS, "--map-preset": AERIAL_PRESETS,
    }
    for flag, registry in registries.items():
        assert set(actions[flag].choices) - {"off"} == set(registry) - {"off"}, flag
    # a backend registered is a choice at once, with no CLI edit
    OCR_BACKENDS["fake-ocr"] = "corebuild.stages.ocr:load_off"
    DESCRIBERS["fake-describer"] = "corebuild.stages.describe.template:TemplateDescriber"
    try:
        build, actions = _build_actions()
        assert "fake-ocr" in actions["--ocr-backend"].choices and "fake-describer" in actions["--describer"].choices
        args = build.parse_args(["--region", "demo", "--ocr-backend", "fake-ocr", "--describer", "fake-describer"])
        assert (args.ocr_backend, args.describer) == ("fake-ocr", "fake-describer")
    finally:
        del OCR_BACKENDS["fake-ocr"], DESCRIBERS["fake-describer"]
