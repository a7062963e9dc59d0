"""The vLLM handler under Beam RunInference, with `vllm.LLM` replaced at its narrowest seam:
an object with `chat(conversations, sampling_params, use_tqdm)` returning vLLM-shaped outputs."""

import base64
import dataclasses
import io
import json
import sys
import types
from types import SimpleNamespace

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that

from corebuild.stages.describe import DescribeConfig
from corebuild.errors import ModelUnavailableError
from corebuild.failures import failure_class
from corebuild.record import OcrText, StreetView
from corebuild.stages.describe.vllm_describe import VllmDescriber, load_vllm

from tests.stages.describe.test_llm_describe import CTX, _record

CALLS: list[dict] = []  # module level: the handler is pickled into the pipeline


# vLLM's message for a prompt past the context (vllm/v1/engine/input_processor.py raises it as
# VLLMValidationError, a ValueError).
TOO_LONG = "The decoder prompt (length 9120) is longer than the maximum model length of 8192. Make sure that `max_model_len` is no smaller than the number of text tokens plus multimodal tokens."
BOX = ((0, 0), (1, 0), (1, 1), (0, 1))


class FakeLLM:
    def chat(self, conversations, sampling_params, use_tqdm=True):
        CALLS.append({"n": len(conversations), "params": sampling_params, "parts": [len(c[1]["content"]) for c in conversations], "convs": conversations})
        texts = [c[1]["content"][0]["text"] for c in conversations]
        if any("ENGINE_DOWN" in t for t in texts):  # an engine fault: every call raises
            raise RuntimeError("EngineCore encountered an issue (url https://h/x?key=SECRET123). See stack trace for the root cause.")
        if any("TOOLONG" in t for t in texts):  # one refused prompt fails the whole call
            raise ValueError(TOO_LONG)
        outs = []
        for conv in conversations:
            text = conv[1]["content"][0]["text"]
            if "<description>" in text:  # self-review: this fake finds every description wrong
                review = json.dumps({"consistent": False, "problems": ["no such houses"]})
                outs.append(SimpleNamespace(prompt_token_ids=[1], outputs=[SimpleNamespace(text=review, token_ids=[2], finish_reason="stop")]))
                continue
            bad = "MALFORMED" in text  # a marker in the record's OCR evidence
            answer = {"road": "r", "buildings": "b", "environment": "e", "signs": [], "description": " ".join(["A calm street with houses."] * 10)}
            content = "not json at all" if bad else json.dumps(answer)
            outs.append(SimpleNamespace(prompt_token_ids=[1] * 900, outputs=[SimpleNamespace(text=content, token_ids=[2] * 60, finish_reason="stop")]))
        return outs


def _describer(cfg):
    return VllmDescriber(cfg, llm_factory=lambda c: FakeLLM(), sampling_factory=lambda s, schema: {"sampling": s, "schema": schema})


def _handler(prompts_dir):
    return _describer(DescribeConfig(backend="vllm", prompt_id="cvg-progressive-v1", prompts_dir=str(prompts_dir), model="Qwen/Qwen2.5-VL-7B-Instruct"))


def _behind_run_inference(prompts_dir, records, batch_size, check):
    """The describe stage as the pipeline runs a shared engine: units through RunInference with a
    keyed ModelHandler over the stage (pipelines/stage_dofn.py), each unit out as it came in."""
    import functools

    from corebuild.stages.describe import DescribeStage
    from pipelines.shared_stage import StageModelHandler
    from apache_beam.ml.inference.base import KeyedModelHandler

    cfg = DescribeConfig(backend="vllm", prompt_id="cvg-progressive-v1", prompts_dir=str(prompts_dir), model="Qwen/Qwen2.5-VL-7B-Instruct")
    make = functools.partial(_FakeEngineStage, cfg, CTX, batch_size)
    assert DescribeStage(cfg, CTX, batch_size).shared  # vllm's registry entry: one engine per machine
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create([(("r", 0), records)]) | RunInference(KeyedModelHandler(StageModelHandler(make))) | beam.FlatMap(lambda kv: kv[1])
        assert_that(out, check)


class _FakeEngineStage:
    """DescribeStage with the engine replaced (module level: Beam pickles the factory)."""

    def __new__(cls, cfg, context, batch_size):
        from corebuild.stages.describe import DescribeStage

        stage = DescribeStage(cfg, context, batch_size)
        stage.setup = lambda: setattr(stage, "describer", _describer(cfg))
        return stage


