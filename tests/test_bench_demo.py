"""bench/bench_demo.py's profile summary: py-spy's raw stacks summed by part of the work (no
build runs here)."""

import pytest

from tests.test_bench_table import _module


@pytest.fixture(scope="module")
def demo():
    return _module("bench_demo")


def _line(*frames: str, n: int) -> str:
    return ";".join(['process 7:"python -m apache_beam.runners.worker.sdk_worker_main"', "Thread.run (threading.py:982)", *frames]) + f" {n}"


def test_samples_are_summed_by_the_first_part_that_names_them(demo):
    raw = "\n".join([
        _line("OcrStage.process (corebuild/stages/ocr/__init__.py:90)", "TextDetector.__call__ (rapidocr_onnxruntime/ch_ppocr_det/text_detect.py:50)",
              "Session.run (onnxruntime/capi/onnxruntime_inference_collection.py:220)", n=20),
        _line("OcrStage.process (corebuild/stages/ocr/__init__.py:90)", "TextDetector.__call__ (rapidocr_onnxruntime/ch_ppocr_det/text_detect.py:50)",
              "OpenVinoModel.__call__ (corebuild/stages/ocr/rapidocr.py:80)", n=30),
        # Detection's own Python (no model below it) is its pre- and post-processing.
        _line("OcrStage.process (corebuild/stages/ocr/__init__.py:90)", "TextDetector.__call__ (rapidocr_onnxruntime/ch_ppocr_det/text_detect.py:50)",
              "DetPreProcess.normalize (rapidocr_onnxruntime/ch_ppocr_det/utils.py:30)", n=10),
        _line("OcrStage.process (corebuild/stages/ocr/__init__.py:90)", "TextRecognizer.__call__ (rapidocr_onnxruntime/ch_ppocr_rec/text_recognize.py:70)", n=10),
        'process 9:"python -m corebuild synthetic serve --region demo";worker (multiprocessing/pool.py:125);_tile_png (corebuild/synthetic/server.py:76);'
        "render_tile (corebuild/synthetic/render.py:374);_draw_tile (corebuild/synthetic/render.py:340) 8",
        'process 9:"python -m corebuild synthetic serve --region demo";_tile_png (corebuild/synthetic/server.py:76);'
        "encode (corebuild/synthetic/render.py:321);Image.save (PIL/Image.py:2500) 7",
        _line("something_else (x.py:1)", n=5),
        'process 9:"python -m corebuild synthetic serve --region demo";RequestHandler._handle_request (aiohttp/web_protocol.py:452) 4',
        _line("SdkWorker.process_bundle (apache_beam/runners/worker/sdk_worker.py:709)", "wait (grpc/_common.py:154)", n=6),
        "a line py-spy did not write",
    ])
    parts = dict(demo.profile_parts(raw))
    assert parts == pytest.approx({
        "OCR: text detection, the model (OpenVINO or ONNX Runtime)": 0.5,
        "OCR: text detection, pre- and post-processing": 0.1,
        "OCR: recognition": 0.1,
        "imagery server: aerial tiles, drawing and downsampling": 0.08,
        "imagery server: PNG and JPEG encoding": 0.07,
        "imagery server: the rest (world, HTTP, its pool)": 0.04,
        "Beam's harness, gRPC (launcher and workers)": 0.06,
        "other": 0.05,  # a Beam worker's process name alone does not make it Beam's harness
    })
    assert [p for p, _ in demo.profile_parts(raw)][:2] == ["OCR: text detection, the model (OpenVINO or ONNX Runtime)", "OCR: text detection, pre- and post-processing"]


def test_an_empty_profile_has_no_parts(demo):
    assert demo.profile_parts("") == []


def test_each_round_lasts_until_the_next_one_starts_the_last_until_the_end(demo):
    from datetime import datetime, timezone

    rounds = [{"round": 1, "take": 600, "started_utc": "2026-11-30T18:37:43.5+00:00"}, {"round": 2, "take": 690, "started_utc": "2026-11-30T18:40:12+00:00"}]
    ended = datetime(2026, 11, 30, 18, 40, 49, tzinfo=timezone.utc)
    assert demo.round_seconds(rounds, ended) == [(1, 148.5, 600), (2, 37.0, 90)]
