"""corebuild.redact: URLs, free text, Beam options and values this process resolved."""

from __future__ import annotations

import argparse

import pytest

from corebuild import redact
from corebuild.redact import (
    REDACTED, inline_credential_fields, is_secret_name, redact_beam_args, redact_text, redact_url, redact_urls_in, register_secret, url_secrets,
)


@pytest.fixture(autouse=True)
def _no_registered_values():
    redact._clear_registered()
    yield
    redact._clear_registered()


@pytest.mark.parametrize(
    "url, want",
    [
        ("https://user:s3cret@host:8443/v1?a=1", "https://REDACTED@host:8443/v1?a=1"),
        ("https://TOKEN123@host/x", "https://REDACTED@host/x"),
        ("https://h/{z}/{x}/{y}.png?key={key}&access_token=T0K&style=sat", "https://h/{z}/{x}/{y}.png?key={key}&access_token=REDACTED&style=sat"),
        ("https://h/p?location=1,2&key=AIza&signature=S1G&size=640x640", "https://h/p?location=1,2&key=REDACTED&signature=REDACTED&size=640x640"),
        ("https://h/p?X-Amz-Credential=AK%2F1&X-Amz-Signature=abc&sv=2024&sig=xyz", "https://h/p?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&sv=2024&sig=REDACTED"),
        ("https://h/cb#access_token=abc&state=1", "https://h/cb#access_token=REDACTED&state=1"),
        ("https://ecn.t{s}.tiles.virtualearth.net/tiles/a{q}.jpeg?g=1&key={key}", None),  # a {key} slot is not a secret
        ("gs://bucket/prefix", None),
        ("https://h/v1?max_tokens=5&api_key_env=X", None),
    ],
)
def test_redact_url(url, want):
    assert redact_url(url) == (want or url)


def test_url_secrets_are_the_inline_credentials():
    assert url_secrets("http://u:p%40ss@h/x?access_token=T0KEN&key={key}") == ["u:p%40ss", "u:p@ss", "p@ss", "T0KEN"]
    assert url_secrets("https://h/{z}/{x}/{y}?key={key}") == []
    cfg = {"a": {"url": "http://u:pw@h"}, "b": ["https://h/?token=x", "https://h/?key={key}"], "c": "plain"}
    assert inline_credential_fields(cfg) == ["a.url", "b[0]"]
    assert redact_urls_in(cfg) == {"a": {"url": "http://REDACTED@h"}, "b": ["https://h/?token=REDACTED", "https://h/?key={key}"], "c": "plain"}


@pytest.mark.parametrize(
    "text, gone, kept",
    [
        ("HTTP 500 from http://u:p4ssw0rd@h/x?key=AIzaXYZ after 4 attempts", ["p4ssw0rd", "AIzaXYZ"], ["http://REDACTED@h/x?key=REDACTED"]),
        ("Authorization: Bearer sk-abcdefgh12345", ["sk-abcdefgh12345"], ["Authorization: REDACTED"]),
        ('{"authorization": "Basic dXNlcjpQTEFOVEVE"}', ["dXNlcjpQTEFOVEVE"], ['"authorization": "REDACTED"']),
        ("sent with basic dXNlcjpQTEFOVEVE and OAuth MLY|1234567890", ["dXNlcjpQTEFOVEVE", "1234567890"], []),
        ("Discarding unparseable args: ['--some_token=PL1', '--other_secret', 'PL2', '--no_auth', '--x']", ["PL1", "PL2"], ["'--no_auth', '--x'"]),
        ("-- --s3_session_token tok123 --s3_secret_access_key=abc --project=p", ["tok123", "abc"], ["--project=p"]),
        ("AccountName=acc;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net", ["c2VjcmV0"], ["AccountName=acc", "EndpointSuffix=core.windows.net"]),
        ("env LLM_TOKEN=sk-live-123 was set", ["sk-live-123"], ["LLM_TOKEN=REDACTED"]),
        # Counts, env var names and Secret Manager names are not credentials.
        ("the answer hit max_tokens=512 (prompt_tokens=9)", [], ["max_tokens=512", "prompt_tokens=9"]),
        ("--aerial-key-env TILE_KEY --llm-key-env LLM_TOKEN api_key_env=GOOGLE_MAPS_API_KEY", [], ["TILE_KEY", "LLM_TOKEN", "=GOOGLE_MAPS_API_KEY"]),
        ("--secret LLM_TOKEN=projects/p/secrets/s", [], ["--secret LLM_TOKEN=projects/p/secrets/s"]),
    ],
)
def test_redact_text(text, gone, kept):
    out = redact_text(text)
    assert not [g for g in gone if g in out], out
    assert all(k in out for k in kept), out