def test_run_inference_batches_records_and_parses_answers(prompts_dir):
    CALLS.clear()
    records = [_record(i) for i in range(5)] + [_record(9).fail("street.zero_results", "none")]

    def check(results):
        by_id = {r.sample_id: r for r in results}
        assert len(by_id) == 6
        assert by_id["r-s0-0000009"].failure_reason == "street.zero_results"  # passed through
        ok = [r for r in results if not r.failed]
        assert len(ok) == 5 and all(r.description.backend == "vllm" and r.description.completion_tokens == 60 for r in ok)
        assert all(r.description.model_id == "Qwen/Qwen2.5-VL-7B-Instruct" and r.description.prompt_tokens == 900 for r in ok)

    _behind_run_inference(prompts_dir, records, 4, check)
    assert sum(c["n"] for c in CALLS) == 5 and max(c["n"] for c in CALLS) <= 4  # batched, failed record not sent
    assert all(parts == 5 for c in CALLS for parts in c["parts"])  # text + 4 images per conversation
    assert CALLS[0]["params"]["sampling"]["max_tokens"] == 800 and CALLS[0]["params"]["schema"]["required"][-1] == "description"


def test_a_malformed_answer_fails_only_its_record(prompts_dir):
    from corebuild.record import OcrText

    h = _handler(prompts_dir)
    marked = _record(3, (OcrText(0.0, "MALFORMED", 0.9, ((0, 0), (1, 0), (1, 1), (0, 1))),))
    results = h.describe([marked, _record(4)], CTX)
    assert [r.failure_reason for r in results] == ["describe.bad_format", None]


def test_without_vllm_the_error_says_what_to_do(prompts_dir):
    with pytest.raises(ModelUnavailableError, match="needs the vllm package on a GPU worker"):
        load_vllm(DescribeConfig(model="m"))


def test_a_build_with_the_vllm_backend(tiny_server, manifests_dir, prompts_dir, synthetic_key, tmp_path, monkeypatch):
    import glob

    import pandas as pd

    import corebuild.stages.describe.vllm_describe as vd
    from corebuild.running.build import run_build, with_synthetic_endpoints
    from corebuild.config import BuildConfig
    from corebuild.stages.sample import SampleConfig

    monkeypatch.setattr(vd, "load_vllm", lambda cfg: FakeLLM())
    monkeypatch.setattr(vd, "vllm_sampling_params", lambda s, schema: {"sampling": s})
    cfg = BuildConfig(
        region_id="tiny",
        output_dir=str(tmp_path),
        manifests_dir=str(manifests_dir),
        sample=SampleConfig(limit=4),
        describe=DescribeConfig(backend="vllm", prompt_id="cvg-progressive-v1", prompts_dir=str(prompts_dir), model="Qwen/Qwen2.5-VL-7B-Instruct"),
    )
    result = run_build(with_synthetic_endpoints(cfg, tiny_server.base_url), pipeline_factory=test_pipeline.TestPipeline)
    assert result.manifest["consistent"] and result.manifest["models"]["describer"] == "vllm:Qwen/Qwen2.5-VL-7B-Instruct"
    df = pd.concat([pd.read_parquet(f) for f in glob.glob(str(result.out_dir / "shards" / "*.parquet"))])
    kept = df[df.status == "kept"]
    assert len(kept) >= 2 and (kept.describer_backend == "vllm").all() and (kept.completion_tokens == 60).all()


def test_self_review_is_a_second_batched_chat(prompts_dir):
    CALLS.clear()
    h = _handler(prompts_dir)
    h.cfg = dataclasses.replace(h.cfg, self_review=True)
    results = h.describe([_record(1), _record(2)], CTX)
    assert [r.failure_reason for r in results] == ["qc.self_review", "qc.self_review"]
    assert [c["n"] for c in CALLS] == [2, 2] and CALLS[1]["params"]["sampling"]["max_tokens"] == 300


def _cfg(prompts_dir, **kw):
    return DescribeConfig(backend="vllm", prompt_id="cvg-progressive-v1", prompts_dir=str(prompts_dir), model="Qwen/Qwen2.5-VL-7B-Instruct", **kw)


def _marked(i, marker):
    return _record(i, (OcrText(0.0, marker, 0.9, BOX),))


