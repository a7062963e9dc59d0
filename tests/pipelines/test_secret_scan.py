"""Planted credentials (a Street View key, a tile key in the URL template, the describer's bearer
token) go through a whole CLI build at DEBUG log level against servers that fail a fifth of
requests (so error messages quoting URLs are written): not one of them appears in any output
file, any log line, or the recorded config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from corebuild.synthetic.faults import FaultConfig
from corebuild.synthetic.server import serve_in_thread
from tests.conftest import ROOT

PLANTED = {"GOOGLE_MAPS_API_KEY": "AIzaSCAN-planted-maps-key-81", "TILE_KEY": "tilePLANTED-xyz-key-62", "LLM_TOKEN": "sk-PLANTED-llm-token-44"}


def test_no_planted_credential_in_outputs_logs_or_config(tiny_world, manifests_dir, tmp_path):
    doc = json.loads((manifests_dir / "tiny.json").read_text())
    doc.update(id="tinyprod", imagery="providers")  # the same town, reached like a real provider
    doc.pop("synthetic_world", None)
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    (mdir / "tinyprod.json").write_text(json.dumps(doc))
    server = serve_in_thread(tiny_world, faults=FaultConfig(rate=0.2, seed=4, persistent=True, hang_s=0.5))
    try:
        url = server.base_url
        cmd = [
            sys.executable, "-m", "corebuild", "--log-level", "DEBUG", "build", "--region", "tinyprod", "--manifests", str(mdir),
            "--output", str(tmp_path / "out"), "--limit", "12", "--no-progress", "--workers", "1",
            "--streetview-url", url, "--aerial-url", url + "/tiles/{z}/{x}/{y}.png?key={key}", "--aerial-key-env", "TILE_KEY",
            "--describer", "openai", "--prompt", "cvg-progressive-v1", "--llm-url", url, "--llm-model", "synthetic", "--llm-key-env", "LLM_TOKEN",
        ]
        env = {**os.environ, **PLANTED, "PYTHONPATH": str(ROOT)}
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr[-3000:]
    logs = run.stdout + run.stderr
    assert " DEBUG " in logs  # the libraries' debug logging was on too
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.name == "manifest.json" for p in files)
    for name, value in PLANTED.items():
        assert value not in logs, f"{name} in the log"
        for path in files:
            assert value.encode() not in path.read_bytes(), f"{name} in {path}"
    # The scan met what could have leaked: failure rows quoting the URLs that carried the keys.
    from corebuild.dataset import open_build

    build = open_build(str(tmp_path / "out" / "tinyprod"))
    errors = [r["error"] for n in build.shard_names() for r in build.read_table(n).to_pylist() if r["status"] == "failed"]
    assert any("key=REDACTED" in e for e in errors), errors
    config = json.dumps(build.manifest["config"])
    assert "GOOGLE_MAPS_API_KEY" in config and "LLM_TOKEN" in config  # env var names are recorded, values never
