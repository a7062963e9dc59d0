"""Shared fixtures: small generated regions, their synthetic worlds, and loopback servers."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from corebuild.regions import load_region
from corebuild.synthetic.server import serve_in_thread
from corebuild.synthetic.world import World

ROOT = Path(__file__).resolve().parent.parent


def rect_manifest(region_id: str, lat0: float, lon0: float, half_w_m: float, half_h_m: float, quota: int, seed: int = 3, **extra) -> dict:
    dlat = half_h_m / 111320
    dlon = half_w_m / (111320 * math.cos(math.radians(lat0)))
    ring = [[lon0 - dlon, lat0 - dlat], [lon0 + dlon, lat0 - dlat], [lon0 + dlon, lat0 + dlat], [lon0 - dlon, lat0 + dlat], [lon0 - dlon, lat0 - dlat]]
    doc = {
        "id": region_id,
        "name": f"Test {region_id}",
        "country": "ZA",
        "continent": "Africa",
        "polygon": {"type": "Polygon", "coordinates": [ring]},
        "ocr_languages": [["en"]],
        "quota": quota,
        "imagery": "synthetic",
        "synthetic_world": {"seed": seed},
    }
    doc.update(extra)
    return doc


@pytest.fixture(scope="session")
def manifests_dir(tmp_path_factory) -> Path:
    """The shipped demo manifest plus a small southern-hemisphere test town."""
    d = tmp_path_factory.mktemp("manifests")
    shutil.copy(ROOT / "region_manifests" / "demo.json", d / "demo.json")
    (d / "tiny.json").write_text(json.dumps(rect_manifest("tiny", -33.92, 18.42, 380, 300, quota=40)))
    return d


@pytest.fixture(scope="session")
def tiny_region(manifests_dir):
    return load_region("tiny", manifests_dir)


@pytest.fixture(scope="session")
def tiny_world(tiny_region) -> World:
    return World.for_region(tiny_region)


@pytest.fixture(scope="session")
def demo_world(manifests_dir) -> World:
    return World.for_region(load_region("demo", manifests_dir))


@pytest.fixture(scope="session")
def tiny_server(tiny_world):
    server = serve_in_thread(tiny_world)
    yield server
    server.stop()


@pytest.fixture()
def synthetic_key(monkeypatch):
    from corebuild.build import SYNTHETIC_KEY_ENV

    monkeypatch.setenv(SYNTHETIC_KEY_ENV, "test-key-0123456789abcdef")
    return "test-key-0123456789abcdef"


@pytest.fixture(scope="session")
def prompts_dir() -> Path:
    return ROOT / "prompts"