def test_an_engine_error_fails_the_batch_as_rows_and_the_pipeline_goes_on(prompts_dir):
    CALLS.clear()
    records = [_marked(i, "ENGINE_DOWN") for i in range(3)] + [_record(9).fail("street.zero_results", "none")]

    def check(results):
        by_id = {r.sample_id: r for r in results}
        assert len(by_id) == 4 and by_id["r-s0-0000009"].failure_reason == "street.zero_results"
        down = [by_id[f"r-s0-{i:07d}"] for i in range(3)]
        assert all(r.failure_reason == "describe.engine_error" and failure_class(r.failure_reason) == "transient" for r in down)
        assert all("EngineCore encountered an issue" in r.error and "SECRET123" not in r.error and "key=REDACTED" in r.error for r in down)

    _behind_run_inference(prompts_dir, records, 8, check)


def test_one_over_long_prompt_fails_only_its_record(prompts_dir):
    CALLS.clear()
    h = _handler(prompts_dir)
    batch = [_record(0), _marked(1, "TOOLONG"), _record(2), _record(3)]
    results = h.describe(batch, CTX)
    assert [r.failure_reason for r in results] == [None, "describe.prompt_too_long", None, None]
    assert failure_class("describe.prompt_too_long") == "permanent" and "longer than the maximum model length of 8192" in results[1].error
    assert all(r.description.backend == "vllm" for i, r in enumerate(results) if i != 1)
    assert [c["n"] for c in CALLS] == [4, 1, 1, 1, 1]  # the batch, then each record alone


def test_an_engine_error_in_the_review_pass_fails_those_records(prompts_dir):
    class ReviewDown(FakeLLM):
        def chat(self, conversations, sampling_params, use_tqdm=True):
            if "<description>" in conversations[0][1]["content"][0]["text"]:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return super().chat(conversations, sampling_params, use_tqdm)

    h = VllmDescriber(_cfg(prompts_dir, self_review=True), llm_factory=lambda c: ReviewDown(), sampling_factory=lambda s, schema: {})
    results = h.describe([_record(1), _record(2)], CTX)
    assert [r.failure_reason for r in results] == ["describe.engine_error"] * 2 and all("illegal memory access" in r.error for r in results)


def _jpeg(w, h):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (90, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


def test_a_large_view_reaches_the_engine_shrunk_and_a_small_one_unchanged(prompts_dir):
    from PIL import Image

    CALLS.clear()
    rec = _record(0)
    small = rec.street.views[1].image
    big = StreetView(0.0, 90, 0, 4000, 3000, _jpeg(4000, 3000))
    rec = rec.with_(street=dataclasses.replace(rec.street, views=(big,) + rec.street.views[1:]))
    h = _handler(prompts_dir)
    [res] = h.describe([rec], CTX)
    assert not res.failed
    urls = [p["image_url"]["url"] for p in CALLS[0]["convs"][0][1]["content"][1:]]
    sent = [base64.b64decode(u.split(",", 1)[1]) for u in urls]
    img = Image.open(io.BytesIO(sent[0]))
    assert urls[0].startswith("data:image/jpeg;base64,") and img.format == "JPEG" and img.size == (1024, 768)
    assert sent[1:] == [small] * 3  # within the limit: the bytes as fetched


# --- the real vllm_sampling_params, against a stand-in `vllm` that takes only vLLM's own keywords ---
# Field names read from vllm/sampling_params.py: SamplingParams (a msgspec.Struct) and
# StructuredOutputsParams (a dataclass) at vllm-project/vllm main, commit 00388f65 (after the rename
# of guided decoding to structured outputs, v0.10/0.11); SamplingParams with GuidedDecodingParams at
# commit db573835 (around v0.6.3). Fields the engine sets itself (_eos_token_id, ...) are left out.
SAMPLING_FIELDS = {
    "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p", "top_k", "min_p", "seed", "stop",
    "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens", "logprobs", "prompt_logprobs", "prompt_logprob_token_ids",
    "prompt_logprob_start", "logprob_token_ids", "flat_logprobs", "detokenize", "skip_special_tokens", "spaces_between_special_tokens",
    "include_stop_str_in_output", "output_kind", "stream_interval", "skip_clone", "output_text_buffer_length", "structured_outputs",
    "logit_bias", "allowed_token_ids", "extra_args", "bad_words", "skip_reading_prefix_cache", "thinking_token_budget",
    "repetition_detection", "routed_experts_prompt_start", "trace_decode_token_ids",
}  # fmt: skip
STRUCTURED_FIELDS = {
    "json", "regex", "choice", "grammar", "json_object", "disable_any_whitespace", "disable_additional_properties", "whitespace_pattern", "structural_tag",
}  # fmt: skip
OLD_SAMPLING_FIELDS = {
    "n", "best_of", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p", "top_k", "min_p", "seed", "stop",
    "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens", "logprobs", "prompt_logprobs", "detokenize", "skip_special_tokens",
    "spaces_between_special_tokens", "logits_processors", "include_stop_str_in_output", "truncate_prompt_tokens", "output_kind",
    "output_text_buffer_length", "guided_decoding", "logit_bias", "allowed_token_ids",
}  # fmt: skip
GUIDED_FIELDS = {"json", "regex", "choice", "grammar", "json_object", "backend", "whitespace_pattern"}
CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")


def _strict(name, fields, one_constraint=False):
    """A class that, like vLLM's, takes only its own keyword names, and records what it was given."""

    def __init__(self, **kw):
        unknown = sorted(set(kw) - fields)
        if unknown:
            raise TypeError(f"{name}.__init__() got unexpected keyword arguments {unknown}")
        if one_constraint and sum(kw.get(c) is not None for c in CONSTRAINTS) != 1:
            raise ValueError(f"{name}: exactly one kind of structured outputs constraint, got {kw}")  # vLLM's __post_init__
        self.kw = kw

    return type(name, (), {"__init__": __init__, "__repr__": lambda self: f"{name}({self.kw})"})


@pytest.fixture(params=["structured_outputs", "guided_decoding"])
def stand_in_vllm(request, monkeypatch):
    """`import vllm` gives a stand-in: the current API, or the one before structured outputs."""
    vllm, sp = types.ModuleType("vllm"), types.ModuleType("vllm.sampling_params")
    if request.param == "structured_outputs":
        sp.SamplingParams = _strict("SamplingParams", SAMPLING_FIELDS)
        sp.StructuredOutputsParams = _strict("StructuredOutputsParams", STRUCTURED_FIELDS, one_constraint=True)
    else:
        sp.SamplingParams = _strict("SamplingParams", OLD_SAMPLING_FIELDS)
        sp.GuidedDecodingParams = _strict("GuidedDecodingParams", GUIDED_FIELDS)
    vllm.SamplingParams, vllm.sampling_params = sp.SamplingParams, sp
    vllm.LLM = lambda **kw: SimpleNamespace(engine_kwargs=kw, chat=FakeLLM().chat)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp)
    return request.param


