"""OCR chosen per region: which reader reads which script, what a row records as read and unread,
and the readers themselves on signs in those scripts."""

from __future__ import annotations

import io
import json

import pytest

from tests.conftest import ROOT

from corebuild.errors import ConfigError, ManifestError
from corebuild.record import Record, StreetCapture, StreetView
from corebuild.regions import load_all, parse_region
from corebuild.stages.ocr import GroupedOcr, OcrConfig, OcrHit, OcrStage, load_plan
from corebuild.stages.ocr import coverage
from corebuild.stages.ocr.coverage import needs, plan_ocr, readable, text_scripts


MANIFESTS = ROOT / "region_manifests"


def _wheels_only(backend, group):
    """What this machine has without downloads: the rapidocr wheels, easyocr's English weights."""
    return backend in ("rapidocr", "rapidocr-v5") or (backend == "easyocr" and list(group) == ["en"])


def _all_easyocr(backend, group):
    return True


def test_every_region_names_a_reader_for_each_script_or_none():
    regions, errors = load_all(MANIFESTS)
    assert not errors and len(regions) == 226
    for r in regions:
        plan = plan_ocr(OcrConfig(), r.ocr_languages, r.ocr_languages_unsupported, usable=_wheels_only)
        need = needs(r.ocr_languages, r.ocr_languages_unsupported)
        assert not [s for s in need if s.startswith("unknown:")], (r.id, need)  # every language's script is known
        assert dict(plan.by_script).keys() == need.keys()
        assert sorted(plan.read + plan.unread) == sorted(c for codes in need.values() for c in codes)
        for script, backend in plan.by_script:
            assert backend in ("rapidocr", "rapidocr-v5", "easyocr", "none"), (r.id, script, backend)
            if backend != "none":
                assert any(script in rd.scripts and rd.backend == backend for rd in plan.readers)
    by_id = {r.id: r for r in regions}
    tokyo = plan_ocr(OcrConfig(), by_id["jp-tokyo"].ocr_languages, usable=_wheels_only)
    assert tokyo.by_script == (("japanese", "rapidocr-v5"), ("latin", "rapidocr-v5")) and tokyo.unread == ()
    cairo = by_id["eg-cairo"]
    plan = plan_ocr(OcrConfig(), cairo.ocr_languages, cairo.ocr_languages_unsupported, usable=_wheels_only)
    assert "ar" in plan.unread and dict(plan.by_script)["arabic"] == "none"
    # A build's plan takes the manifest's unsupported languages too: Hebrew is needed, and unread.
    assert "he" in coverage.region_plan(OcrConfig(), by_id["il-tel-aviv"]).unread


def test_auto_takes_the_most_accurate_reader_per_script_and_reuses_one_within_the_tie(monkeypatch):
    latin = plan_ocr(OcrConfig(), [["en"]], usable=_wheels_only)
    assert [(r.backend, r.scripts) for r in latin.readers] == [("rapidocr", ("latin",))]
    # The figures decide: if PP-OCRv5 read Latin better, the demo would run it.
    monkeypatch.setitem(coverage.ACCURACY, "rapidocr-v5", {**coverage.ACCURACY["rapidocr-v5"], "latin": 0.9999})
    assert [r.backend for r in plan_ocr(OcrConfig(), [["en"]], usable=_wheels_only).readers] == ["rapidocr-v5"]
    monkeypatch.undo()
    # With Arabic weights in place: easyocr for Arabic, rapidocr still for Latin (it reads Latin better).
    both = plan_ocr(OcrConfig(), [["ar", "en"], ["fr", "en"]], usable=_all_easyocr)
    assert dict(both.by_script) == {"arabic": "easyocr", "latin": "rapidocr"}
    assert [(r.backend, r.groups) for r in both.readers] == [("easyocr", (("ar", "en"),)), ("rapidocr", (("ar", "en"), ("fr", "en")))]
    assert both.unread == ()
    # Chinese is not measured here: PP-OCRv5 is preferred, and serves the Latin signs too.
    for groups in ([["ch_sim", "en"]], [["ch_tra", "en"], ["ch_sim", "en"]]):
        assert [(r.backend, len(r.scripts)) for r in plan_ocr(OcrConfig(), groups, usable=_wheels_only).readers] == [("rapidocr-v5", len(groups) + 1)]
    without = plan_ocr(OcrConfig(), [["ar", "en"], ["fr", "en"]], usable=_wheels_only)
    assert without.unread == ("ar",) and without.read == ("en", "fr")


