"""The segment-anything backend on a tiny randomly initialised SAM (real weights cannot be
downloaded here): the checkpoint check, the loading path, resizing, and the MaskOut contract."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

import corebuild.stages.segment.sam as sam_mod
from corebuild.errors import ModelUnavailableError
from corebuild.stages.segment.masks import rle_decode
from corebuild.stages.segment.sam import SamSegmenter
from corebuild.stages.segment import SegmentConfig, load_segmenter

# Random weights predict low IoU/stability; SAM's default thresholds would drop every mask.
KEEP_ALL = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def tiny_sam(img_size: int = 64, dim: int = 32) -> Sam:
    """SAM's own modules at toy size (one ViT block, 16-px patches, 4x4 embedding)."""
    torch.manual_seed(0)
    emb = img_size // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=img_size, patch_size=16, embed_dim=dim, depth=1, num_heads=2, mlp_ratio=2,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True, window_size=0, out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(emb, emb), input_image_size=(img_size, img_size), mask_in_chans=4),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3, transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def noise_image(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8))


def check_masks(masks, size: tuple[int, int]) -> None:
    w, h = size
    for m in masks:
        decoded = rle_decode(m.rle_counts, m.rle_size)
        assert m.rle_size == (h, w) and decoded.shape == (h, w)
        assert m.area == int(decoded.sum()) > 0
        x, y, bw, bh = m.bbox
        ys, xs = np.nonzero(decoded)
        assert (x, y, bw, bh) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert 0.0 <= m.stability <= 1.0 and isinstance(m.predicted_iou, float)


@pytest.mark.parametrize("checkpoint", ["", "/nonexistent/sam_vit_b_01ec64.pth"])
def test_missing_checkpoint_names_the_file_and_the_setting(checkpoint):
    with pytest.raises(ModelUnavailableError) as err:
        load_segmenter(SegmentConfig(backend="sam", model_type="vit_b", checkpoint=checkpoint))
    msg = str(err.value)
    assert "sam_vit_b_01ec64.pth" in msg and "vit_b" in msg and "SegmentConfig.checkpoint" in msg and "--sam-checkpoint" in msg


def test_vit_h_names_its_own_file():
    with pytest.raises(ModelUnavailableError, match="sam_vit_h_4b8939.pth"):
        SamSegmenter(SegmentConfig(backend="sam", model_type="vit_h"))


def test_tiny_sam_masks_follow_the_maskout_contract():
    seg = SamSegmenter.from_model(tiny_sam(), SegmentConfig(points_per_side=4, min_area_frac=0.0, max_side=64, device="cpu"), KEEP_ALL)
    images = [noise_image(64, 48, 0), noise_image(64, 48, 1)]
    out = seg.segment(images)
    assert len(out) == 2 and all(out)
    for masks in out:
        check_masks(masks, (64, 48))
    assert seg.model_id.startswith("segment-anything==1.0:vit_b:")


def test_small_masks_are_dropped():
    cfg = SegmentConfig(points_per_side=4, min_area_frac=0.0, max_side=64, device="cpu")
    [masks] = SamSegmenter.from_model(tiny_sam(), cfg, KEEP_ALL).segment([noise_image(64, 48)])
    smallest = min(m.area for m in masks)
    strict = SegmentConfig(points_per_side=4, min_area_frac=(smallest + 1) / (64 * 48), max_side=64, device="cpu")
    [kept] = SamSegmenter.from_model(tiny_sam(), strict, KEEP_ALL).segment([noise_image(64, 48)])
    assert all(m.area > smallest for m in kept) and len(kept) < len(masks)


def test_huge_images_are_segmented_small_and_masks_come_back_full_size(monkeypatch):
    seg = SamSegmenter.from_model(tiny_sam(), SegmentConfig(points_per_side=2, min_area_frac=0.0, max_side=96, device="cpu"), KEEP_ALL)
    seen: list[tuple[int, ...]] = []
    generate = seg._generator.generate

    def recording(image: np.ndarray):  # type: ignore[no-untyped-def]
        seen.append(image.shape)
        return generate(image)

    monkeypatch.setattr(seg._generator, "generate", recording)
    big = noise_image(600, 400).resize((6000, 4000), Image.Resampling.NEAREST)
    [masks] = seg.segment([big])
    assert seen == [(64, 96, 3)]
    assert masks
    check_masks(masks, (6000, 4000))


def test_checkpoint_is_loaded_once_and_reused(tmp_path, monkeypatch):
    model = tiny_sam()
    path = tmp_path / "sam_tiny.pth"
    torch.save(model.state_dict(), path)
    builds: list[object] = []

    def build(checkpoint=None):  # type: ignore[no-untyped-def]
        builds.append(checkpoint)
        torch.manual_seed(1)  # different random weights: the file must overwrite them
        return tiny_sam().apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)

    monkeypatch.setitem(sam_mod.sam_model_registry, "vit_b", build)
    cfg = SegmentConfig(backend="sam", checkpoint=str(path), points_per_side=4, min_area_frac=0.0, max_side=64, device="cpu")
    seg = SamSegmenter(cfg, KEEP_ALL)
    for name, value in model.state_dict().items():
        assert torch.equal(seg._model.state_dict()[name], value)
    first = seg.segment([noise_image(64, 48)])
    second = seg.segment([noise_image(64, 48)])
    assert builds == [None] and first == second
    assert seg.model_id == "segment-anything==1.0:vit_b:sam_tiny.pth"


def test_a_checkpoint_for_another_model_is_a_clear_error(tmp_path):
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(tiny_sam().state_dict(), path)  # the real vit_b does not fit these shapes
    with pytest.raises(ModelUnavailableError, match="cannot load .*sam_vit_b_01ec64.pth"):
        SamSegmenter(SegmentConfig(backend="sam", checkpoint=str(path)))
