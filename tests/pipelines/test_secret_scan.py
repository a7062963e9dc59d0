"""A distinct credential planted in every channel a user has for one (an env var, `<VAR>_FILE`,
Secret Manager, a secret query value and userinfo in the URL flags, Beam options after `--`) goes
through a whole CLI build at DEBUG log level against servers that fail a fifth of requests and
echo requests back in error bodies (the Street View key, the URL and the Authorization header in
a REQUEST_DENIED message; the describer's bearer token in a 400): not one of them, nor the Basic
form of a userinfo, appears in any decoded value of any Parquet column, any string of any JSON
file, any file's raw bytes, or any line of stdout/stderr. A control shows the same scan finds a
value written unredacted into a zstd Parquet column (nested in a struct, and as bytes) and a
JSON file that spells it in \\u escapes, where a raw byte search does not."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from aiohttp import web

from corebuild.aio import serve_app
from corebuild.synthetic.faults import FaultConfig
from corebuild.synthetic.server import SyntheticServer
from tests.conftest import ROOT
from tests.test_secrets import FakeSecretManager, serve_secret_manager  # skips the module where grpc is missing


SV_USER, LLM_SECRET = "sv-user", "projects/corebuild-test/secrets/llm-token"
# channel -> the value planted there (each distinct, so a leak names its channel)
PLANTED = {
    "env GOOGLE_MAPS_API_KEY": "AIzaSCAN-planted-env-key-81",
    "TILE_KEY_FILE (aerial {key})": "tilePLANTED-file-key-62",
    "Secret Manager LLM_TOKEN (describer bearer)": "sk-PLANTED-secret-manager-44",
    "--aerial-url ?access_token=": "atPLANTED-aerial-query-17",
    "--streetview-url userinfo": "svPLANTED-userinfo-pass-23",
    "--mapillary-url userinfo": "mlyPLANTED-userinfo-pass-31",
    "--mapillary-url ?access_token=": "mlyqPLANTED-query-token-39",
    "Beam --some_token=": "btPLANTED-beam-made-up-55",
    "Beam --s3_session_token (spaced)": "s3tPLANTED-beam-session-66",
    "Beam --s3_secret_access_key=": "s3kPLANTED-beam-secret-67",
}
# What a server receives for a userinfo: `Authorization: Basic base64(user:password)`.
DERIVED = {"--streetview-url userinfo as Basic": base64.b64encode(f"{SV_USER}:{PLANTED['--streetview-url userinfo']}".encode()).decode()}
NEEDLES = {**PLANTED, **DERIVED}

# The CLI as users run it, with Secret Manager answered by the fake service over loopback gRPC
# (corebuild.secrets._client_factory, the hook tests/test_secrets.py uses in-process).
BOOT = """
import os, sys
import grpc
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1.services.secret_manager_service.transports.grpc import SecretManagerServiceGrpcTransport
from corebuild import secrets
secrets._client_factory = lambda: secretmanager_v1.SecretManagerServiceClient(
    transport=SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(os.environ["SCAN_SECRET_MANAGER"])))
from corebuild.cli import main
sys.exit(main(sys.argv[1:]))
"""


# -- the scan ----------------------------------------------------------------------------------------


def _texts(value: Any) -> Iterator[str | bytes]:
    """Every str and bytes inside a decoded value: lists, structs (dicts), maps, nested."""
    if isinstance(value, (str, bytes)):
        yield value
    elif isinstance(value, bytearray):
        yield bytes(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _texts(k)
            yield from _texts(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _texts(v)


def _decoded(path: Path) -> Iterator[str | bytes]:
    """What a reader gets from a file: every value of every Parquet column (and the file's key-value
    metadata), every string of a JSON document; and, for every file, its raw bytes."""
    if path.suffix == ".parquet":
        f = pq.ParquetFile(path)
        yield from _texts(dict(f.metadata.metadata or {}))
        table = f.read()
        for name in table.column_names:
            yield from _texts(table.column(name).to_pylist())
    elif path.suffix == ".json":
        yield from _texts(json.loads(path.read_text(encoding="utf-8")))
    yield path.read_bytes()


def _hits(text: str | bytes, needles: dict[str, str]) -> list[str]:
    if isinstance(text, bytes):
        return [name for name, v in needles.items() if v.encode() in text]
    return [name for name, v in needles.items() if v in text]


def scan(root: Path, needles: dict[str, str]) -> list[str]:
    """'<channel> in <file>' for every needle found anywhere under root (decoded or raw)."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        for text in _decoded(path):
            found += [f"{name} in {path.relative_to(root)}" for name in _hits(text, needles)]
    return sorted(set(found))


