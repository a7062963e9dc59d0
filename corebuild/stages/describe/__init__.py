"""The describe stage: a describer backend (registry below, one module each) turns a record's
evidence into a scene description. `template` is the offline backend; the LVLM backends
(`openai` for any OpenAI-compatible endpoint, `vllm` in-process on GPU workers) implement the same
batched interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

from corebuild.assets import PROMPTS
from corebuild.errors import ConfigError
from corebuild.options import option, registry_names
from corebuild.stages.describe.prompts import PROMPTS_HELP, Prompt
from corebuild.record import Record
from corebuild.stages.registry import Backend, Registry
from corebuild.stages.stage import StageBase

COMPASS = ("north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west")


@dataclass(frozen=True)
class DescribeConfig:
    backend: str = option(
        "template", flag="--describer", choices=lambda: registry_names(DESCRIBERS),
        help="template (offline), openai (any OpenAI-compatible endpoint, e.g. vllm serve) or vllm (in-process on GPU workers)",
    )
    prompt_id: str = option("template-v1", flag="--prompt", unset="template-v1, or cvg-progressive-v1 for a model describer", help="prompt set id in --prompts")
    # A directory, or the packaged prompt sets (corebuild.assets); the prompt's hash is hashed.
    prompts_dir: str = option(PROMPTS, flag="--prompts", hashed=False, metavar="DIR", help=PROMPTS_HELP)
    # Model backends (openai-compatible endpoints such as `vllm serve`):
    # e.g. http://127.0.0.1:8000 (the /v1/chat/completions server)
    base_url: str = option("", flag="--llm-url", help="base URL of the /v1/chat/completions server")
    model: str = option("", flag="--llm-model", help="model name to request")
    api_key_env: Optional[str] = option(None, flag="--llm-key-env", help="env var holding the endpoint's bearer token, if it needs one")
    # or a Secret Manager resource name for it (Dataflow workers); where a key comes from changes no row
    api_key_secret: str = option("", hashed=False)
    concurrency: int = 32  # requests in flight per worker
    timeout_s: float = 120.0
    attempts: int = 4
    grounding: str = option(
        "fail", flag="--grounding", choices=("fail", "remove", "off"), help="sign text the model invents (not in the OCR evidence): fail the row, remove the text, or off"
    )
    self_review: bool = option(False, flag="--self-review", help="model backends: a second pass where the model checks its description against the images")
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


# Backends by name (one module each); `shared`: one engine per machine, shared by its worker
# processes (the pipeline runs it behind Beam's RunInference): the in-process GPU engine.
DESCRIBERS = Registry(
    "describer backend",
    {
        "template": "corebuild.stages.describe.template:TemplateDescriber",
        "openai": "corebuild.stages.describe.llm:OpenAIDescriber",
        "vllm": Backend("corebuild.stages.describe.vllm_describe:VllmDescriber", shared=True),
    },
)


def load_describer(cfg: DescribeConfig) -> Describer:
    return DESCRIBERS.load(cfg.backend)(cfg)


class DescribeStage(StageBase):
    name = failure_stage = "describe"

    def __init__(self, cfg: DescribeConfig, context: dict, batch_size: int):
        self.cfg, self.context, self.batch_size = cfg, context, batch_size
        self.shared = DESCRIBERS.backend(cfg.backend).shared

    def setup(self) -> None:
        self.describer = load_describer(self.cfg)

    def process(self, batch: list[Record]) -> list[Record]:
        return self.describer.describe(batch, self.context)

    def teardown(self) -> None:
        getattr(getattr(self, "describer", None), "close", lambda: None)()
