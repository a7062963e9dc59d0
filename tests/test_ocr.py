import pytest

from corebuild.errors import ModelUnavailableError
from corebuild.ocr import OcrConfig, load_ocr, normalize_text


def test_normalize_text_nfc_and_whitespace():
    assert normalize_text("  Cafe\u0301 \t ROMA\n") == "Café ROMA"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ModelUnavailableError, match="unknown OCR backend 'nope'; known: \\['rapidocr'\\]"):
        load_ocr(OcrConfig(backend="nope"))
