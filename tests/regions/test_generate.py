"""The shipped region manifests: generated, reproducible, valid, and their quotas add up."""

import collections
import json
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from corebuild.regions import load_all
from corebuild.regions.generate import CONTINENT_REGIONS, FLOOR_QUOTA, TOTAL_QUOTA, allocate_quotas, write_manifests

from tests.conftest import ROOT

MANIFESTS = ROOT / "region_manifests"


def test_regenerating_reproduces_the_committed_manifests_byte_for_byte(tmp_path):
    written = write_manifests(tmp_path)
    assert len(written) == 225
    for path in written:
        assert path.read_bytes() == (MANIFESTS / path.name).read_bytes(), path.name
    generated = {p.name for p in MANIFESTS.glob("*.json") if "corebuild regions generate" in p.read_text()}
    assert generated == {p.name for p in written}  # no stale generated file left behind


def test_225_regions_on_every_continent_with_quotas_summing_exactly():
    regions, errors = load_all(MANIFESTS)
    assert errors == []
    real = [r for r in regions if r.imagery != "synthetic"]
    assert len(real) == 225 and len({r.id for r in regions}) == len(regions)
    assert sum(r.quota for r in real) == TOTAL_QUOTA == 1_034_786
    per = collections.Counter(r.continent for r in real)
    assert set(per) == {"Africa", "Antarctica", "Asia", "Europe", "North America", "Oceania", "South America"}
    assert per["Antarctica"] == CONTINENT_REGIONS["AN"]
    assert min(r.quota for r in real if r.country != "AQ") == FLOOR_QUOTA
    assert len({r.country for r in real}) > 190  # wide coverage of countries (and so scripts)


def test_quotas_follow_the_documented_rule():
    """floor + (total - floors) * sqrt(population) * land_fraction / sum(weights), within rounding."""
    docs = [json.loads(p.read_text()) for p in MANIFESTS.glob("*.json") if p.stem != "demo"]
    weights = {d["id"]: (d["source"]["population"] ** 0.5) * d["source"]["land_fraction"] for d in docs if d["country"] != "AQ"}
    floors = {d["id"]: (300 if d["country"] == "AQ" else FLOOR_QUOTA) for d in docs}
    rest = TOTAL_QUOTA - sum(floors.values())
    total_w = sum(weights.values())
    for d in docs:
        share = rest * weights.get(d["id"], 0.0) / total_w
        assert abs(d["quota"] - floors[d["id"]] - share) < 1.0, d["id"]


@given(weights=st.lists(st.floats(0, 1e6), min_size=1, max_size=60), floor=st.integers(0, 50), extra=st.integers(0, 10**6))
def test_allocate_quotas_is_exact_and_respects_floors(weights, floor, extra):
    floors = [floor] * len(weights)
    total = sum(floors) + extra
    q = allocate_quotas(weights, floors, total)
    assert sum(q) == total
    assert all(x >= floor for x in q)
    if sum(weights) > 0:
        order = sorted(range(len(weights)), key=lambda i: weights[i])
        assert all(q[a] <= q[b] + 1 for a, b in zip(order, order[1:]))  # more weight, no less quota


def test_regions_check_command_prints_continent_totals():
    r = subprocess.run([sys.executable, "-m", "corebuild", "regions", "check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "all 226 manifests valid" in r.stdout
    assert "total              225   1034786" in r.stdout
    for continent in ("Africa", "Antarctica", "Asia", "Europe", "North America", "Oceania", "South America"):
        assert continent in r.stdout


def test_regions_check_fails_on_a_bad_manifest(tmp_path):
    (tmp_path / "bad.json").write_text('{"id": "bad"}')
    r = subprocess.run([sys.executable, "-m", "corebuild", "regions", "check", "--manifests", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "bad.json: name: missing" in r.stderr
