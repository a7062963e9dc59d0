"""Describers backed by a vision-language model: the prompt (shared by every model backend) and
the `openai` backend for any OpenAI-compatible `/v1/chat/completions` endpoint (`vllm serve`,
a hosted model), with images as data URIs and JSON-schema structured output."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence
from urllib.parse import urlsplit

import aiohttp
from PIL import Image

from corebuild.aio import LoopThread
from corebuild.stages.describe import DescribeConfig, compass
from corebuild.errors import ConfigError, StageError
from corebuild.images import DEFAULT_MAX_PIXELS, ImageRejected, ImageTooLarge, open_header
from corebuild.stages.describe.prompts import Prompt, load_prompt
from corebuild.stages.qc import language_ok
from corebuild.stages.fetch.http import BadBody, HttpClient, HttpConfig, json_validator
from corebuild.redact import redact_text, register_url_secrets
from corebuild.record import Description, Record, StreetView
from corebuild.secrets import resolve_secret

# A prompt (text plus image tokens) past the model's context: vLLM's engine raises
# VLLMValidationError (a ValueError) "The decoder prompt (length N) is longer than the maximum model
# length of M" (vllm/v1/engine/input_processor.py); `vllm serve` and OpenAI answer HTTP 400 "This
# model's maximum context length is N tokens" (code context_length_exceeded).
_CONTEXT_LENGTH = re.compile(r"longer than the maximum model length|maximum context length is|context_length_exceeded", re.I)


def model_error(exc: BaseException) -> StageError:
    """An exception from a model engine as a failure: the prompt not fitting the context is the
    record's (permanent: the same prompt gets the same answer), anything else the engine's (transient)."""
    message = redact_text(f"{type(exc).__name__}: {exc}")[:300]
    if _CONTEXT_LENGTH.search(str(exc)):
        return StageError("describe.prompt_too_long", f"the prompt does not fit the model's context: {message}")
    return StageError("describe.engine_error", f"the model engine raised: {message}")


def image_url(view: StreetView, max_side: int) -> str:
    """The view as a data URI, shrunk to `max_side` on its longest side (aspect kept, JPEG) when
    larger; an image within the limit goes byte for byte as fetched."""
    what = f"the view at heading {view.heading:g}"
    data, fmt = view.image, view.image_format
    try:
        with open_header(io.BytesIO(data), max_pixels=DEFAULT_MAX_PIXELS, what=what) as img:
            if max(img.size) > max_side:
                # reducing_gap=1: a JPEG is decoded at the smallest DCT scale still >= max_side (a
                # 4000 px photo at 1/2), half the time of the default gap, before the Lanczos pass.
                img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=1.0)
                out = io.BytesIO()
                img.convert("RGB").save(out, "JPEG", quality=90)
                data, fmt = out.getvalue(), "jpeg"
    except ImageTooLarge as exc:
        raise StageError("describe.image_too_large", str(exc)) from None
    except ImageRejected as exc:
        raise StageError("describe.bad_image", str(exc)) from None
    except (OSError, ValueError) as exc:  # the header read, the pixels did not
        raise StageError("describe.bad_image", f"{what} does not decode: {type(exc).__name__}: {exc}") from None
    return f"data:image/{fmt};base64,{base64.b64encode(data).decode()}"


def evidence_json(rec: Record, context: dict) -> str:
    """OCR text per heading (dropped text left out), mask labels and the region, as JSON: data
    the prompt delimits and tells the model never to obey."""
    region = context.get(rec.region_id, {})
    views = []
    for v in rec.street.views if rec.street else ():
        views.append(
            {
                "heading": v.heading,
                "facing": compass(v.heading),
                "ocr": [{"text": t.text, "confidence": round(t.confidence, 3)} for t in rec.ocr or () if t.heading == v.heading and not t.dropped],
                "segments": sorted({s.label for s in rec.segments or () if s.heading == v.heading and s.label}),
            }
        )
    doc = json.dumps({"region": region.get("name", rec.region_id), "country": region.get("country"), "views": views}, ensure_ascii=False, indent=1)
    # json.dumps escapes quotes, backslashes and newlines but not angle brackets: OCR text reading
    # "</evidence>" would close the block early. `<`/`>` only occur inside JSON strings, so their
    # \u escapes keep the document valid (and equal once parsed) while no tag can appear in it.
    return doc.replace("<", "\\u003c").replace(">", "\\u003e")


def build_messages(rec: Record, prompt: Prompt, context: dict, max_image_side: int) -> list[dict[str, Any]]:
    """The chat messages every model backend sends; raises StageError for an image that cannot be sent."""
    body = prompt.body
    region = context.get(rec.region_id, {})
    views = rec.street.views
    text = body["user"].format(
        n_views=len(views),
        region=region.get("name", rec.region_id),
        country=region.get("country", "?"),
        headings=", ".join(f"{v.heading:g}" for v in views),
        evidence=evidence_json(rec, context),
        target_words=body["target_words"],
    )
    images = [{"type": "image_url", "image_url": {"url": image_url(v, max_image_side)}} for v in views]
    return [{"role": "system", "content": body["system"]}, {"role": "user", "content": [{"type": "text", "text": text}, *images]}]


def review_messages(rec: Record, prompt: Prompt, max_image_side: int) -> list[dict[str, Any]]:
    r = prompt.body["review"]
    # The description is model output, so data here too: a "</description>" inside it must not
    # close the block (same escape as the evidence; ordinary text has no angle brackets).
    quoted = rec.description.text.replace("<", "\\u003c").replace(">", "\\u003e")
    text = r["user"].format(n_views=len(rec.street.views), description=quoted)
    images = build_messages(rec, prompt, {}, max_image_side)[1]["content"][1:]
    return [{"role": "system", "content": r["system"]}, {"role": "user", "content": [{"type": "text", "text": text}, *images]}]


def apply_review(rec: Record, content: Optional[str]) -> Record:
    """CVG-Text's second QC step: the model judged its own description against the images."""
    try:
        doc = json.loads(content or "")
        consistent, problems = bool(doc["consistent"]), [str(p) for p in doc.get("problems", [])]
    except (ValueError, KeyError, TypeError):
        return rec.fail("qc.self_review_unreadable", f"the review answer is not the expected JSON: {str(content)[:120]!r}")
    if not consistent:
        return rec.fail("qc.self_review", f"the model found the description does not match the images: {problems[:3]}")
    return rec


