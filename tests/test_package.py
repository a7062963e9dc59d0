"""The wheel: it carries the prompts and region manifests, and an installed corebuild builds from
any working directory (issue 16). The wheel is built from a copy of the checkout, installed with
`pip install --target` and run from an empty directory with this interpreter, whose
dependencies it borrows; the editable install of the checkout must not be what runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from corebuild.assets import MANIFESTS, PROMPTS, locate
from corebuild.config import BuildConfig

from tests.conftest import ROOT

# What `git clean -X` would remove, and the VCS: a build from a fresh clone sees none of it.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "out")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("package")
    src, dist, site = tmp / "src", tmp / "dist", tmp / "site"
    # A copy, so the in-tree build's build/ and egg-info do not land in the checkout.
    shutil.copytree(ROOT, src, symlinks=True, ignore=_NOT_SOURCE)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    r = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir", str(src), "-w", str(dist)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    [wheel] = dist.glob("corebuild-*.whl")
    r = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    # Only the installed copy on the path: PathFinder (sys.path) comes before the editable
    # install's finder in sys.meta_path, and the empty working directory holds nothing.
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    return {"wheel": wheel, "site": site, "env": env}


def test_the_checkouts_links_point_at_the_packaged_data():
    assert (ROOT / "prompts").resolve() == locate(PROMPTS).resolve() == (ROOT / "corebuild" / "assets" / "prompts").resolve()
    assert (ROOT / "region_manifests").resolve() == locate(MANIFESTS).resolve()


def test_the_wheel_carries_prompts_vocabulary_and_every_manifest_and_no_tests(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    prompts = {n.rsplit("/", 1)[1] for n in names if n.startswith("corebuild/assets/prompts/")}
    manifests = {n.rsplit("/", 1)[1] for n in names if n.startswith("corebuild/assets/region_manifests/")}
    assert prompts == {"template-v1.json", "cvg-progressive-v1.json", "segment-vocabulary-v1.json"}
    assert len(manifests) == 226 and "demo.json" in manifests
    assert manifests == {p.name for p in (ROOT / "region_manifests").glob("*.json")}
    assert {n.split("/", 1)[0] for n in names if ".dist-info/" not in n} == {"corebuild", "pipelines"}  # no tests/, .venv, bench/, links
    site = installed["site"] / "corebuild" / "assets"
    for name in prompts:
        assert (site / "prompts" / name).read_bytes() == (ROOT / "prompts" / name).read_bytes()
    assert (site / "region_manifests" / "demo.json").read_bytes() == (ROOT / "region_manifests" / "demo.json").read_bytes()


def test_an_installed_wheel_builds_from_an_empty_directory(installed, tmp_path):
    """OCR off keeps it quick (~30 s); the rest is the default offline build of the demo town."""
    site, env = installed["site"], installed["env"]
    cwd = tmp_path / "empty"
    cwd.mkdir()
    probe = (
        "import json, corebuild, corebuild.assets as a, pipelines.build_region as p; from corebuild.config import BuildConfig;"
        "print(json.dumps([corebuild.__file__, p.__file__, str(a.locate(a.PROMPTS)), str(a.locate(a.MANIFESTS)), BuildConfig('demo').content_hash()]))"
    )
    r = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    files = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(Path(f).is_relative_to(site) for f in files[:4]), files  # the wheel's copy, not the checkout's
    # The packaged defaults hash the same in a checkout and in an installed wheel.
    assert files[4] == BuildConfig("demo").content_hash()

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "corebuild", "build", "--region", "demo", "--limit", "20", "--output", str(out), "--no-progress", "--ocr-backend", "off"]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert list(cwd.iterdir()) == []  # nothing read or written relative to the working directory
    m = json.loads((out / "demo" / "manifest.json").read_text())
    assert m["consistent"] and m["counts"]["kept"] == 20 and m["counts"]["sampled"] == m["counts"]["rows"]
    assert Path(m["region"]["manifest"]).is_relative_to(site)  # read from the installed package
    assert "+g" not in m["code_version"]  # provenance found no git checkout around the code that ran
    assert m["config"]["manifests_dir"] == MANIFESTS and m["config"]["describe"]["prompts_dir"] == PROMPTS
    from corebuild.stages.describe.prompts import load_prompt

    assert m["models"]["prompt"] == {"id": "template-v1", "hash": load_prompt(ROOT / "prompts", "template-v1").hash}


def test_the_config_hash_covers_what_the_prompt_says_not_where_it_is_read_from(tmp_path):
    """The packaged default, a copy elsewhere: one hash. An edited prompt: another, named."""
    from corebuild.stages.describe import DescribeConfig
    from corebuild.running.resume import _config_diff
    from corebuild.stages.segment import SegmentConfig

    copy = tmp_path / "prompts"
    shutil.copytree(ROOT / "prompts", copy)
    packaged = BuildConfig("demo")
    elsewhere = BuildConfig("demo", describe=DescribeConfig(prompts_dir=str(copy)), segment=SegmentConfig(prompts_dir=str(copy)))
    assert packaged.describe.prompts_dir == PROMPTS and packaged.manifests_dir == MANIFESTS
    assert elsewhere.content_hash() == packaged.content_hash()
    doc = json.loads((copy / "template-v1.json").read_text())
    (copy / "template-v1.json").write_text(json.dumps({**doc, "no_text": doc["no_text"] + " Edited."}))
    assert _config_diff(packaged.content_dict(), elsewhere.content_dict()) == ["describe.prompt_hash"]
    # The segment vocabulary counts only when segmentation runs (it is read only then).
    sam = lambda d: BuildConfig("demo", segment=SegmentConfig(backend="sam", prompts_dir=d))  # noqa: E731
    (copy / "segment-vocabulary-v1.json").write_text((copy / "segment-vocabulary-v1.json").read_text().replace('"car"', '"cart"', 1))
    assert _config_diff(sam(PROMPTS).content_dict(), sam(str(copy)).content_dict()) == ["segment.vocabulary_hash"]