def test_the_scan_finds_what_a_raw_byte_search_misses(tmp_path):
    """Control: a value written unredacted where only decoding sees it. In a zstd text column
    among ordinary text (shard-sized row groups) zstd Huffman-codes the literals, so the value's
    bytes are not in the file; nor are they in JSON that spells the value in \\u escapes."""
    import random

    control = {"control": "ctlPLANTED-unredacted-88"}
    rnd = random.Random(16)
    filler = ["".join(rnd.choice("etaoin shrdlu cmfwyp") for _ in range(80)) for _ in range(400)]
    errors = filler[:200] + [f"the server said: {control['control']} is not valid"] + filler[200:]
    views = [[{"heading": 0.0, "image": b"\xff\xd8" + (control["control"].encode() if i == 7 else b"jpeg")}] for i in range(len(errors))]
    pq.write_table(pa.table({"error": errors, "street_views": views}), tmp_path / "part.parquet", compression="zstd", row_group_size=32)
    escaped = "".join(f"\\u{ord(c):04x}" for c in control["control"])
    (tmp_path / "manifest.json").write_text('{"config": {"nested": ["' + escaped + '"]}}')
    assert scan(tmp_path, control) == ["control in manifest.json", "control in part.parquet"]
    decoded = [name for v in list(_decoded(tmp_path / "part.parquet"))[:-1] for name in _hits(v, control)]
    assert decoded == ["control", "control"]  # the text column, and the bytes inside the list of structs
    pq.write_table(pa.table({"error": errors}), tmp_path / "text-only.parquet", compression="zstd", row_group_size=32)
    for name in ("manifest.json", "text-only.parquet"):
        assert control["control"].encode() not in (tmp_path / name).read_bytes(), f"a raw byte search would have found it in {name}"
    assert scan(tmp_path, control)[-1] == "control in text-only.parquet"


# -- the servers ---------------------------------------------------------------------------------------


def _picked(what: str, one_in: int) -> bool:
    return int(hashlib.sha256(what.encode()).hexdigest()[:8], 16) % one_in == 0


class Echo:
    """Answers some requests with an error that quotes the request back: a Street View
    REQUEST_DENIED naming the key, the URL and the Authorization header; a describer 400 naming the
    bearer token. Records what credentials the servers received (the workers' real values)."""

    def __init__(self):
        self.seen: set[str] = set()
        self.echoed = {"street": 0, "describe": 0}
        self.asked = {"street": 0, "describe": 0}

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        auth = request.headers.get("Authorization", "")
        self.seen.update(v for v in (auth.partition(" ")[2], request.query.get("key", ""), request.query.get("access_token", "")) if v)
        said = f"{request.method} {request.url} Authorization: {auth}"  # the URL as received: key= and access_token= in it
        self.asked["street"] += request.path == "/maps/api/streetview/metadata"
        self.asked["describe"] += request.path == "/v1/chat/completions"
        if request.path == "/maps/api/streetview/metadata" and _picked(request.query.get("location", ""), 4):
            self.echoed["street"] += 1
            message = f"The provided API key {request.query.get('key')} is invalid. Request: {said}"
            return web.json_response({"status": "REQUEST_DENIED", "error_message": message})
        if request.path == "/v1/chat/completions" and self.asked["describe"] % 2 == 1:  # the first, third...: few records get this far
            self.echoed["describe"] += 1
            message = f"token {auth.partition(' ')[2]} is not valid for this model. Request: {said}"
            return web.json_response({"error": {"message": message, "headers": {"Authorization": auth}}}, status=400)
        return await handler(request)


# -- the build -------------------------------------------------------------------------------------------


