"""The `vllm` describer: a Beam ModelHandler whose model is an in-process `vllm.LLM`, so
RunInference batches records and `LLM.chat` batches them again on the GPU (no HTTP hop).

vLLM cannot run on these CPU machines and its wheel is too large to carry here; the handler is
tested with the engine replaced at its narrowest seam (`llm.chat(conversations, params)`), and
the prompt, checks and provenance are those of the `openai` backend.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from .describe import DescribeConfig
from .errors import ModelUnavailableError, StageError
from .llm_describe import ModelAnswer, apply_answer, apply_review, build_messages, model_error, review_messages
from .prompts import load_prompt
from .record import Record


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


class VllmDescribeHandler(ModelHandler):
    """RunInference over Records: each batch becomes one `LLM.chat` call; failed records pass
    through untouched; every result is a Record (described, or failed with a reason): an engine
    exception fails records (`describe.engine_error`, `describe.prompt_too_long`), never the bundle."""

    name = "vllm"

    def __init__(
        self,
        cfg: DescribeConfig,
        context: dict,
        llm_factory: Optional[Callable[[DescribeConfig], Any]] = None,
        sampling_factory: Optional[Callable[[dict, dict], Any]] = None,
        max_batch_size: int = 32,
    ):
        super().__init__(min_batch_size=1, max_batch_size=max_batch_size)
        self.cfg, self.context = cfg, context
        self.prompt = load_prompt(cfg.prompts_dir, cfg.prompt_id)
        self.sampling = dict(self.prompt.body.get("sampling", {}))
        self._llm_factory = llm_factory or load_vllm
        self._sampling_factory = sampling_factory or vllm_sampling_params

    def load_model(self) -> Any:
        return self._llm_factory(self.cfg)

    def share_model_across_processes(self) -> bool:
        return True  # one engine per GPU VM, not one per SDK process

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

    def run_inference(self, batch: Sequence[Record], model: Any, inference_args: Optional[dict] = None) -> Iterable[PredictionResult]:
        todo = [r for r in batch if not r.failed and r.street is not None and r.ocr is not None]
        results: dict[str, Record] = {}
        side = self.cfg.max_image_side
        if todo:
            params = self._sampling_factory(self.sampling, self.prompt.body["schema"])
            for rec, out in self._ask(model, todo, lambda r: build_messages(r, self.prompt, self.context, side), params, results):
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
        for rec in batch:
            if rec.sample_id in results:
                out_rec = results[rec.sample_id]
            elif rec.failed:
                out_rec = rec
            else:
                out_rec = rec.fail("describe.missing_evidence", "describe needs street views and OCR evidence")
            yield PredictionResult(rec, out_rec, self.cfg.model)
