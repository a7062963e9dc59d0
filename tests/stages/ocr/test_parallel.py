"""Several views read at once by one worker (corebuild/stages/ocr/parallel.py), and the flag
that sets how many."""

import threading

import pytest

from corebuild.errors import ConfigError
from corebuild.record import Record, StreetCapture, StreetView
from corebuild.stages.ocr import OcrConfig, OcrHit, OcrStage
from corebuild.stages.ocr.parallel import ParallelReader


class _MeetingEngine:
    """Reads only while another engine reads too (a barrier of `parties`): sequential reading
    breaks the barrier. Fails the test if two threads ever use it at once."""

    name, model_id = "meet", "meet-1"

    def __init__(self, barrier: threading.Barrier):
        self.barrier, self.busy, self.reads = barrier, False, 0

    def read(self, image: bytes) -> list[OcrHit]:
        assert not self.busy, "an engine used by two threads at once"
        self.busy = True
        try:
            self.barrier.wait()
            self.reads += 1
            if image == b"corrupt":
                raise ValueError("not an image")
            return [OcrHit(image.decode(), 0.9, ((0, 0), (1, 0), (1, 1), (0, 1)))]
        finally:
            self.busy = False


def test_views_are_read_at_once_each_engine_by_one_thread_in_order():
    engines = [_MeetingEngine(b := threading.Barrier(2, timeout=10)), _MeetingEngine(b)]
    reader = ParallelReader(engines)
    try:
        out = reader.read_all([b"A", b"B", b"C", b"corrupt"])
    finally:
        reader.close()
    assert [h[0].text for h in out[:3]] == ["A", "B", "C"]  # in the views' order, whichever thread read each
    assert isinstance(out[3], ValueError)  # a view's fault comes back as its reading, not raised
    assert sorted(e.reads for e in engines) == [2, 2]


def test_one_engine_reads_in_the_callers_thread():
    engine = _MeetingEngine(threading.Barrier(1))
    reader = ParallelReader([engine])
    assert [h[0].text for h in reader.read_all([b"A", b"B"])] == ["A", "B"] and engine.reads == 2


def _record(images):
    views = tuple(StreetView(h, 90, 0, 640, 640, img) for h, img in zip((0.0, 90.0, 180.0, 270.0), images))
    return Record("r-s0-0000000", "r", 0, 0, 0.0, 0.0, street=StreetCapture("test", "p", 0, 0, None, 0.0, views))


def test_the_stage_opens_parallel_engines_and_reads_a_records_views_at_once(monkeypatch):
    """OcrStage with parallel=2: two engines from the plan, a record's views read two at a time
    (the meeting engines would time out one by one), the record as one engine would make it."""
    import corebuild.stages.ocr as ocr

    barrier = threading.Barrier(2, timeout=10)
    made = []
    monkeypatch.setattr(ocr, "load_plan", lambda cfg, plan: made.append(_MeetingEngine(barrier)) or made[-1])
    stage = OcrStage(OcrConfig(parallel=2), None)
    stage.setup()
    try:
        (rec,) = stage.process([_record([b"A", b"B", b"C", b"D"])])
        (bad,) = stage.process([_record([b"A", b"corrupt", b"C", b"D"])])
    finally:
        stage.teardown()
    assert len(made) == 2 and sorted(e.reads for e in made) == [4, 4]
    assert [(t.heading, t.text) for t in rec.ocr] == [(0.0, "A"), (90.0, "B"), (180.0, "C"), (270.0, "D")]
    assert rec.ocr_backend == "meet:meet-1"
    assert bad.failure_reason == "evidence.ocr_error" and "heading 90" in bad.error


def test_parallel_reading_makes_the_same_rows_as_one_engine(demo_world, manifests_dir):
    """Real rapidocr engines on demo views: two at once read exactly what one reads."""
    from corebuild.regions import load_region
    from corebuild.stages.ocr.coverage import plan_ocr
    from corebuild.stages.sample import SampleConfig, sample_region
    from corebuild.synthetic.render import Camera, encode, render_street

    images = []
    for lat, lon in sample_region(load_region("demo", manifests_dir), SampleConfig(seed=11)).points[:12]:
        pano = demo_world.snap(lat, lon, 50)
        if pano is not None:
            images.append([encode(render_street(demo_world, Camera(pano.x, pano.y, h)), "jpeg") for h in (0, 90, 180, 270)])
    rows = {}
    for n in (1, 2):
        stage = OcrStage(OcrConfig(threads=1, parallel=n), plan_ocr(OcrConfig(), [["en"]]))
        stage.setup()
        rows[n] = stage.process([_record(views) for views in images])
        stage.teardown()
    assert rows[1] == rows[2] and any(r.ocr for r in rows[1])


def test_parallel_must_be_at_least_one():
    with pytest.raises(ConfigError, match="ocr.parallel"):
        OcrConfig(parallel=0)


@pytest.mark.parametrize("argv, cores, want", [
    (["--workers", "2"], 2, (1, 2)),  # a 2-core machine: one ONNX thread a worker, two views at once
    (["--workers", "2"], 16, (8, 2)),
    (["--workers", "8"], 16, (2, 4)),  # never more engines than a record has views
    (["--workers", "1"], 2, (0, 1)),  # one worker: ONNX Runtime's own threads, one engine
    (["--workers", "2", "--ocr-parallel", "3"], 2, (1, 3)),
])
def test_the_command_line_sets_views_at_once_from_cores_and_threads(argv, cores, want, monkeypatch):
    from corebuild.cli import build_config, parser

    monkeypatch.setattr("os.cpu_count", lambda: cores)
    cfg = build_config(parser().parse_args(["build", "--region", "demo", *argv]))
    assert (cfg.ocr.threads, cfg.ocr.parallel) == want


def test_a_parallel_flag_below_one_is_refused():
    from corebuild.cli import build_config, parser
    from corebuild.errors import CorebuildError

    with pytest.raises(CorebuildError, match="--ocr-parallel must be >= 1"):
        build_config(parser().parse_args(["build", "--region", "demo", "--ocr-parallel", "0"]))