def test_registered_values_are_redacted_wherever_they_appear():
    assert redact_text("The provided API key AIzaBare-123 is invalid") == "The provided API key AIzaBare-123 is invalid"
    register_secret("AIzaBare-123")
    register_secret("k")  # too short to redact anything safely: ignored
    assert redact_text("The provided API key AIzaBare-123 is invalid") == f"The provided API key {REDACTED} is invalid"
    assert redact_text("keep k") == "keep k"


def test_beam_args_as_recorded():
    args = (
        "--runner=DataflowRunner", "--some_token=PL1", "--s3_session_token", "PL2", "--enable_hot_key_logging", "--project=p",
        "--azure_connection_string=DefaultEndpointsProtocol=https;AccountKey=zz", "--s3_endpoint_url=https://ak:sk@minio:9000/?token=T",
    )
    assert redact_beam_args(args) == (
        "--runner=DataflowRunner", "--some_token=REDACTED", "--s3_session_token", "REDACTED", "--enable_hot_key_logging", "--project=p",
        "--azure_connection_string=REDACTED", "--s3_endpoint_url=https://REDACTED@minio:9000/?token=REDACTED",
    )


def test_beam_options_that_carry_credentials_exist_and_are_secret():
    """The credential-carrying options of Beam 2.77's PipelineOptions (a rename would show here)."""
    from apache_beam.options import pipeline_options as po

    def options(cls):
        p = argparse.ArgumentParser()
        cls._add_argparse_args(p)
        return {s[2:] for a in p._actions for s in a.option_strings if s.startswith("--")}

    beam = set().union(*(options(c) for c in (po.S3Options, po.AzureOptions, po.GoogleCloudOptions, po.HadoopFileSystemOptions)))
    carrying = {"s3_secret_access_key", "s3_session_token", "s3_access_key_id", "azure_connection_string"}
    assert carrying <= beam
    assert all(is_secret_name(n) for n in carrying)
    for harmless in ("project", "service_account_email", "impersonate_service_account", "hdfs_user", "temp_location", "max_tokens", "api_key_env", "llm-key-env"):
        assert not is_secret_name(harmless), harmless


def test_failure_rows_built_from_exception_text_are_redacted():
    """The sources that turn an exception into a row (a batch's internal error, a provider's) and
    the writer's last gate."""
    from corebuild.stages.fetch.fetcher import _internal
    from corebuild.record import Record
    from corebuild.shards.schema import RunStamp, record_to_row
    from corebuild.stages.stage import fail_batch

    exc = RuntimeError("cannot reach https://u:PW-1@h/x?access_token=TOK-2 (Authorization: Bearer sk-abcdefgh-3)")
    rec = Record("r-s0-0000000", "r", 0, 0, 0.0, 0.0)
    rows = fail_batch([rec], "fetch", exc) + [_internal(rec, "street", exc)]
    raw = rec.fail("describe.http_400", f"the endpoint answered: {exc}")  # a source that forgot: the writer still redacts
    texts = [r.error for r in rows] + [record_to_row(r, RunStamp("b", "h", "v"))["error"] for r in (*rows, raw)]
    for text in texts:
        assert not [s for s in ("PW-1", "TOK-2", "sk-abcdefgh-3") if s in text], text
        assert "https://REDACTED@h/x?access_token=REDACTED" in text