def test_the_flag_and_the_manifest_override_the_choice(tmp_path):
    # --ocr-backend names one backend for everything: it reads what it can, the rest is unread.
    plan = plan_ocr(OcrConfig(backend="rapidocr"), [["ja", "en"]], usable=_wheels_only)
    assert plan.unread == ("ja",) and [r.backend for r in plan.readers] == ["rapidocr"]
    off = plan_ocr(OcrConfig(backend="off"), [["ja", "en"]])
    assert off.read == () and off.unread == ("ja", "en")
    # The manifest's ocr_backends names a reader for a script.
    plan = plan_ocr(OcrConfig(), [["en"]], overrides={"latin": "rapidocr-v5"}, usable=_wheels_only)
    assert [r.backend for r in plan.readers] == ["rapidocr-v5"]
    plan = plan_ocr(OcrConfig(), [["ar", "en"]], overrides={"arabic": "none"}, usable=_all_easyocr)
    assert plan.unread == ("ar",)
    with pytest.raises(ConfigError, match="'rapidocr' does not read 'arabic'"):
        plan_ocr(OcrConfig(), [["ar", "en"]], overrides={"arabic": "rapidocr"})
    demo = next(r for r in load_all(MANIFESTS)[0] if r.id == "demo")
    with open(demo.source_path) as f:
        doc = json.load(f)
    region = parse_region({**doc, "ocr_backends": {"latin": "rapidocr-v5"}}, "demo.json")
    assert region.ocr_backends == {"latin": "rapidocr-v5"}
    assert [r.backend for r in coverage.region_plan(OcrConfig(), region).readers] == ["rapidocr-v5"]
    with pytest.raises(ManifestError, match="ocr_backends.klingon"):
        parse_region({**doc, "ocr_backends": {"klingon": "rapidocr"}}, "demo.json")


def test_text_scripts_and_what_a_row_could_read():
    assert text_scripts("ROMA 12") == {"LATIN"} and text_scripts("さくら薬局") == {"HIRAGANA", "CJK"}
    assert text_scripts("ＡＢＣ") == {"LATIN"} and text_scripts("1984") == set()
    assert readable("CAFÉ LUNA", ["en"]) and not readable("АПТЕКА", ["en"]) and readable("АПТЕКА", ["ru", "en"])
    assert readable("さくら薬局", ["ja"]) and not readable("مخبز", ["fr", "en"])


class _Fixed:
    def __init__(self, name, hits):
        self.name, self.model_id, self.hits = name, "test", hits

    def read(self, image):
        return self.hits


def test_several_readers_keep_to_the_scripts_they_were_chosen_for():
    box = ((0.0, 0.0), (100.0, 0.0), (100.0, 20.0), (0.0, 20.0))
    latin = _Fixed("rapidocr", [OcrHit("SAKURA", 0.99, box), OcrHit("ﾊﾟﾝ", 0.98, ((0, 50), (50, 50), (50, 70), (0, 70)))])
    japanese = _Fixed("rapidocr-v5", [OcrHit("さくら", 0.9, box)])
    grouped = GroupedOcr([latin, japanese], [set(coverage.LETTERS["latin"]), set(coverage.LETTERS["japanese"])])
    # The Latin reader's katakana guess is dropped; on the shared box the more confident reading wins.
    assert [h.text for h in grouped.read(b"")] == ["SAKURA"]
    assert grouped.name == "rapidocr+rapidocr-v5"
    unfiltered = GroupedOcr([latin, japanese])
    assert [h.text for h in unfiltered.read(b"")] == ["SAKURA", "ﾊﾟﾝ"]


def _street(image: bytes) -> Record:
    cap = StreetCapture("test", "p", 0, 0, None, 0.0, (StreetView(0.0, 90, 0, 640, 640, image),))
    return Record("r-s0-0000000", "r", 0, 0, 0.0, 0.0, street=cap)


def _sign_view(text: str, script: str) -> bytes:
    from PIL import Image

    from corebuild.synthetic.signs import sign_texture

    sign = sign_texture(text, (250, 250, 245), (20, 20, 20), script)
    img = Image.new("RGB", (640, 640), (120, 130, 140))
    img.paste(sign.resize((min(560, sign.width), sign.height * min(560, sign.width) // sign.width)), (40, 260))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def test_a_japanese_region_reads_its_signs_and_records_what_it_read():
    """The per-region choice for real: PP-OCRv5 reads a kana and kanji sign PP-OCRv4 cannot."""
    image = _sign_view("さくら薬局", "japanese")
    plan = plan_ocr(OcrConfig(), [["ja", "en"]])
    stage = OcrStage(OcrConfig(threads=1), plan)
    stage.setup()
    (rec,) = stage.process([_street(image)])
    assert rec.ocr_backend.startswith("rapidocr-v5:") and "PP-OCRv5" in rec.ocr_backend
    assert "さくら薬局" in [t.text.replace(" ", "") for t in rec.ocr]
    assert rec.ocr_languages_read == ("ja", "en") and rec.ocr_languages_unread == ()
    v4 = load_plan(OcrConfig(threads=1), plan_ocr(OcrConfig(backend="rapidocr"), [["ja", "en"]]))
    assert "さくら薬局" not in [h.text.replace(" ", "") for h in v4.read(image)]
    # The demo's Latin rows keep PP-OCRv4 and record full coverage.
    stage = OcrStage(OcrConfig(threads=1), plan_ocr(OcrConfig(), [["en"]]))
    stage.setup()
    (rec,) = stage.process([_street(_sign_view("DELTA BIKES", "latin"))])
    assert rec.ocr_backend.startswith("rapidocr:") and "DELTABIKES" in [t.text.replace(" ", "") for t in rec.ocr]
    assert (rec.ocr_languages_read, rec.ocr_languages_unread) == (("en",), ())
