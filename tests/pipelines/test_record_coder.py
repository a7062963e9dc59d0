"""Records cross the pipeline's groupings as the registered RecordCoder's compact bytes (not as
Beam's pickles, not as decoded objects the DirectRunner would keep in its grouping tables)."""

from __future__ import annotations

import os
import zlib
from collections import Counter

import apache_beam as beam
from apache_beam.testing import test_pipeline

from corebuild import record_codec
from corebuild.config import BuildConfig, RunnerConfig
from corebuild.record import Record
from corebuild.running.build import execute, prepare, with_synthetic_endpoints
from corebuild.stages.dedupe import Claim
from corebuild.stages.describe import DescribeConfig
from corebuild.stages.ocr import OcrConfig
from corebuild.stages.sample import SampleConfig, SamplingPlan
from pipelines.record_coder import RecordCoder, grouping_coder


def test_beams_registry_holds_the_record_coder():
    assert isinstance(beam.coders.registry.get_coder(Record), RecordCoder)
    assert isinstance(beam.coders.registry.get_coder(Claim), RecordCoder)
    assert isinstance(grouping_coder(), RecordCoder)
    rec = Record("tiny-s0-0000001", "tiny", 0, 1, -33.9, 18.4)
    assert grouping_coder().decode(grouping_coder().encode(rec)) == rec


def test_every_grouping_packs_records_with_it(tiny_server, manifests_dir, prompts_dir, tmp_path, monkeypatch, synthetic_key):
    """A grouping-only pass of the tiny town, in process: each point is packed twice, inside its
    unit's tuple (the Spread reshuffle, the Units grouping), and each packed unit is deflated;
    SameImagery carries only keys, packed by bucket (two buckets here: at most two parts).
    Fails if RecordCoder is not the registered coder."""
    packed: Counter = Counter()
    parts: set[bytes] = set()
    encode = record_codec.encode

    def counting(obj):
        for item in obj if isinstance(obj, tuple) else (obj,):
            packed[type(item).__name__] += 1
        if isinstance(obj, tuple):
            packed["key parts" if obj and type(obj[0]) is tuple else "parts"] += 1
        out = encode(obj)
        if isinstance(obj, tuple):
            parts.add(out)
        return out

    monkeypatch.setattr(record_codec, "encode", counting)
    compress = zlib.compress

    def deflating(data, level=-1):
        packed["deflated"] += data in parts  # Beam's pickler deflates too
        return compress(data, level)

    monkeypatch.setattr(zlib, "compress", deflating)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "")
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    cfg = BuildConfig(
        region_id="tiny", output_dir=str(tmp_path), manifests_dir=str(manifests_dir), sample=SampleConfig(limit=12),
        ocr=OcrConfig(backend="off"), describe=DescribeConfig(prompts_dir=str(prompts_dir)), runner=RunnerConfig(stop_after="grouping", dedupe_buckets=2),
    )
    prep = prepare(with_synthetic_endpoints(cfg, tiny_server.base_url), overwrite=True)
    try:
        execute(prep, prep.state, pipeline_factory=test_pipeline.TestPipeline, progress=False)
    finally:
        prep.close()
    points = SamplingPlan(prep.region, prep.cfg.sample).wanted
    assert points > 0 and packed["Record"] == 2 * points
    assert packed["parts"] == 2 * -(-points // prep.state.unit_points)  # one element a unit, at each of the two groupings
    located = packed["tuple"]  # one (panorama, point index) key a point located on imagery
    assert 0 < located <= points and 1 <= packed["key parts"] <= 2  # one bundle, two buckets
    assert packed["deflated"] == packed["parts"] + packed["key parts"]  # each crosses deflated (grouping_packer)
    assert not list((tmp_path / "tiny").glob("shards/*"))  # stop_after="grouping": nothing written
    assert os.environ["MALLOC_ARENA_MAX"] == str(RunnerConfig().malloc_arenas)  # a local run caps arenas, its workers too
