"""The command line as a user meets it: real subprocesses, exit codes, messages."""

import json
import subprocess
import sys

import pytest

from .conftest import ROOT


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
    assert line.startswith("tiny: sampled 6 / kept ") and str(tmp_path / "tiny" / "shards") in line
    m = json.loads((tmp_path / "tiny" / "manifest.json").read_text())
    assert m["consistent"] and m["counts"]["sampled"] == 6


def _build_args(*flags):
    from corebuild.cli import parser

    return parser().parse_args(["build", "--region", "tiny", *flags])


def test_retry_flags_set_every_stage_or_one():
    from corebuild.cli import _check_numbers, _http_configs
    from corebuild.fetch import FetchConfig
    from corebuild.providers.http import HttpConfig

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
    from corebuild.describe import DESCRIBERS, describer_names
    from corebuild.ocr import OCR_BACKENDS
    from corebuild.segment import LABELERS, SEGMENTERS, _register_backends

    _register_backends()  # torch is installed in the test extra: every backend registers
    build = next(a for a in parser()._subparsers._group_actions[0].choices["build"]._actions if a.dest == "segment")
    assert set(build.choices) == {"off", *SEGMENTERS} and set(LABELERS) == {"clip"}
    assert {"template", "openai", "vllm"} <= set(describer_names()) and set(DESCRIBERS) <= set(describer_names())
    assert {"rapidocr", "easyocr", "off"} == set(OCR_BACKENDS)


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