def parse_answer(content: Optional[str], prompt: Prompt) -> dict[str, Any]:
    """The structured answer, checked against the prompt's schema (required keys and types)."""
    if content is None:
        raise StageError("describe.bad_format", "the model returned no content")
    try:
        doc = json.loads(content)
    except ValueError:
        raise StageError("describe.bad_format", f"the answer is not JSON: {content[:120]!r}") from None
    schema = prompt.body["schema"]
    if not isinstance(doc, dict):
        raise StageError("describe.bad_format", "the answer is not a JSON object")
    for key in schema["required"]:
        if key not in doc:
            raise StageError("describe.bad_format", f"the answer lacks {key!r}")
        want = schema["properties"][key]["type"]
        ok = isinstance(doc[key], str) if want == "string" else isinstance(doc[key], list) and all(isinstance(x, str) for x in doc[key])
        if not ok:
            raise StageError("describe.bad_format", f"{key!r} should be a {want}")
    return doc


@dataclass(frozen=True)
class ModelAnswer:
    """What any model backend got back for one record, before checks."""

    content: Optional[str]
    finish_reason: Optional[str]
    refusal: Optional[str]
    model_id: str
    prompt_tokens: Optional[int]
    completion_tokens: Optional[int]


def apply_answer(rec: Record, a: ModelAnswer, backend: str, prompt: Prompt, sampling: dict) -> Record:
    """Checks shared by every model backend (refusal, truncation, schema, length), then the
    description with its provenance; a failed check is a failure row with its reason."""
    try:
        if a.refusal or a.finish_reason == "content_filter":
            raise StageError("describe.refusal", f"the model declined: {str(a.refusal or a.finish_reason)[:200]}")
        if a.finish_reason == "length":
            raise StageError("describe.truncated", f"the answer hit max_tokens={sampling.get('max_tokens')}")
        answer = parse_answer(a.content, prompt)
    except StageError as exc:
        return rec.fail(exc.reason, str(exc))
    words = len(answer["description"].split())
    b = prompt.body
    if not language_ok(answer["description"], b.get("language", "en"), answer["signs"]):
        return rec.fail("describe.language", f"the description is not in the language asked for ({b.get('language', 'en')})")
    if not b.get("min_words", 0) <= words <= b.get("max_words", 10**6):
        return rec.fail("describe.length", f"description has {words} words, outside {b.get('min_words')}..{b.get('max_words')}")
    desc = Description(
        text=answer["description"].strip(),
        backend=backend,
        model_id=a.model_id,
        prompt_id=prompt.id,
        prompt_hash=prompt.hash,
        parts=json.dumps({k: answer[k] for k in ("road", "buildings", "environment", "signs")}, ensure_ascii=False),
        sampling=json.dumps(sampling, sort_keys=True),
        prompt_tokens=a.prompt_tokens,
        completion_tokens=a.completion_tokens,
    )
    return rec.with_(description=desc)


