"""Open-vocabulary mask labels with an open_clip model: the `clip` labeler (extra: corebuild[sam]).

Each mask's box (padded a little, for context) is scored against `template.format(label=...)` for
every vocabulary label; the label with the highest softmax probability wins. Weights come only
from a local file: nothing is downloaded.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from PIL import Image

from corebuild.errors import ModelUnavailableError
from corebuild.stages.segment import MaskOut, SegmentConfig

try:
    import open_clip
    import torch
except ImportError as exc:  # Registry.load turns this into one line naming the extra
    raise ImportError(f"corebuild.stages.segment.clip_labels needs torch and open_clip_torch: pip install 'corebuild[sam]' ({exc})") from exc

PAD_FRAC = 0.1  # share of the box added on each side: a little context helps CLIP name the object


def _weights_hint(model_name: str) -> str:
    hints = []
    for tag in open_clip.list_pretrained_tags_by_model(model_name)[:3]:
        pcfg = open_clip.get_pretrained_cfg(model_name, tag)
        if pcfg.get("hf_hub"):
            hints.append(f"open_clip_pytorch_model.bin from https://huggingface.co/{pcfg['hf_hub'].rstrip('/')} ({tag})")
        elif pcfg.get("url"):
            hints.append(f"{pcfg['url']} ({tag})")
    return "; ".join(hints) if hints else f"an open_clip checkpoint trained for {model_name}"


class ClipLabeler:
    name = "clip"

    def __init__(self, cfg: SegmentConfig):
        if cfg.clip_model not in open_clip.list_models():
            raise ModelUnavailableError(f"labeler 'clip': unknown open_clip architecture {cfg.clip_model!r} (SegmentConfig.clip_model)")
        if not cfg.clip_checkpoint or not os.path.isfile(cfg.clip_checkpoint):
            where = f"{cfg.clip_checkpoint!r} does not exist" if cfg.clip_checkpoint else "no weights file is configured"
            raise ModelUnavailableError(
                f"labeler 'clip' ({cfg.clip_model}) needs an open_clip weights file: {where}. "
                f"Get one, e.g. {_weights_hint(cfg.clip_model)}, put it on the worker and set "
                f"SegmentConfig.clip_checkpoint to its path."
            )
        # pretrained=None: never let open_clip resolve a tag or hub name (that would download);
        # pretrained_text=False likewise for architectures with a Hugging Face text tower.
        model, _, preprocess = open_clip.create_model_and_transforms(cfg.clip_model, pretrained=None, pretrained_text=False)
        try:
            open_clip.load_checkpoint(model, cfg.clip_checkpoint)
        except Exception as exc:  # truncated file, weights of another architecture, ...
            raise ModelUnavailableError(
                f"labeler 'clip' cannot load {cfg.clip_checkpoint} into {cfg.clip_model}: {exc} "
                "(SegmentConfig.clip_checkpoint / SegmentConfig.clip_model)"
            ) from None
        tokenizer = open_clip.get_tokenizer(cfg.clip_model)
        self._setup(model, tokenizer, preprocess, cfg, os.path.basename(cfg.clip_checkpoint))

    @classmethod
    def from_model(cls, model: Any, tokenizer: Callable[..., Any], preprocess: Callable[[Image.Image], Any], cfg: SegmentConfig, weights: str = "in-memory") -> "ClipLabeler":
        """A labeler around an already built open_clip model (tests use a randomly initialised one)."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, preprocess, cfg, weights)
        return self

    def _setup(self, model: Any, tokenizer: Callable[..., Any], preprocess: Callable[[Image.Image], Any], cfg: SegmentConfig, weights: str) -> None:
        if cfg.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            self.device = cfg.device
        self._model = model.to(self.device).eval()
        self._tokenizer = tokenizer
        self._preprocess = preprocess
        self._text_cache: dict[tuple[tuple[str, ...], str], torch.Tensor] = {}
        self.model_id = f"open_clip:{cfg.clip_model}:{weights}"

    def _text_features(self, labels: tuple[str, ...], template: str) -> torch.Tensor:
        key = (labels, template)
        if key not in self._text_cache:
            tokens = self._tokenizer([template.format(label=label) for label in labels]).to(self.device)
            with torch.inference_mode():
                feats = self._model.encode_text(tokens).float()
            self._text_cache[key] = feats / feats.norm(dim=-1, keepdim=True)
        return self._text_cache[key]

    def label(self, image: Image.Image, masks: Sequence[MaskOut], labels: Sequence[str], template: str) -> list[tuple[str, float]]:
        if not masks:
            return []
        if not labels:
            raise ValueError("labeler 'clip' needs a non-empty vocabulary")
        text = self._text_features(tuple(labels), template)
        rgb = image.convert("RGB")
        batch = torch.stack([self._preprocess(_crop(rgb, m.bbox)) for m in masks]).to(self.device)
        with torch.inference_mode():
            feats = self._model.encode_image(batch).float()
            feats = feats / feats.norm(dim=-1, keepdim=True)
            probs = (self._model.logit_scale.exp().float() * feats @ text.T).softmax(dim=-1).cpu()
        best = probs.argmax(dim=-1)
        return [(labels[int(i)], float(probs[row, i])) for row, i in enumerate(best)]


def _crop(image: Image.Image, bbox: tuple[float, float, float, float]) -> Image.Image:
    x, y, w, h = bbox
    px, py = max(2.0, w * PAD_FRAC), max(2.0, h * PAD_FRAC)
    left, top = max(0, int(x - px)), max(0, int(y - py))
    right, bottom = min(image.width, int(round(x + w + px))), min(image.height, int(round(y + h + py)))
    if right <= left or bottom <= top:  # degenerate box: label the whole view rather than fail
        return image
    return image.crop((left, top, right, bottom))
