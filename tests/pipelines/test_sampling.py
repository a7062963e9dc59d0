"""Sampling under Beam: chunks spread over workers select the same points as one process."""

import dataclasses

from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from corebuild.config import BuildConfig
from corebuild.stages.sample import SampleConfig, SamplingPlan, records_of, sample_records
from pipelines.build_region import SAMPLING_TAG, sample_points


def test_beam_chunked_sampling_equals_the_single_process_sample(tiny_region):
    """Also for a top-up round's longer prefix (55 of the rank order for a quota of 40)."""
    cfg = BuildConfig(region_id="tiny", sample=SampleConfig(seed=3, chunk_cells=1))
    plan = SamplingPlan(tiny_region, cfg.sample)
    expected = records_of(plan.select(*plan.survivors(), take=55), cfg.sample)
    assert expected[:40] == sample_records(tiny_region, cfg.sample)  # a prefix of the same order
    with test_pipeline.TestPipeline() as p:
        out = sample_points(p, cfg.sample, {"tiny": tiny_region}, {"tiny": 55})  # the sampling slice only
        assert_that(out.points, equal_to(expected), label="points")
        assert_that(out[SAMPLING_TAG], equal_to(['{"region_id": "tiny", "requested": 55, "sampled": 55, "shortfall": null}']), label="summary")


def test_a_region_without_land_still_reports_its_shortfall(tiny_region):
    from shapely.geometry import box

    sea = dataclasses.replace(tiny_region, id="sea", polygon=box(-30.01, 0.0, -30.0, 0.01))
    cfg = BuildConfig(region_id="sea")
    with test_pipeline.TestPipeline() as p:
        out = sample_points(p, cfg.sample, {"sea": sea}, {"sea": 40})
        assert_that(out.points, equal_to([]), label="points")
        assert_that(
            out[SAMPLING_TAG],
            equal_to(['{"region_id": "sea", "requested": 40, "sampled": 0, "shortfall": "no land inside the polygon (wanted 40)"}']),
            label="summary",
        )


def test_beam_chunked_sampling_along_roads_equals_the_single_process_sample(tiny_region, tiny_world, tmp_path):
    from corebuild.synthetic.roads import write_roads

    write_roads(tiny_world, str(tmp_path / "tiny.geojson"))
    cfg = SampleConfig(seed=3, chunk_cells=1, roads=str(tmp_path / "tiny.geojson"))
    expected = sample_records(tiny_region, cfg)
    assert expected != sample_records(tiny_region, dataclasses.replace(cfg, roads=None))
    with test_pipeline.TestPipeline() as p:
        out = sample_points(p, cfg, {"tiny": tiny_region}, {"tiny": 40})
        assert_that(out.points, equal_to(expected), label="points")
