import pytest

from corebuild.errors import ModelUnavailableError
from corebuild.ocr import OcrConfig, load_ocr, normalize_text


def test_normalize_text_nfc_and_whitespace():
    assert normalize_text("  Cafe\u0301 \t ROMA\n") == "Café ROMA"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ModelUnavailableError, match="unknown OCR backend 'nope'; known: \\['easyocr', 'rapidocr'\\]"):
        load_ocr(OcrConfig(backend="nope"))


def test_huge_images_are_read_at_a_bounded_size_with_boxes_in_original_pixels():
    import io

    from PIL import Image

    from corebuild.synthetic.render import sign_texture

    big = Image.new("RGB", (6000, 4000), (120, 130, 110))
    big.paste(sign_texture("HUGE BAKERY", (250, 250, 245), (20, 20, 20)).resize((2400, 480)), (1800, 1700))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    [hit] = load_ocr(OcrConfig(max_side=1600)).read(buf.getvalue())
    assert hit.text.replace(" ", "") == "HUGEBAKERY"
    xs, ys = [p[0] for p in hit.box], [p[1] for p in hit.box]
    assert 1700 < min(xs) < 2100 and 3900 < max(xs) < 4400 and 1650 < min(ys) and max(ys) < 2250


def test_an_image_without_text_reads_nothing():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (640, 640), (90, 140, 200)).save(buf, "JPEG")
    assert load_ocr(OcrConfig()).read(buf.getvalue()) == []


def test_grouped_readers_keep_the_more_confident_reading_of_a_box():
    from corebuild.ocr import GroupedOcr, OcrHit

    class Fixed:
        def __init__(self, name, hits):
            self.name, self.model_id, self.hits = name, name, hits

        def read(self, image):
            return self.hits

    box = ((10, 10), (50, 10), (50, 20), (10, 20))
    moved = ((11, 10), (51, 10), (51, 20), (11, 20))
    other = ((100, 10), (140, 10), (140, 20), (100, 20))
    g = GroupedOcr([Fixed("latin", [OcrHit("CAFE", 0.7, box)]), Fixed("ja", [OcrHit("カフェ", 0.9, moved), OcrHit("駅", 0.8, other)])])
    assert [h.text for h in g.read(b"")] == ["カフェ", "駅"] and g.model_id == "latin+ja"
