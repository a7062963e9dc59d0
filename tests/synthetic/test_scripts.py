"""Shop signs in other scripts: the manifest's `synthetic_world.script`, the names, the fonts and
the OCR ground truth; and Latin, the default, unchanged to the byte."""

import copy
import dataclasses
import hashlib
import unicodedata

import numpy as np
import pytest

from corebuild.errors import ConfigError, ManifestError
from corebuild.regions import SyntheticWorldSpec, parse_region
from corebuild.synthetic import scripts
from corebuild.synthetic.render import Camera, clean_signs, render_street
from corebuild.synthetic.signs import sign_texture
from corebuild.synthetic.world import World
from tests.conftest import rect_manifest

# Recorded from the code before scripts existed (Pillow 12.3.0): the demo world's sign texts, and
# the raw RGB pixels of two of its street views (pano id, heading) that show clean signs.
LATIN_SIGN_TEXTS_SHA256 = "f21f8dbb95a7194154ec3535c2733d177ab7c260323bc27b67fad9b228b711c1"
LATIN_VIEWS_SHA256 = {
    ("SYN7R32K29", 0): "5a8518591db74f7e8ceced5437e62de9b6129809e8ef04c4b73b759fc6cad71a",  # CORAL PHARMACY
    ("SYN7R29K44", 270): "8d1f182a8fa69ccc38aeb3f9edfe1d3fc663cc76ec06d2babb947dd6ee33b58f",  # OAK TAILOR, SOL BANK
}
LATIN_TEXTURE_SHA256 = "8505409382c080d43da764d66be0852df752d7a86dfcfe99ace294c3cdeb654f"  # RIVA MARKET, the demo's first sign

SCRIPT_LETTERS = {"cyrillic": ("CYRILLIC",), "arabic": ("ARABIC",), "greek": ("GREEK",), "japanese": ("HIRAGANA", "KATAKANA", "CJK")}


def _in_script(text: str, script: str) -> bool:
    return all(c == " " or unicodedata.name(c, "").startswith(SCRIPT_LETTERS[script]) for c in text) and any(c != " " for c in text)


def _facing(sign, distance=14.0) -> Camera:
    cx, cy, _ = sign.center
    x, y = cx + sign.normal[0] * distance, cy + sign.normal[1] * distance
    return Camera(x, y, float(np.degrees(np.arctan2(-sign.normal[0], -sign.normal[1])) % 360))


_WORLDS: dict = {}


def _world(script: str) -> World:
    """A small town whose manifest asks for `script` signs (built once per script)."""
    if script not in _WORLDS:
        doc = rect_manifest("tiny", -33.92, 18.42, 380, 300, quota=40, synthetic_world={"seed": 3, "script": script})
        _WORLDS[script] = World.for_region(parse_region(doc, "tiny.json"))
    return _WORLDS[script]


def test_latin_default_renders_the_same_bytes_as_before_scripts(demo_world):
    assert demo_world.script == "latin"
    assert hashlib.sha256("\n".join(s.text for s in demo_world.signs).encode()).hexdigest() == LATIN_SIGN_TEXTS_SHA256
    first = demo_world.signs[0]
    assert hashlib.sha256(sign_texture(first.text, first.background, first.foreground).tobytes()).hexdigest() == LATIN_TEXTURE_SHA256
    for (pano_id, heading), digest in LATIN_VIEWS_SHA256.items():
        pano = demo_world.pano(pano_id)
        img = render_street(demo_world, Camera(pano.x, pano.y, heading))
        assert hashlib.sha256(img.tobytes()).hexdigest() == digest, (pano_id, heading)


def test_manifest_script_defaults_to_latin_and_reaches_the_world():
    region = parse_region(rect_manifest("tiny", -33.92, 18.42, 380, 300, quota=40), "tiny.json")
    assert region.synthetic_world == SyntheticWorldSpec(seed=3, script="latin")
    doc = rect_manifest("tiny", -33.92, 18.42, 380, 300, quota=40, synthetic_world={"seed": 3, "script": "cyrillic"})
    assert parse_region(doc, "tiny.json").synthetic_world == SyntheticWorldSpec(seed=3, script="cyrillic")


