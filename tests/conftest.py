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
    # Small towns for resume tests: "crowded" has two points on one panorama across work units
    # (with --min-spacing 1), "small" has nine located points of twelve.
    (d / "crowded.json").write_text(json.dumps(rect_manifest("crowded", -33.92, 18.42, 60, 48, quota=12)))
    (d / "small.json").write_text(json.dumps(rect_manifest("small", -33.92, 18.42, 120, 96, quota=12)))
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
    from corebuild.running.build import SYNTHETIC_KEY_ENV

    monkeypatch.setenv(SYNTHETIC_KEY_ENV, "test-key-0123456789abcdef")
    return "test-key-0123456789abcdef"


@pytest.fixture(scope="session")
def prompts_dir() -> Path:
    return ROOT / "prompts"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str, deadline_s: float) -> bool:
    import time
    import urllib.error
    import urllib.request

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b?project=probe", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    return False


@pytest.fixture(scope="session")
def gcs_emulator():
    """gcp-storage-emulator in this process (in-memory, loopback, free port) with one bucket;
    STORAGE_EMULATOR_HOST points at it for the rest of the session."""
    import threading

    from gcp_storage_emulator.server import create_server

    server = host = None
    for _ in range(3):
        port = _free_port()
        candidate = create_server("127.0.0.1", port, in_memory=True)
        # Server.start() waits forever if its thread cannot bind (port taken since we probed it),
        # so start it on the side and give up on that port after a few seconds.
        starter = threading.Thread(target=candidate.start, daemon=True)
        starter.start()
        starter.join(5)
        if not starter.is_alive() and _answers(f"http://127.0.0.1:{port}", 5):
            server, host = candidate, f"http://127.0.0.1:{port}"
            break
    assert server is not None and host is not None, "gcp-storage-emulator did not start"

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    bucket = "corebuild-test"
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STORAGE_EMULATOR_HOST", host)
            storage.Client(credentials=AnonymousCredentials(), project="corebuild-local").create_bucket(bucket)
            yield {"host": host, "bucket": bucket}
    finally:
        server.stop()
