import subprocess
import sys

from corebuild.running.models import check_models

from tests.conftest import ROOT


def test_models_check_says_what_runs_and_what_is_missing(tmp_path):
    rows = {r.backend: r for r in check_models(str(ROOT / "region_manifests"), str(tmp_path), None, str(tmp_path / "nope.pt"), str(ROOT / "prompts"))}
    assert rows["rapidocr"].usable and "PP-OCRv4" in rows["rapidocr"].detail
    assert not rows["easyocr"].usable and "craft_mlt_25k.pth" in rows["easyocr"].detail and str(tmp_path) in rows["easyocr"].detail
    assert not rows["sam"].usable and "no SAM checkpoint configured" in rows["sam"].detail
    assert not rows["clip"].usable and "nope.pt" in rows["clip"].detail
    assert rows["template"].usable


def test_models_check_command_prints_a_table():
    r = subprocess.run([sys.executable, "-m", "corebuild", "models", "check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["backend", "kind", "usable", "detail"]
    assert {line.split()[0] for line in lines[1:]} == {"rapidocr", "easyocr", "sam", "clip", "template"}