class OpenAIDescriber:
    """Any OpenAI-compatible chat endpoint; one session and loop per worker."""

    name = "openai"

    def __init__(self, cfg: DescribeConfig):
        if not cfg.base_url or not cfg.model:
            raise ConfigError("describer 'openai' needs base_url and model (--llm-url, --llm-model)")
        self.cfg = cfg
        self.prompt = load_prompt(cfg.prompts_dir, cfg.prompt_id)
        if self.prompt.body.get("kind") != "chat":
            raise ConfigError(f"prompt set {cfg.prompt_id!r} is not a chat prompt (kind={self.prompt.body.get('kind')!r})")
        self.model_id = cfg.model
        if cfg.api_key_env and "@" in urlsplit(cfg.base_url).netloc:  # aiohttp would refuse every request (one Authorization header)
            raise ConfigError("describer 'openai': --llm-url carries user:password@ and --llm-key-env a bearer token; give one of them")
        register_url_secrets(cfg.base_url)
        self._headers = {"Authorization": f"Bearer {resolve_secret(cfg.api_key_env, 'the describer endpoint', cfg.api_key_secret)}"} if cfg.api_key_env else {}
        self.sampling = dict(self.prompt.body.get("sampling", {}))
        self._loop = LoopThread("corebuild-describe")
        self._session, self._http = self._loop.run(self._open())

    async def _open(self):
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.cfg.concurrency))
        http = HttpClient(session, HttpConfig(concurrency=self.cfg.concurrency, timeout_s=self.cfg.timeout_s, attempts=self.cfg.attempts))
        return session, http

    def request_body(self, rec: Record, context: dict) -> dict[str, Any]:
        return {
            "model": self.cfg.model,
            "messages": build_messages(rec, self.prompt, context, self.cfg.max_image_side),
            **self.sampling,
            "response_format": {"type": "json_schema", "json_schema": {"name": "scene_description", "schema": self.prompt.body["schema"], "strict": True}},
        }

    def _validate(self, body: bytes) -> Any:
        """A reply cut short, or an answer that is not the schema's JSON, is asked again (sampling
        may well give a good one); refusals and truncation at max_tokens are answers, kept as such."""
        reply = json_validator("describe.bad_response", "the describer's reply")(body)
        try:
            choice = reply["choices"][0]
            message = choice.get("message") or {}
        except (KeyError, IndexError, TypeError, AttributeError):
            return reply  # an unexpected shape: reported by the caller, not retried
        if not message.get("refusal") and choice.get("finish_reason") not in ("length", "content_filter"):
            try:
                parse_answer(message.get("content"), self.prompt)
            except StageError as exc:
                raise BadBody(exc.reason, str(exc)) from None
        return reply

    async def _one(self, rec: Record, context: dict) -> Record:
        if rec.failed:
            return rec
        if rec.street is None or rec.ocr is None:
            return rec.fail("describe.missing_evidence", "describe needs street views and OCR evidence")
        try:
            res = await self._http.post_json(
                self.cfg.base_url.rstrip("/") + "/v1/chat/completions", self.request_body(rec, context), "describe", self._headers, validate=self._validate
            )
            if res.status != 200:
                # Redacted before it is cut: a cut through a credential would leave half of it unrecognised.
                body = redact_text(res.body[:65536].decode("utf-8", "replace"))
                if res.status == 400 and _CONTEXT_LENGTH.search(body):  # the same failure as vllm's engine raising it
                    raise StageError("describe.prompt_too_long", f"the prompt does not fit the model's context: HTTP 400 {body[:200]!r}")
                raise StageError(f"describe.http_{res.status}", f"the describer endpoint answered HTTP {res.status}: {body[:200]!r}")
            reply = res.value
            choice = reply["choices"][0]
            message = choice.get("message", {})
            usage = reply.get("usage") or {}
            answer = ModelAnswer(
                content=message.get("content"),
                finish_reason=choice.get("finish_reason"),
                refusal=message.get("refusal"),
                model_id=str(reply.get("model") or self.cfg.model),
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
            )
        except StageError as exc:
            return rec.fail(exc.reason, str(exc))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return rec.fail("describe.bad_response", redact_text(f"unexpected reply shape: {type(exc).__name__}: {exc}")[:300])
        rec = apply_answer(rec, answer, self.name, self.prompt, self.sampling)
        if self.cfg.self_review and not rec.failed:
            rec = await self._review(rec)
        return rec

    async def _review(self, rec: Record) -> Record:
        r = self.prompt.body["review"]
        body = {
            "model": self.cfg.model,
            "messages": review_messages(rec, self.prompt, self.cfg.max_image_side),
            **r.get("sampling", {}),
            "response_format": {"type": "json_schema", "json_schema": {"name": "self_review", "schema": r["schema"], "strict": True}},
        }
        try:
            res = await self._http.post_json(
                self.cfg.base_url.rstrip("/") + "/v1/chat/completions", body, "describe", self._headers, validate=json_validator("describe.bad_response", "the self-review reply")
            )
            if res.status != 200:
                raise StageError(f"describe.http_{res.status}", f"the self-review request answered HTTP {res.status}")
            content = res.value["choices"][0]["message"].get("content")
        except StageError as exc:
            return rec.fail(exc.reason, str(exc))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return rec.fail("describe.bad_response", redact_text(f"unexpected self-review reply: {type(exc).__name__}: {exc}")[:300])
        return apply_review(rec, content)

    def describe(self, records: Sequence[Record], context: dict) -> list[Record]:
        # The semaphore, not just the connection pool, bounds work in flight: a request body
        # (four base64 images) is built only when a slot is free, so memory stays flat however
        # many records arrive.
        async def run():
            slots = asyncio.Semaphore(self.cfg.concurrency)

            async def bounded(r: Record) -> Record:
                async with slots:
                    return await self._one(r, context)

            return list(await asyncio.gather(*(bounded(r) for r in records)))

        return self._loop.run(run())

    def close(self) -> None:
        try:
            self._loop.run(self._session.close(), timeout=10)
        finally:
            self._loop.close()