def test_no_planted_credential_in_outputs_logs_or_config(tiny_world, manifests_dir, tmp_path):
    doc = json.loads((manifests_dir / "tiny.json").read_text())
    doc.update(id="tinyprod", imagery="providers")  # the same town, reached like a real provider
    doc.pop("synthetic_world", None)
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    (mdir / "tinyprod.json").write_text(json.dumps(doc))
    (tmp_path / "tile.key").write_text(PLANTED["TILE_KEY_FILE (aerial {key})"] + "\n")
    (tmp_path / "boot.py").write_text(BOOT)
    echo = Echo()
    app = SyntheticServer(tiny_world, FaultConfig(rate=0.2, seed=4, persistent=True, hang_s=0.5)).app()
    app.middlewares.append(echo.middleware)  # after the fault injector: a request is faulted or echoed or served
    server = serve_app(app)
    secret_manager = FakeSecretManager({LLM_SECRET: {1: PLANTED["Secret Manager LLM_TOKEN (describer bearer)"].encode()}})
    grpc_server, sm_addr = serve_secret_manager(secret_manager)
    out = tmp_path / "out"
    try:
        host = server.base_url.split("://", 1)[1]
        cmd = [
            sys.executable, str(tmp_path / "boot.py"), "--log-level", "DEBUG", "build", "--region", "tinyprod", "--manifests", str(mdir),
            "--output", str(out), "--limit", "16", "--no-progress", "--workers", "1",
            "--streetview-url", f"http://{SV_USER}:{PLANTED['--streetview-url userinfo']}@{host}",
            "--aerial-url", f"{server.base_url}/tiles/{{z}}/{{x}}/{{y}}.png?key={{key}}&access_token={PLANTED['--aerial-url ?access_token=']}",
            "--aerial-key-env", "TILE_KEY",
            "--mapillary-url", f"http://mly-user:{PLANTED['--mapillary-url userinfo']}@{host}/mapillary?access_token={PLANTED['--mapillary-url ?access_token=']}",
            "--describer", "openai", "--prompt", "cvg-progressive-v1", "--llm-url", server.base_url, "--llm-model", "synthetic",
            "--llm-key-env", "LLM_TOKEN", "--secret", f"LLM_TOKEN={LLM_SECRET}",
            "--",
            f"--some_token={PLANTED['Beam --some_token=']}",
            "--s3_session_token", PLANTED["Beam --s3_session_token (spaced)"],
            f"--s3_secret_access_key={PLANTED['Beam --s3_secret_access_key=']}",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_TOKEN", "TILE_KEY", "GOOGLE_MAPS_API_KEY"))}
        env.update(
            GOOGLE_MAPS_API_KEY=PLANTED["env GOOGLE_MAPS_API_KEY"], TILE_KEY_FILE=str(tmp_path / "tile.key"),
            SCAN_SECRET_MANAGER=sm_addr, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        )
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    finally:
        server.stop()
        grpc_server.stop(None)
    assert run.returncode == 0, run.stderr[-3000:]
    logs = run.stdout + run.stderr
    (tmp_path / "cli.log").write_text(logs)  # beside the output, for a look when this fails
    assert " DEBUG " in logs  # the libraries' debug logging was on too

    # Every channel reached the workers with its real value (the servers saw them) ...
    assert secret_manager.calls == [f"{LLM_SECRET}/versions/latest"]
    for channel in ("env GOOGLE_MAPS_API_KEY", "TILE_KEY_FILE (aerial {key})", "Secret Manager LLM_TOKEN (describer bearer)", "--aerial-url ?access_token="):
        assert PLANTED[channel] in echo.seen, channel
    assert DERIVED["--streetview-url userinfo as Basic"] in echo.seen

    # ... and none of them, nor a derived form, is anywhere in the output or the logs.
    leaks = scan(out, NEEDLES) + [f"{name} in the log" for name in NEEDLES if NEEDLES[name] in logs]
    assert leaks == [], "\n".join(leaks)

    # The scan met what could have leaked: failure rows quoting URLs and echoed requests ...
    from corebuild.dataset.reader import open_build

    build = open_build(str(out / "tinyprod"))
    rows = [r for n in build.shard_names() for r in build.read_table(n).to_pylist() if r["status"] == "failed"]
    errors = [r["error"] for r in rows]
    assert echo.echoed["street"] and echo.echoed["describe"], (echo.echoed, echo.asked, sorted(r["failure_reason"] for r in rows))
    denied = [r["error"] for r in rows if r["failure_reason"] == "street.request_denied"]
    assert denied and all("The provided API key REDACTED is invalid" in e and "Authorization: REDACTED" in e for e in denied), denied
    assert any(r["failure_reason"] == "describe.http_400" and "token REDACTED is not valid" in r["error"] for r in rows), errors
    assert any("key=REDACTED" in e for e in errors) and any("access_token=REDACTED" in e for e in errors), errors
    assert any("http://REDACTED@127.0.0.1" in e for e in errors), errors  # the Street View URL's userinfo
    # ... the recorded config (redacted URLs and Beam options; env var and secret names kept) ...
    config, build_doc = build.manifest["config"], json.loads((out / "tinyprod" / "_build.json").read_text())
    for recorded in (config, build_doc["config"]):
        f = recorded["fetch"]
        assert f["aerial"]["url_template"].endswith("?key={key}&access_token=REDACTED")
        assert f["streetview"]["base_url"] == f"http://REDACTED@{host}"
        assert f["mapillary"]["base_url"] == f"http://REDACTED@{host}/mapillary?access_token=REDACTED"
    assert config["runner"]["extra_args"] == ["--some_token=REDACTED", "--s3_session_token", "REDACTED", "--s3_secret_access_key=REDACTED"]
    text = json.dumps(config)
    assert "GOOGLE_MAPS_API_KEY" in text and "LLM_TOKEN" in text and "TILE_KEY" in text and LLM_SECRET in text
    # ... and the logs: Beam's warning about the made-up option, the printed retry command.
    assert "Discarding unparseable args" in logs and "--some_token=REDACTED" in logs
    assert "retry them with: corebuild" in run.stdout and f"http://REDACTED@{host}" in run.stdout
