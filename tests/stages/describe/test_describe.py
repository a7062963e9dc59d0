import pytest

from corebuild.stages.describe import DescribeConfig, compass, load_describer
from corebuild.errors import ConfigError
from corebuild.record import OcrText, Record, StreetCapture, StreetView
from corebuild.synthetic.render import Camera, encode, render_street


def _rec(world, ocr):
    sign = world.signs[0]
    cx, cy, _ = sign.center
    cam = Camera(cx + sign.normal[0] * 12, cy + sign.normal[1] * 12, 0)
    views = tuple(StreetView(h, 90, 0, 640, 640, encode(render_street(world, Camera(cam.x, cam.y, h)), "jpeg")) for h in (0, 90, 180, 270))
    return Record("tiny-s0-0000000", "tiny", 0, 0, 0, 0, street=StreetCapture("t", "p", 0, 0, None, 0, views), ocr=ocr)


def test_template_description_is_built_from_evidence(tiny_world, prompts_dir):
    d = load_describer(DescribeConfig(prompts_dir=str(prompts_dir)))
    ocr = (OcrText(90.0, "ZEBRA QUILLS 42", 0.97, ((500, 300), (600, 300), (600, 330), (500, 330))),)
    [out] = d.describe([_rec(tiny_world, ocr)], {"tiny": {"name": "Tinytown", "country": "ZA"}})
    text = out.description.text
    # The OCR text (which no sign in the world carries) is what the describer reports.
    assert 'a sign reading "ZEBRA QUILLS 42" on the right' in text
    assert "Tinytown, ZA" in text and "Facing east" in text and "Facing north" in text
    assert not any(s.text in text for s in tiny_world.signs)  # it never reads ground truth
    assert out.description.backend == "template" and out.description.prompt_id == "template-v1"
    assert len(out.description.prompt_hash) == 16


def test_no_text_is_said_and_missing_evidence_fails(tiny_world, prompts_dir):
    d = load_describer(DescribeConfig(prompts_dir=str(prompts_dir)))
    [out] = d.describe([_rec(tiny_world, ())], {})
    assert "No legible signs" in out.description.text
    [bad] = d.describe([_rec(tiny_world, None)], {})
    assert bad.failed and bad.failure_reason == "describe.missing_evidence"


def test_unknown_backend_and_prompt_are_clear_errors(prompts_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown describer backend 'gpt'"):
        load_describer(DescribeConfig(backend="gpt", prompts_dir=str(prompts_dir)))
    with pytest.raises(ConfigError, match="no prompt set 'v9'"):
        load_describer(DescribeConfig(prompt_id="v9", prompts_dir=str(prompts_dir)))


def test_compass():
    assert [compass(h) for h in (0, 44, 46, 90, 180, 270, 359)] == ["north", "north-east", "north-east", "east", "south", "west", "north"]
