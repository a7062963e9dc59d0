import json

import pytest

from corebuild.errors import ManifestError
from corebuild.regions import load_region

from tests.conftest import ROOT, rect_manifest


def test_demo_manifest_is_valid_and_a_few_km2():
    r = load_region("demo", ROOT / "region_manifests")
    assert r.quota >= 500 and r.imagery == "synthetic"
    assert 1.0 < r.area_km2() < 10.0


def _write(tmp_path, doc, name="bad"):
    (tmp_path / f"{name}.json").write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return tmp_path


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(ManifestError, match=r"nope\.json: <file>: no manifest for region 'nope'"):
        load_region("nope", tmp_path)


def test_region_id_cannot_escape_the_manifest_dir(tmp_path):
    with pytest.raises(ManifestError, match="safe region id"):
        load_region("../etc/passwd", tmp_path)


@pytest.mark.parametrize(
    "mutate, field, message",
    [
        (lambda d: d["polygon"]["coordinates"][0].__setitem__(slice(None), [[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]), "polygon", "invalid geometry: Self-intersection"),
        (lambda d: d.__setitem__("polygon", {"type": "Point", "coordinates": [0, 0]}), "polygon", "Polygon"),
        (lambda d: d["polygon"]["coordinates"][0].__setitem__(slice(None), [[200, 0], [201, 0], [201, 1], [200, 0]]), "polygon", "outside WGS84"),
        (lambda d: d.__setitem__("country", "Switzerland"), "country", "ISO 3166-1"),
        (lambda d: d.__setitem__("continent", "Atlantis"), "continent", "not one of"),
        (lambda d: d.__setitem__("quota", 0), "quota", "positive"),
        (lambda d: d.__setitem__("quota", True), "quota", "expected int"),
        (lambda d: d.__setitem__("ocr_languages", [["english!"]]), "ocr_languages", "unknown easyocr language code"),
        (lambda d: d.__setitem__("ocr_languages", [["ja", "ko", "en"]]), "ocr_languages", "cannot share one reader"),
        (lambda d: d.__setitem__("ocr_languages", [[7]]), "ocr_languages", "not a language code"),
        (lambda d: d.__setitem__("country", "JP"), "continent", "JP is in Asia"),
        (lambda d: d.__setitem__("country", "QQ"), "country", "not a known"),
        (lambda d: d.__setitem__("qouta", 5), "qouta", "unknown field"),
        (lambda d: d.pop("name"), "name", "missing"),
        (lambda d: d.__setitem__("id", "other"), "id", "does not match file name"),
    ],
)
def test_invalid_manifests_name_file_and_field(tmp_path, mutate, field, message):
    doc = rect_manifest("bad", 10.0, 10.0, 500, 500, 10)
    mutate(doc)
    _write(tmp_path, doc)
    with pytest.raises(ManifestError) as err:
        load_region("bad", tmp_path)
    assert err.value.field == field
    assert str(tmp_path / "bad.json") in str(err.value)
    assert message in str(err.value)


def test_broken_json_reports_line_and_column(tmp_path):
    _write(tmp_path, '{\n  "id": "bad",\n  oops\n}')
    with pytest.raises(ManifestError, match=r"<json>: line 3 column 3"):
        load_region("bad", tmp_path)
