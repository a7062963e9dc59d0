"""The open_clip labeler with randomly initialised weights (real ones cannot be downloaded here):
the weights check, the loading path, and the label/score contract."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image, ImageDraw

from corebuild.stages.segment.clip_labels import ClipLabeler
from corebuild.errors import ModelUnavailableError
from corebuild.stages.segment.masks import rle_encode
from corebuild.stages.segment import MaskOut, SegmentConfig, load_labeler

ARCH = "ViT-S-32"  # the smallest stock open_clip architecture: fast on two CPU cores
LABELS = ["car", "building", "tree", "sky", "person"]
TEMPLATE = "a street-view photo of a {label}"


@pytest.fixture(scope="module")
def random_clip():
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=None)
    return model, open_clip.get_tokenizer(ARCH), preprocess


def scene() -> tuple[Image.Image, list[MaskOut]]:
    img = Image.new("RGB", (160, 120), (120, 170, 230))
    draw = ImageDraw.Draw(img)
    boxes = [(10, 60, 60, 100), (70, 20, 130, 110), (135, 40, 158, 90)]
    for (x0, y0, x1, y1), colour in zip(boxes, [(200, 30, 30), (150, 140, 120), (30, 120, 40)]):
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
    masks = []
    for x0, y0, x1, y1 in boxes:
        mask = np.zeros((120, 160), dtype=bool)
        mask[y0:y1, x0:x1] = True
        counts, size = rle_encode(mask)
        masks.append(MaskOut((float(x0), float(y0), float(x1 - x0), float(y1 - y0)), int(mask.sum()), 0.9, 0.95, counts, size))
    return img, masks


@pytest.mark.parametrize("checkpoint", ["", "/nonexistent/open_clip_pytorch_model.bin"])
def test_missing_weights_name_the_file_and_the_setting(checkpoint):
    with pytest.raises(ModelUnavailableError) as err:
        load_labeler(SegmentConfig(labeler="clip", clip_model="ViT-B-32", clip_checkpoint=checkpoint))
    msg = str(err.value)
    assert "SegmentConfig.clip_checkpoint" in msg and "ViT-B-32" in msg and "open_clip_pytorch_model.bin" in msg
    if checkpoint:
        assert checkpoint in msg


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ModelUnavailableError, match="unknown open_clip architecture 'ViT-Z-99'"):
        ClipLabeler(SegmentConfig(labeler="clip", clip_model="ViT-Z-99", clip_checkpoint=__file__))


def test_each_mask_gets_one_vocabulary_label_and_a_probability(random_clip):
    model, tokenizer, preprocess = random_clip
    labeler = ClipLabeler.from_model(model, tokenizer, preprocess, SegmentConfig(clip_model=ARCH, device="cpu"))
    img, masks = scene()
    named = labeler.label(img, masks, LABELS, TEMPLATE)
    assert len(named) == 3
    for label, score in named:
        assert label in LABELS and isinstance(score, float) and 1 / len(LABELS) <= score <= 1.0  # the argmax of a softmax
    assert labeler.label(img, [], LABELS, TEMPLATE) == []
    assert labeler.model_id == f"open_clip:{ARCH}:in-memory"


def test_text_embeddings_are_computed_once_per_vocabulary(random_clip, monkeypatch):
    model, tokenizer, preprocess = random_clip
    labeler = ClipLabeler.from_model(model, tokenizer, preprocess, SegmentConfig(clip_model=ARCH, device="cpu"))
    calls: list[int] = []
    encode_text, encode_image = model.encode_text, model.encode_image

    def counting_text(tokens, *a, **kw):  # type: ignore[no-untyped-def]
        calls.append(tokens.shape[0])
        return encode_text(tokens, *a, **kw)

    images: list[int] = []

    def counting_image(batch, *a, **kw):  # type: ignore[no-untyped-def]
        images.append(batch.shape[0])
        return encode_image(batch, *a, **kw)

    monkeypatch.setattr(model, "encode_text", counting_text)
    monkeypatch.setattr(model, "encode_image", counting_image)
    img, masks = scene()
    first = labeler.label(img, masks, LABELS, TEMPLATE)
    assert labeler.label(img, masks, LABELS, TEMPLATE) == first
    assert calls == [len(LABELS)]  # one batch of prompts, reused
    assert images == [3, 3]  # one forward pass per image, all crops together
    labeler.label(img, masks[:1], LABELS[:2], TEMPLATE)
    assert calls == [len(LABELS), 2]  # a new vocabulary is encoded once more


def test_weights_file_is_loaded_into_the_architecture(tmp_path, random_clip):
    model, _, _ = random_clip
    path = tmp_path / "clip_small.pt"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, path)  # as saved by DDP training
    labeler = ClipLabeler(SegmentConfig(labeler="clip", clip_model=ARCH, clip_checkpoint=str(path), device="cpu"))
    assert labeler.model_id == f"open_clip:{ARCH}:clip_small.pt"
    loaded = labeler._model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    img, masks = scene()
    a = labeler.label(img, masks, LABELS, TEMPLATE)
    b = ClipLabeler.from_model(model, open_clip.get_tokenizer(ARCH), labeler._preprocess, SegmentConfig(clip_model=ARCH, device="cpu")).label(img, masks, LABELS, TEMPLATE)
    assert [l for l, _ in a] == [l for l, _ in b] and np.allclose([s for _, s in a], [s for _, s in b], atol=1e-5)


def test_weights_of_another_architecture_are_a_clear_error(tmp_path, random_clip):
    model, _, _ = random_clip
    path = tmp_path / "vit_s.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ModelUnavailableError, match="cannot load .*vit_s.pt into ViT-B-32"):
        ClipLabeler(SegmentConfig(labeler="clip", clip_model="ViT-B-32", clip_checkpoint=str(path), device="cpu"))
