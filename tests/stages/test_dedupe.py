"""Dedupe by bucket of panoramas: what the pipeline's SameImagery grouping carries and settles."""

import json
import os
import random
import subprocess
import sys

from corebuild.record import Record, StreetLocation, make_sample_id
from corebuild.stages.dedupe import Claim, Duplicate, apply_verdicts, claims_of, dedupe, dedupe_bucket, location_key, settle_bucket


def located(i: int, pano: str) -> Record:
    return Record(make_sample_id("r", 0, i), "r", 0, i, 1.0, 2.0).with_(location=StreetLocation("p", f"IMG{i}", 1.0, 2.0, None, 3.0, pano))


def outcome(records):
    return {r.point_index: (r.status, r.failure_reason, r.error) for r in records}


def sample_id(i: int) -> str:
    return make_sample_id("r", 0, i)


def test_a_panoramas_bucket_is_the_same_in_every_process():
    """Launcher and workers are separate processes, each with its own salted str hash: a bucket
    drawn from that would split one panorama's points between buckets, and both would keep it."""
    keys = [f"google:PANO{i:04d}" for i in range(64)] + ["mapillary:séquence-7"]
    here = [dedupe_bucket(k, 256) for k in keys]
    code = "import json, sys; from corebuild.stages.dedupe import dedupe_bucket; print(json.dumps([dedupe_bucket(k, 256) for k in json.loads(sys.argv[1])]))"
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code, json.dumps(keys)], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == here
    assert all(0 <= b < 256 for b in here) and len(set(here)) > 32  # spread, not one bucket


def test_a_bucket_of_panoramas_settles_as_a_clean_dedupe():
    """Pending points on three panoramas (one alone) and a finished unit's claims, shuffled into
    one bucket: the verdicts are those of a clean dedupe of every point."""
    pts = [located(0, "A"), located(1, "B"), located(2, "A"), located(4, "B"), located(5, "C")]
    clean = outcome(dedupe(pts))
    claims = [Claim.from_marker("r", c) for c in claims_of(r for r in dedupe(pts) if r.point_index in (0, 1))]
    pending = [p for p in pts if p.point_index not in (0, 1)]
    items: list = [(location_key(p.location), p.point_index) for p in pending] + claims
    random.Random(0).shuffle(items)
    changes = settle_bucket(items, sample_id)
    assert all(isinstance(c, Duplicate) for c in changes)  # the finished rows already say what a clean run does
    assert outcome(apply_verdicts(pending, changes)) == {i: clean[i] for i in (2, 4, 5)}
    assert clean[2][1] == clean[4][1] == "street.duplicate" and clean[5][1] is None
    assert settle_bucket([("p:C", 5)], sample_id) == []


def test_a_claim_alone_in_its_bucket_still_settles():
    """1 finished as 0's duplicate; 0 is retried and located elsewhere, so 1's claim is alone on
    panorama A: its row comes back to be rewritten as kept (a lone claim is not skipped)."""
    claims = [Claim.from_marker("r", c) for c in claims_of(r for r in dedupe([located(0, "A"), located(1, "A")]) if r.point_index == 1)]
    (promoted,) = settle_bucket(claims, sample_id)
    assert isinstance(promoted, Record) and outcome([promoted]) == {1: ("pending", None, None)}