@pytest.mark.parametrize("script", ["klingon", "Latin", "", 3, None, ["arabic"]])
def test_manifest_rejects_an_unknown_script(script):
    doc = rect_manifest("tiny", -33.92, 18.42, 380, 300, quota=40, synthetic_world={"seed": 3, "script": script})
    with pytest.raises(ManifestError) as exc:
        parse_region(doc, "tiny.json")
    assert exc.value.field == "synthetic_world"
    assert str(exc.value) == f"tiny.json: synthetic_world: script {script!r} is not one of latin, cyrillic, arabic, greek, japanese"


@pytest.mark.parametrize("script", ["cyrillic", "arabic", "greek", "japanese"])
def test_signs_are_written_in_the_world_script(script):
    world = _world(script)
    assert world.script == script
    texts = [s.text for s in world.signs]
    assert len(texts) > 50 and len(set(texts)) == len(texts)
    for sign in world.signs:
        assert sign.script == script and _in_script(sign.text, script), sign.text
        assert unicodedata.is_normalized("NFC", sign.text)
    # Deterministic from the seed, as Latin names are.
    doc = rect_manifest("tiny", -33.92, 18.42, 380, 300, quota=40, synthetic_world={"seed": 3, "script": script})
    assert [s.text for s in World.for_region(parse_region(doc, "tiny.json")).signs] == texts


@pytest.mark.parametrize("script", ["cyrillic", "arabic", "greek", "japanese"])
def test_sign_textures_have_ink_not_missing_glyph_boxes(script):
    for sign in _world(script).signs[:5]:
        tex = np.asarray(sign_texture(sign.text, sign.background, sign.foreground, script))
        boxes = np.asarray(sign_texture("\uffff" * len(sign.text), sign.background, sign.foreground, script))
        # Drawn glyphs, not a row of .notdef boxes: a font that lacks the script draws every
        # letter as the same box, so the text and as many unassigned code points look alike.
        assert tex.shape != boxes.shape or not np.array_equal(tex, boxes), sign.text
        ink = np.abs(tex.astype(int) - np.array(sign.background)).sum(axis=2) > 100
        assert 0.05 < ink.mean() < 0.6, sign.text


def test_arabic_letters_join_and_run_right_to_left():
    def ink(text):
        a = np.asarray(sign_texture(text, (255, 255, 255), (0, 0, 0), "arabic")).min(axis=2) < 128
        cols = np.flatnonzero(a.any(axis=0))
        return a[:, cols.min() : cols.max() + 1]

    # Joined, three behs take far less than three isolated ones (unshaped text: 3.2 times one).
    assert ink("ببب").shape[1] < 2 * ink("ب").shape[1]
    # Right to left: in "با" the alef (the tallest column of ink) comes second, so on the left.
    ba = ink("با")
    assert ba.sum(axis=0).argmax() < ba.shape[1] / 2


@pytest.mark.parametrize("script", ["cyrillic", "arabic", "greek", "japanese"])
def test_street_view_draws_the_sign_in_its_script_and_clean_signs_is_the_truth(script):
    world = _world(script)
    sign = next(s for s in world.signs if s in clean_signs(world, _facing(s)))
    cam = _facing(sign)
    truth = [s.text for s in clean_signs(world, cam)]
    assert sign.text in truth and all(_in_script(t, script) and unicodedata.is_normalized("NFC", t) for t in truth)
    view = np.asarray(render_street(world, cam))
    # The same view with that sign drawn in the Latin font (boxes for these letters) differs.
    as_latin = copy.copy(world)
    as_latin.buildings = [dataclasses.replace(b, sign=dataclasses.replace(b.sign, script="latin")) if b.sign is sign else b for b in world.buildings]
    assert not np.array_equal(view, np.asarray(render_street(as_latin, cam)))


def test_a_missing_font_package_names_the_pip_package(monkeypatch):
    real = scripts.importlib.util.find_spec
    monkeypatch.setattr(scripts.importlib.util, "find_spec", lambda name, *a: None if name == "japanize_matplotlib" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install japanize-matplotlib"):
        scripts.font_path("japanese")
    assert scripts.font_path("cyrillic").name == "DejaVuSans.ttf"
    assert scripts.font_path("latin") is None
