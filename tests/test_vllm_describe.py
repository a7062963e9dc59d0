"""The vLLM handler under Beam RunInference, with `vllm.LLM` replaced at its narrowest seam:
an object with `chat(conversations, sampling_params, use_tqdm)` returning vLLM-shaped outputs."""

import json
from types import SimpleNamespace

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that

from corebuild.describe import DescribeConfig
from corebuild.errors import ModelUnavailableError
from corebuild.vllm_describe import VllmDescribeHandler, load_vllm

from .test_llm_describe import CTX, _record

CALLS: list[dict] = []  # module level: the handler is pickled into the pipeline


class FakeLLM:
    def chat(self, conversations, sampling_params, use_tqdm=True):
        CALLS.append({"n": len(conversations), "params": sampling_params, "parts": [len(c[1]["content"]) for c in conversations]})
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


def _handler(prompts_dir, **kw):
    cfg = DescribeConfig(backend="vllm", prompt_id="cvg-progressive-v1", prompts_dir=str(prompts_dir), model="Qwen/Qwen2.5-VL-7B-Instruct")
    return VllmDescribeHandler(cfg, CTX, llm_factory=lambda c: FakeLLM(), sampling_factory=lambda s, schema: {"sampling": s, "schema": schema}, **kw)


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

    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(records) | RunInference(_handler(prompts_dir, max_batch_size=4)) | beam.Map(lambda pr: pr.inference)
        assert_that(out, check)
    assert sum(c["n"] for c in CALLS) == 5 and max(c["n"] for c in CALLS) <= 4  # batched, failed record not sent
    assert all(parts == 5 for c in CALLS for parts in c["parts"])  # text + 4 images per conversation
    assert CALLS[0]["params"]["sampling"]["max_tokens"] == 800 and CALLS[0]["params"]["schema"]["required"][-1] == "description"


def test_a_malformed_answer_fails_only_its_record(prompts_dir):
    from corebuild.record import OcrText

    h = _handler(prompts_dir)
    marked = _record(3, (OcrText(0.0, "MALFORMED", 0.9, ((0, 0), (1, 0), (1, 1), (0, 1))),))
    results = list(h.run_inference([marked, _record(4)], h.load_model()))
    assert [r.inference.failure_reason for r in results] == ["describe.bad_format", None]


def test_without_vllm_the_error_says_what_to_do(prompts_dir):
    with pytest.raises(ModelUnavailableError, match="needs the vllm package on a GPU worker"):
        load_vllm(DescribeConfig(model="m"))


def test_a_build_with_the_vllm_backend(tiny_server, manifests_dir, prompts_dir, synthetic_key, tmp_path, monkeypatch):
    import glob

    import pandas as pd

    import corebuild.vllm_describe as vd
    from corebuild.build import run_build, with_synthetic_endpoints
    from corebuild.config import BuildConfig
    from corebuild.sample import SampleConfig

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
    import dataclasses

    CALLS.clear()
    h = _handler(prompts_dir)
    h.cfg = dataclasses.replace(h.cfg, self_review=True)
    results = [r.inference for r in h.run_inference([_record(1), _record(2)], h.load_model())]
    assert [r.failure_reason for r in results] == ["qc.self_review", "qc.self_review"]
    assert [c["n"] for c in CALLS] == [2, 2] and CALLS[1]["params"]["sampling"]["max_tokens"] == 300
