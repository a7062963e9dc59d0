"""Describe stage: a describer backend (registry) turns a record's evidence into a scene
description. `template` is the offline backend; LVLM backends implement the same interface."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

from .assets import PROMPTS
from .errors import ConfigError
from .prompts import Prompt, load_prompt
from .record import Description, Record
from .scene import view_cues

COMPASS = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")


@dataclass(frozen=True)
class DescribeConfig:
    backend: str = "template"
    prompt_id: str = "template-v1"
    prompts_dir: str = PROMPTS  # a directory, or the packaged prompt sets (corebuild.assets)
    # Model backends (openai-compatible endpoints such as `vllm serve`):
    base_url: str = ""  # e.g. http://127.0.0.1:8000 (the /v1/chat/completions server)
    model: str = ""
    api_key_env: Optional[str] = None  # env var with a bearer token, if the endpoint needs one
    api_key_secret: str = ""  # or a Secret Manager resource name for it (Dataflow workers)
    concurrency: int = 32  # requests in flight per worker
    timeout_s: float = 120.0
    attempts: int = 4
    grounding: str = "fail"  # sign text not in the OCR evidence: "fail" the row, "remove" it, or "off"
    self_review: bool = False  # a second request: the model checks its description against the images
    # Longest image side sent to a model (px); larger images are shrunk, aspect kept, to JPEG.
    # 1024 keeps four views inside the vllm engine's context: Qwen2.5-VL spends a token per 28x28
    # patch, so a 1024x768 view is ~1,000 tokens, four ~4,000 of max_model_len's 8,192 with room
    # for the text and max_tokens=800 (one 4000x3000 photo would be ~15,000). Hosted models shrink
    # past it anyway (GPT-4o to 768 on the short side, Claude to 1568 on the long one). Street
    # View's 640 px views go as fetched.
    max_image_side: int = 1024
    # The in-process vllm engine: context length, and images per prompt (one per view).
    max_model_len: int = 8192
    max_images_per_prompt: int = 4

    def __post_init__(self) -> None:
        for name in ("max_image_side", "max_model_len", "max_images_per_prompt"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"describe.{name} must be a positive integer, not {value!r}")


class Describer(Protocol):
    """Batched: LVLM backends gain from whole batches; records keep their order."""

    name: str
    model_id: str
    prompt: Prompt

    def describe(self, records: Sequence[Record], context: dict) -> list[Record]: ...


def compass(heading: float) -> str:
    return COMPASS[int(((heading % 360) + 22.5) // 45) % 8]


def _side(box, width: int) -> str:
    cx = sum(p[0] for p in box) / len(box)
    return "left" if cx < width / 3 else "right" if cx > 2 * width / 3 else "ahead"


class TemplateDescriber:
    """Writes sentences from OCR text and pixel colour cues; never sees ground truth."""

    name = "template"
    model_id = "template"

    def __init__(self, cfg: DescribeConfig):
        self.prompt = load_prompt(cfg.prompts_dir, cfg.prompt_id)
        if self.prompt.body.get("kind") != "template":
            raise ConfigError(f"prompt set {cfg.prompt_id!r} is not a template prompt (kind={self.prompt.body.get('kind')!r})")

    def _text(self, rec: Record, context: dict) -> str:
        p = self.prompt.body
        sides = p["sides"]
        region = context.get(rec.region_id, {})
        out = [p["intro"].format(region=region.get("name", rec.region_id), country=region.get("country", "?"))]
        any_text = False
        for view in rec.street.views:
            cues = view_cues(view.image)
            parts = []
            for side in ("left", "ahead", "right"):
                colour = getattr(cues, side)
                if colour and colour not in ("grey", "green"):
                    parts.append(p["building"].format(colour=colour, side=sides[side]))
            if cues.ahead is None and cues.pavement > 0.3:
                parts.append(p["open_ahead"])
            if cues.vegetation > 0.04:
                parts.append(p["trees"])
            for t in sorted((t for t in rec.ocr or () if t.heading == view.heading), key=lambda t: sum(x for x, _ in t.box)):
                parts.append(p["sign"].format(text=t.text, side=sides[_side(t.box, view.width)]))
                any_text = True
            out.append(p["view"].format(direction=compass(view.heading), parts=", ".join(parts) or p["nothing"]))
        if not any_text:
            out.append(p["no_text"])
        return " ".join(out)

    def describe(self, records: Sequence[Record], context: dict) -> list[Record]:
        done = []
        for rec in records:
            if rec.failed:
                done.append(rec)
                continue
            if rec.street is None or rec.ocr is None:
                done.append(rec.fail("describe.missing_evidence", "describe needs street views and OCR evidence"))
                continue
            t0 = time.perf_counter()
            try:
                text = self._text(rec, context)
            except Exception as exc:  # one undecodable view fails this record, not the batch
                done.append(rec.fail("describe.error", f"{type(exc).__name__}: {exc}"))
                continue
            if len(text.split()) < self.prompt.body.get("min_words", 1):
                done.append(rec.fail("describe.too_short", f"description has {len(text.split())} words"))
                continue
            desc = Description(text, self.name, self.model_id, self.prompt.id, self.prompt.hash)
            done.append(rec.with_(description=desc).timed("describe", time.perf_counter() - t0))
        return done


DESCRIBERS: dict[str, Callable[[DescribeConfig], Describer]] = {"template": TemplateDescriber}
# Backends that Beam's RunInference runs (a ModelHandler on GPU workers), not a Describer.
RUNINFERENCE_DESCRIBERS = ("vllm",)


def describer_names() -> list[str]:
    """Every describer backend a build can choose."""
    from . import llm_describe  # noqa: F401  (registers the model backends)

    return sorted({*DESCRIBERS, *RUNINFERENCE_DESCRIBERS})


def load_describer(cfg: DescribeConfig) -> Describer:
    from . import llm_describe  # noqa: F401  (registers the model backends; imports describe)

    try:
        return DESCRIBERS[cfg.backend](cfg)
    except KeyError:
        raise ConfigError(f"unknown describer backend {cfg.backend!r}; known: {sorted(DESCRIBERS)}") from None
