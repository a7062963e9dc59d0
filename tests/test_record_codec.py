"""corebuild.record_codec: the compact form records take at the pipeline's groupings round-trips
every field exactly (value and type), and is small."""

from __future__ import annotations

import dataclasses
import math
import pickle
import struct

import numpy as np
import pytest

from corebuild import record_codec
from corebuild.record import AerialCrop, Description, OcrText, Record, Segment, StreetCapture, StreetLocation, StreetView, make_sample_id
from corebuild.stages.dedupe import Claim, Duplicate, duplicate_of


def same(a, b) -> bool:
    """Equal with the same types all the way down; floats bit for bit (-0.0, nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


LOC = StreetLocation("streetview", "synthpano_000123_004567", -33.9211, 18.4189, "2021-06", 12.34, "synthpano_000123_004567",
                     copyright="(c) corebuild synthetic", license="LicenseRef-corebuild-synthetic")
MAPILLARY = StreetLocation("mapillary", "IMG7", 1.5, 2.5, None, 0.0, "SEQ1", heading=33.25, sequence_id="SEQ1", copyright="(c) x",
                           image_url="https://cdn/t.jpg?x=1", license="CC-BY-SA-4.0")
BASE = Record(make_sample_id("tiny", 0, 17), "tiny", 0, 17, -33.92123456789, 18.42198765432)


def _full() -> Record:
    """Every optional field set, images included (a record after capture, OCR, segment, describe)."""
    views = tuple(StreetView(h, 90.0, 0.0, 320, 320, bytes(range(256)) * 3 + bytes([int(h) % 256]), "jpeg") for h in (0.0, 90.0, 180.0, 270.5))
    aerial = AerialCrop("synthetic_aerial", 18, 256, 256, 18.41, -33.93, 18.43, -33.91, -33.92, 18.42, 0.597, 4, b"\x89PNG\r\n" + b"\0" * 50,
                        attribution="corebuild synthetic world", blank_tiles=1, license="LicenseRef-corebuild-synthetic")
    return BASE.with_(
        status="kept",
        location=MAPILLARY,
        street=StreetCapture.of(MAPILLARY, views),
        aerial=aerial,
        map=dataclasses.replace(aerial, provider="synthetic_map", image_format="png", blank_tiles=0),
        ocr=(OcrText(0.0, "MAIN ST", 0.93, ((1.0, 2.0), (30.5, 2.0), (30.5, 9.0), (1.0, 9.0))),
             OcrText(90.0, "Straße Ω 東京", 0.5, (), dropped="on_vehicle")),
        ocr_backend="rapidocr:ppocr-v4",
        ocr_languages_read=("en",),
        ocr_languages_unread=("ja", "zh"),
        segments=(Segment(0.0, (1.0, 2.0, 3.0, 4.0), 12, 0.91, 0.97, (0, 5, 7, 3), (10, 2), label="tree", label_score=0.8),
                  Segment(90.0, (0.0, 0.0, 1.0, 1.0), 1, 0.5, 0.5, (0, 1), (1, 1))),
        segmenter="sam:vit_b",
        labeler="clip:ViT-B-32",
        description=Description("A street.", "template", "template-v1", "cvg-progressive-v1", "abc123", parts='{"road": "two lanes"}',
                                sampling='{"temperature": 0}', prompt_tokens=120, completion_tokens=64),
        signs_unverifiable=("東京",),
        timings=(("locate", 0.0123), ("capture", 1.5), ("ocr", 0.0)),
    )


RECORDS = {
    "pending": BASE,
    "located": BASE.with_(location=LOC).timed("locate", 0.0123),
    "located_mapillary": BASE.with_(location=MAPILLARY),
    "failed": BASE.fail("street.zero_results", "no panorama within 50 m").timed("locate", 0.01),
    "duplicate": duplicate_of(BASE.with_(location=LOC), "tiny-s0-0000003"),
    "kept_with_every_field": _full(),
    # What no stage writes today but a record may hold: foreign types and edge values come back as they were.
    "odd_values": BASE.with_(
        sample_id="custom id, not derived", seed=-7, point_index=2**70, lat=-0.0, lon=float("nan"), error="", failure_reason="x" * 300,
        timings=(("inf", float("inf")), ("neg", -1e-300), ("whole", 3.0), ("negwhole", -2.0), ("big", 2.0**60)),
        ocr_languages_read=(), signs_unverifiable=("\ud800 lone surrogate",),
    ),
    "numpy_values": Record("tiny-s0-0000001", "tiny", np.int64(0), 1, np.float64(-33.9), np.float32(18.4)),
    "int_where_float_expected": Record("tiny-s0-0000001", "tiny", 0, 1, 5, True),
}


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_every_record_round_trips_exactly(name):
    rec = RECORDS[name]
    back = record_codec.decode(record_codec.encode(rec))
    assert same(back, rec), name
    assert record_codec.encode(back) == record_codec.encode(rec)  # deterministic


def test_claims_round_trip_with_and_without_their_located_record():
    old = Claim("tiny-s0-0000004", 4, "streetview:P1", "panorama", "P1")
    new = Claim("tiny-s0-0000005", 5, "streetview:P1", "panorama", "P1", "tiny-s0-0000004", ("tiny", 0, -33.9, 18.4), LOC)
    for claim in (old, new):
        assert same(record_codec.decode(record_codec.encode(claim)), claim)


def test_a_unit_round_trips_as_one_value_with_its_verdicts():
    unit = tuple(RECORDS[k] for k in sorted(RECORDS)) + (Duplicate(4, "tiny-s0-0000003"),)
    back = record_codec.decode(record_codec.encode(unit))
    assert type(back) is tuple and len(back) == len(unit) and all(same(b, u) for b, u in zip(back, unit))
    # Strings a unit's records repeat (the region id, the provider) are written once per unit.
    alone = len(record_codec.encode(RECORDS["located"]))
    assert len(record_codec.encode((RECORDS["located"],) * 10)) < 10 * alone


def test_the_compact_form_is_a_fraction_of_beams_pickle():
    located = RECORDS["located"]
    size = len(record_codec.encode(located))
    assert size < 230 and size * 3 < len(pickle.dumps(located))
    assert len(record_codec.encode(BASE)) < 50  # a pending point: its sample id is rebuilt, not written


def test_garbage_is_refused():
    data = record_codec.encode(RECORDS["located"])
    with pytest.raises(ValueError):
        record_codec.decode(data + b"\0")
    with pytest.raises(ValueError):
        record_codec.decode(b"\xff")
    assert math.isnan(record_codec.decode(record_codec.encode(RECORDS["odd_values"])).lon)
