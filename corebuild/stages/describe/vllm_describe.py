"""The `vllm` describer: an in-process `vllm.LLM`, so a batch of records is one `LLM.chat` call
batched on the GPU (no HTTP hop). Its registry entry is `shared`: the pipeline runs the describe
stage behind Beam's RunInference, so one engine serves every worker process of a GPU machine.

vLLM cannot run on these CPU machines and its wheel is too large to carry here; the handler is
tested with the engine replaced at its narrowest seam (`llm.chat(conversations, params)`), and
the prompt, checks and provenance are those of the `openai` backend.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from corebuild.stages.describe import DescribeConfig
from corebuild.errors import ModelUnavailableError, StageError
from corebuild.stages.describe.llm import ModelAnswer, apply_answer, apply_review, build_messages, model_error, review_messages
from corebuild.stages.describe.prompts import load_prompt
from corebuild.record import Record


def vllm_sampling_params(sampling: dict, schema: dict) -> Any:
    """vllm.SamplingParams with JSON-schema structured output (the API moved across releases:
    StructuredOutputsParams from ~0.10, GuidedDecodingParams before). max_tokens is always set:
    vLLM's default of 16 would cut every description."""
    import vllm

    kwargs = {k: v for k, v in sampling.items() if k in ("temperature", "top_p", "max_tokens", "seed")}
    try:
        from vllm.sampling_params import StructuredOutputsParams

        return vllm.SamplingParams(**kwargs, structured_outputs=StructuredOutputsParams(json=schema))
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return vllm.SamplingParams(**kwargs, guided_decoding=GuidedDecodingParams(json=schema))


def load_vllm(cfg: DescribeConfig) -> Any:
    try:
        import vllm
    except ImportError:
        raise ModelUnavailableError(
            "describer 'vllm' needs the vllm package on a GPU worker (pip install vllm there); "
            "on other machines use --describer openai against a `vllm serve` endpoint"
        ) from None
    return vllm.LLM(
        model=cfg.model, limit_mm_per_prompt={"image": cfg.max_images_per_prompt}, max_model_len=cfg.max_model_len, enable_prefix_caching=True
    )


def chat_each(model: Any, conversations: list, params: Any) -> list[Any]:
    """One `LLM.chat` output per conversation, or the StageError that conversation met. The batch
    goes in one call, but one prompt vLLM refuses (too long for the context) raises out of the whole
    call with no outputs, as does an engine fault: then each conversation is asked alone, and only
    those that raise again fail."""
    try:
        outputs = list(model.chat(conversations, params, use_tqdm=False))
        if len(outputs) == len(conversations):
            return outputs
        raise RuntimeError(f"LLM.chat returned {len(outputs)} outputs for {len(conversations)} conversations")
    except Exception as exc:
        if len(conversations) == 1:
            return [model_error(exc)]
    done: list[Any] = []
    for conv in conversations:
        try:
            [out] = model.chat([conv], params, use_tqdm=False)
            done.append(out)
        except Exception as exc:
            done.append(model_error(exc))
    return done


class VllmDescriber:
    """Each batch becomes one `LLM.chat` call; failed records pass through untouched; every result
    is a Record (described, or failed with a reason): an engine exception fails records
    (`describe.engine_error`, `describe.prompt_too_long`), never the bundle."""

    name = "vllm"

    def __init__(
        self,
        cfg: DescribeConfig,
        llm_factory: Optional[Callable[[DescribeConfig], Any]] = None,
        sampling_factory: Optional[Callable[[dict, dict], Any]] = None,
    ):
        self.cfg, self.model_id = cfg, cfg.model
        self.prompt = load_prompt(cfg.prompts_dir, cfg.prompt_id)
        self.sampling = dict(self.prompt.body.get("sampling", {}))
        self._sampling_factory = sampling_factory or vllm_sampling_params
        self.engine = (llm_factory or load_vllm)(cfg)

    def _ask(self, model: Any, records: list[Record], build: Callable[[Record], list], params: Any, results: dict[str, Record]) -> list[tuple[Record, Any]]:
        """(record, output) for the records the model answered; the others go into `results` failed."""
        asked: list[tuple[Record, list]] = []
        for rec in records:
            try:
                asked.append((rec, build(rec)))
            except StageError as exc:
                results[rec.sample_id] = rec.fail(exc.reason, str(exc))
        answered = []
        for (rec, _), out in zip(asked, chat_each(model, [conv for _, conv in asked], params) if asked else ()):
            if isinstance(out, StageError):
                results[rec.sample_id] = rec.fail(out.reason, str(out))
            else:
                answered.append((rec, out))
        return answered

    def describe(self, batch: Sequence[Record], context: dict) -> list[Record]:
        model = self.engine
        todo = [r for r in batch if not r.failed and r.street is not None and r.ocr is not None]
        results: dict[str, Record] = {}
        side = self.cfg.max_image_side
        if todo:
            params = self._sampling_factory(self.sampling, self.prompt.body["schema"])
            for rec, out in self._ask(model, todo, lambda r: build_messages(r, self.prompt, context, side), params, results):
                gen = out.outputs[0]
                answer = ModelAnswer(
                    content=gen.text,
                    finish_reason=gen.finish_reason,
                    refusal=None,
                    model_id=self.cfg.model,
                    prompt_tokens=len(out.prompt_token_ids or ()),
                    completion_tokens=len(gen.token_ids or ()),
                )
                results[rec.sample_id] = apply_answer(rec, answer, self.name, self.prompt, self.sampling)
            if self.cfg.self_review:  # CVG-Text's second step, batched the same way
                good = [results[r.sample_id] for r in todo if not results[r.sample_id].failed]
                if good:
                    review = self.prompt.body["review"]
                    params = self._sampling_factory(review.get("sampling", {}), review["schema"])
                    for rec, out in self._ask(model, good, lambda r: review_messages(r, self.prompt, side), params, results):
                        results[rec.sample_id] = apply_review(rec, out.outputs[0].text)
        missing = "describe needs street views and OCR evidence"
        return [results.get(r.sample_id) or (r if r.failed else r.fail("describe.missing_evidence", missing)) for r in batch]
