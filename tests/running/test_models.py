import subprocess
import sys

from corebuild.running.models import check_models

from tests.conftest import ROOT


def test_models_check_says_what_runs_and_what_is_missing(tmp_path):
    rows = {r.backend: r for r in check_models(str(ROOT / "region_manifests"), str(tmp_path), None, str(tmp_path / "nope.pt"), str(ROOT / "prompts"))}
    assert rows["rapidocr"].usable and "PP-OCRv4" in rows["rapidocr"].detail
    easy = rows["easyocr"]
    assert not easy.usable and "arabic.pth" in easy.detail and str(tmp_path) in easy.detail
    assert "craft_mlt_25k.pth" not in easy.detail.split("missing:")[1]  # the English wheel brings the detector
    assert not rows["sam"].usable and "no SAM checkpoint configured" in rows["sam"].detail
    assert not rows["clip"].usable and "nope.pt" in rows["clip"].detail
    assert rows["template"].usable


def test_models_check_command_prints_a_table():
    r = subprocess.run([sys.executable, "-m", "corebuild", "models", "check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["backend", "kind", "usable", "detail"]
    assert {line.split()[0] for line in lines[1:]} == {"rapidocr", "rapidocr-v5", "easyocr", "sam", "clip", "template"}


def _corebuild(*args, env=None):
    import os

    r = subprocess.run([sys.executable, "-m", "corebuild", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_models_check_regions_names_each_scripts_reader_and_download_fills_the_gap(tmp_path):
    env = {"HOME": str(tmp_path), "COREBUILD_MODELS_DIR": str(tmp_path / "models")}
    out = _corebuild("models", "check", "--regions", "all", env=env)
    rows = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert len(rows) == 226 and "226 regions:" in out.splitlines()[-1]
    assert rows["jp-tokyo"].split()[-2:] == ["japanese:rapidocr-v5", "latin:rapidocr-v5"]
    assert "arabic:NONE" in rows["eg-cairo"] and rows["eg-cairo"].split()[2].startswith("ar")
    assert rows["demo"].split()[-1] == "latin:rapidocr"
    # What `models download` would fetch for Cairo: the detector and the Arabic model, from easyocr's releases.
    plan = _corebuild("models", "download", "--regions", "eg-cairo", "--backends", "easyocr", "--dry-run", "--models-dir", str(tmp_path / "models"), env=env)
    assert "https://github.com/JaidedAI/EasyOCR/releases/download/pre-v1.1.6/arabic.zip" in plan and "craft_mlt_25k" in plan
    assert str(tmp_path / "models" / "easyocr" / "arabic.pth") in plan and not (tmp_path / "models").exists()
    # Weights where download installs them are found: Cairo's Arabic signs are then read.
    (tmp_path / "models" / "easyocr").mkdir(parents=True)
    for name in ("craft_mlt_25k.pth", "arabic.pth"):
        (tmp_path / "models" / "easyocr" / name).write_bytes(b"stand-in")
    out = _corebuild("models", "check", "--regions", "eg-cairo", env=env)
    assert "arabic:easyocr" in out.splitlines()[1]


def test_regions_list_shows_the_ocr_choice():
    out = _corebuild("regions", "list")
    header, *rows = out.splitlines()
    assert header.split()[-2:] == ["(script:reader)"] or "ocr here" in header
    tokyo = next(line for line in rows if line.startswith("jp-tokyo "))
    assert tokyo.rstrip().endswith("japanese:rapidocr-v5 latin:rapidocr-v5")
