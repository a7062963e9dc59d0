"""An OpenAI-compatible `/v1/chat/completions` stand-in for offline builds and tests of the
`openai` describer: it checks the request as vLLM's server would (model, messages, image parts
that decode) and answers in the prompt's JSON schema, quoting the sign texts of the evidence
block. It does not look at the pictures: its descriptions test the wire format, retries and
checks, not scene understanding.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re

from aiohttp import web
from PIL import Image

_EVIDENCE = re.compile(r"<evidence>\n(.*)\n</evidence>", re.S)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"object": "error", "message": message, "type": "BadRequestError", "code": status}, status=status)


def _answer(evidence: dict) -> dict:
    signs = [o["text"] for v in evidence.get("views", []) for o in v.get("ocr", [])]
    where = evidence.get("region") or "the region"
    parts = {
        "road": "a two-lane asphalt street with a dashed centre line and sidewalks on both sides",
        "buildings": "low and mid-rise buildings line the street, with shopfronts at ground level",
        "environment": "street trees and small patches of grass between the buildings",
    }
    text = (
        f"A street scene in {where}. The road is {parts['road']}. Along it, {parts['buildings']}. "
        f"The surroundings show {parts['environment']}, under an open sky with no hills in view. "
        "The camera stands near the middle of the block, looking along the street in four directions."
    )
    text += "".join(f' A sign reads "{s}".' for s in signs)
    return {**parts, "signs": signs, "description": text}


async def chat_completions(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        model, messages = body["model"], body["messages"]
        user = next(m for m in messages if m["role"] == "user")["content"]
        text = next(p["text"] for p in user if p["type"] == "text")
        images = [p["image_url"]["url"] for p in user if p["type"] == "image_url"]
    except (ValueError, KeyError, TypeError, StopIteration):
        return _error(400, "expected a chat completion request with a user message of text and image parts")
    for url in images:
        try:
            Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1], validate=True))).load()
        except (IndexError, ValueError, binascii.Error, OSError):
            return _error(400, "an image part is not a decodable base64 data URI")
    if "<description>" in text:  # the self-review pass
        content = json.dumps({"consistent": True, "problems": []})
    else:
        m = _EVIDENCE.search(text)
        try:
            evidence = json.loads(m.group(1)) if m else {}
        except ValueError:
            return _error(400, "the evidence block is not JSON")
        content = json.dumps(_answer(evidence), ensure_ascii=False)
    return web.json_response(
        {
            "id": "chatcmpl-synthetic",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": len(text) // 4 + 600 * len(images), "completion_tokens": len(content) // 4, "total_tokens": 0},
        }
    )


def add_llm_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