def test_the_stand_in_refuses_keywords_vllm_does_not_take(stand_in_vllm):
    import vllm

    with pytest.raises(TypeError, match="max_new_tokens"):
        vllm.SamplingParams(max_new_tokens=800)


def test_sampling_params_carry_max_tokens_sampling_and_the_schemas(stand_in_vllm, prompts_dir, tmp_path):
    prompt = json.loads((prompts_dir / "cvg-progressive-v1.json").read_text())
    prompt["sampling"]["seed"] = 7
    (tmp_path / "cvg-progressive-v1.json").write_text(json.dumps(prompt))
    CALLS.clear()
    cfg = _cfg(tmp_path, self_review=True)
    h = VllmDescriber(cfg)  # the real load_vllm and vllm_sampling_params
    model = h.engine
    assert model.engine_kwargs["max_model_len"] == 8192 and model.engine_kwargs["limit_mm_per_prompt"] == {"image": 4}
    results = h.describe([_record(1)], CTX)
    assert results[0].failure_reason == "qc.self_review"  # described, then reviewed
    describe, review = CALLS[0]["params"].kw, CALLS[1]["params"].kw
    assert {k: describe[k] for k in ("max_tokens", "temperature", "top_p", "seed")} == {"max_tokens": 800, "temperature": 0.2, "top_p": 0.9, "seed": 7}
    assert review["max_tokens"] == prompt["review"]["sampling"]["max_tokens"] == 300
    field = "structured_outputs" if stand_in_vllm == "structured_outputs" else "guided_decoding"
    assert describe[field].kw == {"json": prompt["schema"]} and review[field].kw == {"json": prompt["review"]["schema"]}


def test_engine_settings_come_from_config(stand_in_vllm, prompts_dir):
    model = load_vllm(_cfg(prompts_dir, max_model_len=16384, max_images_per_prompt=6))
    assert model.engine_kwargs == {
        "model": "Qwen/Qwen2.5-VL-7B-Instruct", "max_model_len": 16384, "limit_mm_per_prompt": {"image": 6}, "enable_prefix_caching": True,
    }  # fmt: skip
