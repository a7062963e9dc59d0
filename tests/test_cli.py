"""The command line as a user meets it: real subprocesses, exit codes, messages."""

import json
import subprocess
import sys

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
