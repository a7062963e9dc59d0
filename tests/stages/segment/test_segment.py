"""The label and text-on-movers rules on given masks (no model needed), and the stage wiring."""

import io

import numpy as np
import pytest
from PIL import Image

from corebuild.errors import ConfigError
from corebuild.stages.segment.masks import rle_encode
from corebuild.record import OcrText, Record, StreetCapture, StreetView
from corebuild.stages.segment import MaskOut, SegmentConfig, SegmentStage, load_labeler, load_segmenter, segment_record, text_on_movers
from corebuild.stages.stage import run_stage
from corebuild.shards.schema import RunStamp, record_to_row, shard_schema


def _mask(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    counts, size = rle_encode(m)
    return MaskOut((x0, y0, x1 - x0, y1 - y0), int(m.sum()), 0.9, 0.95, counts, size)


class GivenMasks:
    """A segmenter that returns masks it was given (the rules under test need no model)."""

    name, model_id = "given", "fixture"

    def __init__(self, masks):
        self.masks, self.calls = masks, 0

    def segment(self, images):
        self.calls += 1
        return [list(self.masks) for _ in images]


class GivenLabels:
    name, model_id = "given-labels", "fixture"

    def __init__(self, labels):
        self.labels = labels

    def label(self, image, masks, labels, template):
        assert set(self.labels) <= set(labels)  # only vocabulary words
        return [(label, 0.8) for label in self.labels[: len(masks)]]


def _record():
    buf = io.BytesIO()
    Image.new("RGB", (100, 80), (128, 128, 128)).save(buf, "JPEG")
    view = StreetView(90.0, 90, 0, 100, 80, buf.getvalue())
    ocr = (
        OcrText(90.0, "TAXI 555", 0.9, ((12, 12), (38, 12), (38, 22), (12, 22))),  # on the car
        OcrText(90.0, "LUNA CAFE", 0.9, ((62, 10), (92, 10), (92, 20), (62, 20))),  # on the shopfront
        OcrText(90.0, "HALF", 0.9, ((30, 50), (50, 50), (50, 60), (30, 60))),  # 25% on the car
    )
    return Record("r-s0-0000000", "r", 0, 0, 0, 0, street=StreetCapture("t", "p", 0, 0, None, 0, (view,)), ocr=ocr)


MASKS = [_mask(80, 100, 5, 5, 45, 55), _mask(80, 100, 55, 0, 100, 40)]


def test_text_on_a_vehicle_is_dropped_with_its_reason(prompts_dir):
    stage = SegmentStage(SegmentConfig(prompts_dir=str(prompts_dir)))  # as the pipeline runs it, models already loaded
    stage.segmenter, stage.labeler = GivenMasks(MASKS), GivenLabels(["car", "shopfront"])
    [out] = run_stage(stage, [_record()])
    by_text = {t.text: t for t in out.ocr}
    assert by_text["TAXI 555"].dropped == "on_car"
    assert by_text["LUNA CAFE"].dropped is None and by_text["HALF"].dropped is None
    assert [s.label for s in out.segments] == ["car", "shopfront"] and out.segmenter == "given:fixture"
    assert out.labeler == "given-labels:fixture" and dict(out.timings)["segment"] >= 0
    # The writer keeps dropped text (marked) and the masks.
    row = record_to_row(out, RunStamp("b", "c", "v"))
    import pyarrow as pa

    back = pa.Table.from_pylist([row], schema=shard_schema()).to_pylist()[0]
    assert {o["text"]: o["dropped"] for o in back["ocr"]} == {"TAXI 555": "on_car", "LUNA CAFE": None, "HALF": None}
    assert back["segments"][0]["rle_size"] == [80, 100] and back["segmenter"] == "given:fixture"


def test_without_labels_nothing_is_dropped_and_other_headings_do_not_count(prompts_dir):
    cfg = SegmentConfig(prompts_dir=str(prompts_dir))
    out = segment_record(_record(), GivenMasks(MASKS), None, cfg)
    assert all(t.dropped is None for t in out.ocr) and all(s.label is None for s in out.segments)
    rec = _record()
    from corebuild.record import Segment

    # Car masks, but in the view at heading 0: the text at heading 90 is not on them.
    segs = [Segment(0.0, m.bbox, m.area, m.predicted_iou, m.stability, m.rle_counts, m.rle_size, "car", 0.9) for m in MASKS]
    assert all(t.dropped is None for t in text_on_movers(rec.ocr, segs, {"car"}, 0.5))


def test_off_by_default_and_unknown_backends_are_clear(prompts_dir):
    assert load_segmenter(SegmentConfig()) is None and load_labeler(SegmentConfig()) is None
    with pytest.raises(ConfigError, match="unknown segmenter 'nope'"):
        load_segmenter(SegmentConfig(backend="nope"))
    with pytest.raises(ConfigError, match="unknown labeler 'nope'"):
        load_labeler(SegmentConfig(labeler="nope"))
