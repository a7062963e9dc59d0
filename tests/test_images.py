"""corebuild.images: provider bytes are decoded within explicit limits, bombs never decoded."""

import io
import threading
import warnings

import pytest
from PIL import Image, ImageFile, PngImagePlugin

from corebuild.errors import ConfigError, StageError
from corebuild.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageCorrupt, ImageLimits, ImageTooLarge, open_image
from corebuild.stages.fetch.http import HttpConfig, decode_image
from tests.stages.fetch.bombs import PILLOW_WARNS, bomb_png, encode, jpeg_claiming, noise_jpeg, noise_png, noise_rgb, truncated

DEFAULTS = dict(max_pixels=DEFAULT_MAX_PIXELS, max_bytes=DEFAULT_MAX_BYTES)


@pytest.fixture()
def loads(monkeypatch):
    """Every ImageFile.load() call (pixels decoded): a bomb must be refused before any."""
    calls: list = []
    real = ImageFile.ImageFile.load

    def counting(self):
        calls.append(self.size)
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting)
    return calls


def test_normal_images_decode_fully():
    for body, fmt in ((noise_jpeg(640, 640), "JPEG"), (noise_png(256, 256), "PNG")):
        img = open_image(body, **DEFAULTS, what="tile")
        assert img.format == fmt and img.size in ((640, 640), (256, 256))
        assert img.im is not None  # loaded: no lazy decode left for a consumer to trip on
    # exactly at the limits is allowed
    body = noise_png(100, 50)
    assert open_image(body, max_pixels=5000, max_bytes=len(body), what="x").size == (100, 50)


def test_body_over_max_bytes_is_refused_before_any_parsing(monkeypatch):
    body = noise_jpeg(64, 64)

    def never(*a, **k):
        raise AssertionError("Image.open called on an oversized body")

    monkeypatch.setattr(Image, "open", never)
    with pytest.raises(ImageTooLarge) as err:
        open_image(body, max_pixels=10**6, max_bytes=len(body) - 1, what="Street View image")
    assert err.value.limit == "bytes" and f"{len(body):,} bytes" in str(err.value) and "Street View image" in str(err.value)


def test_pixel_bomb_under_pillows_guard_is_refused_from_the_header(loads):
    body = bomb_png(9000, 9000)  # 81 MP: under Pillow's ~89.5 MP warning, over our 64 MP
    assert len(body) < 20_000 and 9000 * 9000 < PILLOW_WARNS
    with pytest.raises(ImageTooLarge) as err:
        open_image(body, **DEFAULTS, what="tile 20/1/2")
    assert err.value.limit == "pixels" and "9000x9000" in str(err.value) and "64,000,000" in str(err.value)
    assert loads == []


@pytest.mark.parametrize("side", [10_000, 20_000])  # 100 MP: Pillow warns; 400 MP: Pillow errors
def test_pillows_own_guard_is_an_error_and_its_globals_are_left_alone(loads, side):
    before_max, before_filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    with pytest.raises(ImageTooLarge) as err:
        open_image(bomb_png(side, side), max_pixels=10**12, max_bytes=DEFAULT_MAX_BYTES, what="thumbnail")
    assert err.value.limit == "pillow" and "decompression" in str(err.value)
    assert loads == []
    assert Image.MAX_IMAGE_PIXELS == before_max and warnings.filters == before_filters
    # Outside open_image a DecompressionBombWarning is still only a warning.
    if side * side < 2 * PILLOW_WARNS:
        with pytest.warns(Image.DecompressionBombWarning):
            Image.open(io.BytesIO(bomb_png(side, side))).close()


def test_a_jpeg_header_claiming_a_huge_frame_is_refused(loads):
    body = jpeg_claiming(noise_jpeg(64, 48), 9000, 8000)  # 72 MP claimed, ~3 KB of data
    with pytest.raises(ImageTooLarge) as err:
        open_image(body, **DEFAULTS, what="x")
    assert err.value.limit == "pixels" and loads == []


def test_png_text_chunk_bomb_is_too_large():
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * 3_000_000, zip=True)  # inflates past PngImagePlugin.MAX_TEXT_CHUNK
    body = encode(Image.new("RGB", (8, 8)), "PNG", pnginfo=info)
    with pytest.raises(ImageTooLarge) as err:
        open_image(body, **DEFAULTS, what="x")
    assert err.value.limit == "pillow"


@pytest.mark.parametrize(
    "body",
    [truncated(noise_jpeg(320, 320)), truncated(noise_png(64, 64)), b"<html>rate limited</html>", b""],
    ids=["truncated-jpeg", "truncated-png", "html", "empty"],
)
def test_corrupt_or_truncated_data_is_corrupt_not_a_crash(body):
    with pytest.raises(ImageCorrupt) as err:
        open_image(body, **DEFAULTS, what="Mapillary thumbnail of image 42")
    assert "Mapillary thumbnail of image 42 does not decode" in str(err.value) and "\n" not in str(err.value)


def test_limits_are_configurable():
    body = noise_png(300, 200)
    assert open_image(body, max_pixels=60_000, max_bytes=len(body), what="x").size == (300, 200)
    with pytest.raises(ImageTooLarge, match="300x200"):
        open_image(body, max_pixels=59_999, max_bytes=len(body), what="x")
    with pytest.raises(ImageTooLarge, match="bytes"):
        open_image(body, max_pixels=60_000, max_bytes=len(body) - 1, what="x")


def test_http_config_carries_the_limits_and_validates_them():
    assert HttpConfig().image_limits == ImageLimits(64_000_000, 64 * 1024 * 1024)
    assert HttpConfig(max_image_pixels=1000, max_image_bytes=5000).image_limits == ImageLimits(1000, 5000)
    for bad in (0, -1, 2.5, True, None):
        with pytest.raises(ConfigError, match="positive integer"):
            HttpConfig(max_image_pixels=bad)
        with pytest.raises(ConfigError, match="max_bytes"):
            ImageLimits(max_bytes=bad)


def test_decode_image_maps_rejections_to_stage_reasons():
    limits = ImageLimits(max_pixels=1000, max_bytes=10**6)
    with pytest.raises(StageError) as err:
        decode_image(noise_png(40, 40), "aerial", "tile 1/2/3", limits)
    assert err.value.reason == "aerial.image_too_large" and "fetch.http.max_image_pixels" in str(err.value)
    with pytest.raises(StageError) as err:
        decode_image(bomb_png(20_000, 20_000), "map", "tile 1/2/3", HttpConfig().image_limits)
    assert err.value.reason == "map.image_too_large" and "max_image" not in str(err.value)  # no config raises Pillow's guard
    with pytest.raises(StageError) as err:
        decode_image(truncated(noise_jpeg(64, 64)), "street", "view", HttpConfig().image_limits)
    assert err.value.reason == "street.bad_image"
    assert decode_image(noise_png(20, 20), "street", "view", limits).size == (20, 20)


def test_concurrent_decodes_leave_the_warning_filters_as_they_were():
    before = list(warnings.filters)
    good, bomb = noise_png(64, 64), bomb_png(10_000, 10_000)
    errors: list = []

    def work():
        for i in range(20):
            try:
                open_image(bomb if i % 2 else good, max_pixels=10**12, max_bytes=DEFAULT_MAX_BYTES, what="x")
            except ImageTooLarge:
                pass
            except Exception as exc:  # pragma: no cover - the failure this test looks for
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and warnings.filters == before


def test_mode_and_size_survive_for_every_consumer():
    img = open_image(encode(noise_rgb(33, 17).convert("L"), "PNG"), **DEFAULTS, what="x")
    assert img.mode == "L" and img.size == (33, 17)
