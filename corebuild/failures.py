"""Failure reasons and their classes: the one table.

A failure reason is `<stage>.<kind>` (`street.over_query_limit`, `aerial.http_503`). Its *kind*
decides its class:
- transient: asking again later can succeed (quota and rate answers, 5xx, timeouts, dropped
  connections, an internal error of one batch). `corebuild build --retry-failed` re-attempts them.
- permanent: the same question gets the same answer (no imagery, duplicates, QC rejections).

`docs/schema.md` prints this table (generated from it).
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

TRANSIENT = "transient"
PERMANENT = "permanent"

# kind -> (class, meaning). `http_5xx` stands for every 5xx status; other `http_4xx` are permanent.
KINDS: dict[str, tuple[str, str]] = {
    # transient: the provider or the machine, not the place
    "over_query_limit": (TRANSIENT, "Street View metadata OVER_QUERY_LIMIT (quota or QPS), after the request's retries"),
    "unknown_error": (TRANSIENT, "Street View metadata UNKNOWN_ERROR (\"may succeed if you try again\")"),
    "http_429": (TRANSIENT, "HTTP 429 Too Many Requests after the retries, or a Retry-After longer than the configured cap"),
    "http_408": (TRANSIENT, "HTTP 408 Request Timeout"),
    "http_5xx": (TRANSIENT, "HTTP 500-599 after the retries"),
    "timeout": (TRANSIENT, "no answer within the client timeout, every attempt"),
    "unreachable": (TRANSIENT, "connection refused or reset, DNS failure"),
    "truncated": (TRANSIENT, "the body was cut off mid-transfer, every attempt"),
    "internal_error": (TRANSIENT, "an exception in one batch (a bug or a passing fault); the batch's records fail, the build goes on"),
    "engine_error": (TRANSIENT, "the in-process model engine raised on a batch"),
    # permanent: the same request gets the same answer
    "zero_results": (PERMANENT, "no panorama within the search radius"),
    "not_found": (PERMANENT, "the provider has no such location or image"),
    "request_denied": (PERMANENT, "the provider refused the key or the request (fix the key, then --overwrite)"),
    "unauthorized": (PERMANENT, "the provider refused the credentials"),
    "invalid_request": (PERMANENT, "the provider called the request invalid"),
    "unexpected_status": (PERMANENT, "a status the provider does not document"),
    "http_4xx": (PERMANENT, "HTTP 4xx other than 408 and 429"),
    "bad_metadata": (PERMANENT, "metadata that is not the documented JSON, every attempt"),
    "bad_image": (PERMANENT, "an image that does not decode or has the wrong size, every attempt"),
    "bad_response": (PERMANENT, "a model reply of an unexpected shape"),
    "bad_format": (PERMANENT, "a model answer that is not the schema's JSON, every attempt"),
    "image_too_large": (PERMANENT, "an image past the byte or pixel limit (raise fetch.http.max_image_*)"),
    "no_imagery": (PERMANENT, "the provider's 'no imagery' placeholder (grey picture, blank tiles)"),
    "duplicate": (PERMANENT, "another point with a lower index has the same panorama or sequence"),
    "not_located": (PERMANENT, "capture was asked for a point that was not located"),
    "no_thumbnail": (PERMANENT, "the Mapillary image has no downloadable thumbnail"),
    "no_local_images": (PERMANENT, "no local image near the point"),
    "unreadable": (PERMANENT, "a local image that cannot be read"),
    "config": (PERMANENT, "the provider's configuration cannot serve this request"),
    "no_street_image": (PERMANENT, "nothing to read: the record has no street image"),
    "ocr_error": (PERMANENT, "the OCR engine raised on a view"),
    "missing_evidence": (PERMANENT, "describe needs street views and OCR evidence"),
    "error": (PERMANENT, "the template describer raised"),
    "too_short": (PERMANENT, "a description below the prompt's minimum length"),
    "length": (PERMANENT, "a description outside the prompt's word bounds"),
    "language": (PERMANENT, "a description not in the prompt's language"),
    "refusal": (PERMANENT, "the model declined"),
    "truncated_answer": (PERMANENT, "the model's answer hit max_tokens"),
    "prompt_too_long": (PERMANENT, "the prompt (text and images) does not fit the model's context"),
    "ungrounded_sign_text": (PERMANENT, "sign text in the description that the OCR evidence does not have"),
    "emptied_by_grounding": (PERMANENT, "grounding removed so much that the description fell below the prompt's minimum"),
    "prompt_injection": (PERMANENT, "the description obeys instruction-like sign text"),
    "self_review": (PERMANENT, "the model's self-review found the description does not match the images"),
    "self_review_unreadable": (PERMANENT, "the self-review answer is not the expected JSON"),
}

# `describe.truncated` is the model hitting max_tokens (an answer, permanent); every other stage's
# `truncated` is a body cut off in transit (transient).
_EXACT = {"describe.truncated": "truncated_answer"}
_HTTP = re.compile(r"http_(\d{3})$")


def kind_of(reason: str) -> str:
    """The table row a reason falls under (`aerial.http_503` -> `http_5xx`)."""
    if reason in _EXACT:
        return _EXACT[reason]
    kind = reason.split(".", 1)[-1]
    m = _HTTP.fullmatch(kind)
    if m and kind not in KINDS:
        code = int(m.group(1))
        return "http_5xx" if 500 <= code <= 599 else "http_4xx"
    return kind


def failure_class(reason: Optional[str]) -> Optional[str]:
    """`transient` | `permanent` for a failure reason, None for no reason. A reason this table
    does not know is permanent (retrying it blindly could loop), and a test keeps the table whole."""
    if not reason:
        return None
    row = KINDS.get(kind_of(reason))
    return row[0] if row else PERMANENT


def is_transient(reason: Optional[str]) -> bool:
    return failure_class(reason) == TRANSIENT


def parse_retry_selection(text: Optional[str]) -> Optional[frozenset[str]]:
    """`--retry-failed` value: None/"" /"transient" = every transient reason (None returned);
    else a comma list of reasons or kinds (`street.over_query_limit,aerial.http_503`, `http_5xx`)."""
    if text is None or text.strip() in ("", TRANSIENT):
        return None
    parts = frozenset(p.strip() for p in text.split(",") if p.strip())
    return parts or None


def selected(reason: Optional[str], selection: Optional[Iterable[str]]) -> bool:
    """Whether a failure row with `reason` is re-attempted under `selection` (None: transient ones)."""
    if not reason:
        return False
    if selection is None:
        return is_transient(reason)
    sel = set(selection)
    return reason in sel or kind_of(reason) in sel or (PERMANENT in sel and not is_transient(reason)) or (TRANSIENT in sel and is_transient(reason))


def table_markdown() -> list[str]:
    """The table for docs/schema.md."""
    lines = ["| kind | class | meaning |", "|---|---|---|"]
    for kind, (cls, meaning) in KINDS.items():
        lines.append(f"| `{kind}` | {cls} | {meaning} |")
    return lines
