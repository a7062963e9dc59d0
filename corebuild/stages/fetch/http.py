"""HTTP for providers: one aiohttp session per worker, retries (tenacity) with exponential
backoff and jitter that honour `Retry-After` (up to a cap), timeouts, and URLs redacted before
they reach a message or a log.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Mapping, Optional, Protocol
from urllib.parse import urlencode

import aiohttp
from aiolimiter import AsyncLimiter
from PIL import Image
from tenacity import AsyncRetrying, retry_if_exception_type, retry_if_not_exception_type, stop_after_attempt, wait_exponential_jitter

from corebuild.errors import ConfigError, StageError
from corebuild.options import option
from corebuild.redact import SECRET_PARAMS, redact_text, redact_url  # noqa: F401 (re-exported: the one redaction, corebuild.redact)
from corebuild.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageLimits, ImageRejected, ImageTooLarge, open_image

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class HttpConfig:
    # How fast and how hard providers are asked changes no row that a rerun with --retry-failed
    # cannot fix (it turns transient failures into kept rows): not hashed, so a rerun may change
    # it and still resume (lower --rate after quota trouble, raise --max-retry-wait). The image
    # limits below decide which rows are kept for good: hashed.
    concurrency: int = option(16, hashed=False, flag="--concurrency", help="HTTP requests in flight per worker")
    # per provider per worker; 0 = unlimited (the server's 429s still pace us)
    rate_per_s: float = option(
        0.0, hashed=False, flag="--rate", help="requests/s per provider per worker, any positive number (0.2: one every 5 s; 0: unlimited)"
    )
    timeout_s: float = option(30.0, hashed=False)
    attempts: int = option(4, hashed=False)  # per request, the first one included
    backoff_initial_s: float = option(0.5, hashed=False)
    backoff_max_s: float = option(30.0, hashed=False)  # our own backoff's longest wait
    # The longest wait a server may ask for (Retry-After) that we honour. A longer one fails the
    # request at once (transient, `<stage>.http_<status>`) rather than being shortened: asking
    # again sooner than the server said would only earn another refusal.
    max_retry_wait_s: float = option(120.0, hashed=False)
    # Decompression-bomb guards for every provider image, local photos included (see
    # corebuild.images for why 64 MP: camera originals fit, a bomb does not). Pillow's own
    # threshold (~89.5 MP) stays a ceiling: raising max_image_pixels past it has no effect.
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    # Encoded size of one image: a body past this is cut off while it downloads.
    max_image_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        _ = self.image_limits  # validates: ConfigError on a limit that is not a positive integer
        if not (isinstance(self.attempts, int) and self.attempts >= 1):
            raise ConfigError(f"fetch.http.attempts must be an integer >= 1, got {self.attempts!r}")
        for name in ("rate_per_s", "max_retry_wait_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"fetch.http.{name} must be a finite number >= 0, got {value!r}")

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_pixels=self.max_image_pixels, max_bytes=self.max_image_bytes)


class BadBody(StageError):
    """A 200 whose body is damaged (cut-short JSON, an image that does not decode). Raised by a
    request's `validate`; the request is sent again, as a damaged transfer is the likely cause,
    and the last reason stands when the attempts run out. Only validated bodies are cached."""


Validator = Callable[[bytes], Any]


class RetryAnswer(StageError):
    """A 200 whose answer says "try again" (Street View metadata OVER_QUERY_LIMIT, UNKNOWN_ERROR).
    Raised by a request's `validate`; retried with the backoff of a 429, and the reason stands
    when the attempts run out. Never cached (only validated bodies are)."""


class RetryableHTTPError(Exception):
    def __init__(self, status: int, url: str, retry_after: Optional[float]):
        self.status, self.retry_after = status, retry_after
        super().__init__(f"HTTP {status} from {url}")


class _WaitTooLong(RetryableHTTPError):
    """A Retry-After past max_retry_wait_s: not retried."""


def _retry_after(headers: Mapping[str, str]) -> Optional[float]:
    """Seconds the server asks us to wait: RFC 9110 Retry-After, delta-seconds or an HTTP-date
    (relative to now; a past date is 0). None when absent or unreadable (backoff alone then)."""
    value = headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": the zone is unknown; HTTP-dates are GMT
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    return max(0.0, seconds) if not math.isnan(seconds) else None


class _WaitRetryAfter:
    """Exponential backoff with jitter, but never sooner than the server's Retry-After (which
    `http_get` has already checked against max_retry_wait_s)."""

    def __init__(self, cfg: HttpConfig):
        try:
            self.backoff = wait_exponential_jitter(multiplier=cfg.backoff_initial_s, max=cfg.backoff_max_s)
        except TypeError:  # tenacity < 9.2 (apache-beam[gcp] brings google-genai, which wants < 9.2): same wait, older name
            self.backoff = wait_exponential_jitter(initial=cfg.backoff_initial_s, max=cfg.backoff_max_s)

    def __call__(self, state) -> float:
        wait = self.backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableHTTPError) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        return wait


def _retry_policy(cfg: HttpConfig) -> dict:
    return {
        "retry": retry_if_exception_type((aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError, RetryableHTTPError, BadBody, RetryAnswer))
        & retry_if_not_exception_type(_WaitTooLong),
        "wait": _WaitRetryAfter(cfg),
        "stop": stop_after_attempt(cfg.attempts),
        "reraise": True,
    }


@dataclass(frozen=True)
class HttpResult:
    status: int
    body: bytes
    content_type: str
    cached: bool = False
    value: Any = None  # what `validate` returned for the body (a decoded image, parsed JSON)


class ResponseCache(Protocol):
    """What HttpClient needs from a cache (corebuild.shards.cache.ContentCache implements it)."""

    async def get(self, key: str) -> Optional[bytes]: ...

    async def put(self, key: str, body: bytes) -> None: ...


class HttpClient:
    """One per provider per worker: a shared aiohttp session, the provider's rate limit
    (token bucket, aiolimiter), an optional response cache, and the retry policy.

    Cache keys are the redacted URL, so secrets never reach the cache either.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        cfg: HttpConfig,
        limiter: Optional[AsyncLimiter] = None,
        cache: Optional[ResponseCache] = None,
    ):
        self.session, self.cfg, self.limiter, self.cache = session, cfg, limiter, cache
        self._retry = _retry_policy(cfg)  # built once: it is the same for every request
        self.requests = 0  # sent over the network (cache hits excluded)
        self.cache_hits = 0

    async def get(
        self,
        url: str,
        params: Mapping[str, str],
        stage: str,
        headers: Optional[Mapping[str, str]] = None,
        cacheable: bool = True,
        cache_key: Optional[str] = None,
        max_image_bytes: Optional[int] = None,
        validate: Optional[Validator] = None,
    ) -> HttpResult:
        """`cache_key` replaces the URL as the cache key where the URL is not stable (pre-signed
        CDN links expire, but the image they point to does not change). `max_image_bytes`: this
        GET fetches an image; a body past it fails as `<stage>.image_too_large` without being
        read to the end. `validate(body)` checks a 200's body (raising BadBody to fetch again);
        its result is `HttpResult.value`. Cache hits are validated too, and a bad one refetched."""
        use_cache = cacheable and self.cache is not None
        if use_cache:
            key = cache_key or redact_url(f"{url}?{urlencode(sorted(params.items()), safe=',|')}" if params else url)
            body = await self.cache.get(key)
            if body is not None:
                try:
                    value = validate(body) if validate else None
                except BadBody:
                    pass  # a damaged entry (written by an older version): fetch it again
                else:
                    self.cache_hits += 1
                    return HttpResult(200, body, "", cached=True, value=value)
        res = await http_get(
            self.session, url, params, self.cfg, stage, headers, self.limiter, self._retry, max_image_bytes=max_image_bytes, validate=validate
        )
        self.requests += 1
        if use_cache and res.status == 200:
            await self.cache.put(key, res.body)
        return res

    async def post_json(
        self, url: str, body: dict, stage: str, headers: Optional[Mapping[str, str]] = None, validate: Optional[Validator] = None
    ) -> HttpResult:
        """POST a JSON body (model endpoints): same limits, retries, timeouts and validation; never cached."""
        res = await http_get(self.session, url, {}, self.cfg, stage, headers, self.limiter, self._retry, method="POST", json_body=body, validate=validate)
        self.requests += 1
        return res


async def http_get(
    session: aiohttp.ClientSession,
    url: str,
    params: Mapping[str, str],
    cfg: HttpConfig,
    stage: str,
    headers: Optional[Mapping[str, str]] = None,
    limiter: Optional[AsyncLimiter] = None,
    retry: Optional[dict] = None,
    method: str = "GET",
    json_body: Optional[dict] = None,
    max_image_bytes: Optional[int] = None,
    validate: Optional[Validator] = None,
) -> HttpResult:
    """GET with retries on connection errors, timeouts, 429, 5xx and damaged or "try again"
    bodies (`validate` raising BadBody or RetryAnswer on a 200).

    Returns the final response for the caller to interpret (4xx are answers, not retried).
    Raises StageError(`<stage>.unreachable` / `.timeout` / `.http_<code>`) when retries run out,
    and `.http_<code>` at once when Retry-After asks for more than cfg.max_retry_wait_s.
    Every attempt, retries included, takes a token from `limiter` first. With `max_image_bytes`,
    a body (declared or received) past it raises StageError(`<stage>.image_too_large`), not retried.
    """
    def safe() -> str:  # redacted URL, only built when a message needs it
        return redact_url(f"{url}?{urlencode(params, safe=',|')}" if params else url)

    timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)

    async def once() -> HttpResult:
        if limiter is not None:
            await limiter.acquire()
        async with session.request(method, url, params=params, json=json_body, headers=headers, timeout=timeout) as resp:
            body = await resp.read() if max_image_bytes is None else await _read_capped(resp, max_image_bytes)
            if resp.status in RETRYABLE_STATUS:
                wait = _retry_after(resp.headers)
                too_long = wait is not None and wait > cfg.max_retry_wait_s
                raise (_WaitTooLong if too_long else RetryableHTTPError)(resp.status, safe(), wait)
            value = validate(body) if validate is not None and resp.status == 200 else None
            return HttpResult(resp.status, body, resp.headers.get("Content-Type", ""), value=value)

    try:
        async for attempt in AsyncRetrying(**(retry or _retry_policy(cfg))):
            with attempt:
                return await once()
    except (RetryableHTTPError, BadBody, RetryAnswer, _BodyTooLarge, asyncio.TimeoutError, aiohttp.ClientError) as exc:
        raise _as_stage_error(exc, stage, cfg, safe, max_image_bytes) from None
    raise AssertionError("unreachable")  # AsyncRetrying either returns or raises


def _as_stage_error(exc: BaseException, stage: str, cfg: HttpConfig, safe: Callable[[], str], max_image_bytes: Optional[int]) -> BaseException:
    """What http_get raises when its retries give up: a StageError whose reason the failure table
    classes; its message names the URL redacted, never aiohttp's text (it can embed the query)."""
    if isinstance(exc, _WaitTooLong):
        return StageError(
            f"{stage}.http_{exc.status}",
            f"{exc} asked to wait {exc.retry_after:.0f} s, more than the {cfg.max_retry_wait_s:g} s cap: raise the cap "
            "(--max-retry-wait [STAGE=]SECONDS, fetch.http.max_retry_wait_s) or retry later with `corebuild build ... --retry-failed`",
        )
    if isinstance(exc, RetryableHTTPError):
        return StageError(f"{stage}.http_{exc.status}", f"{exc} after {cfg.attempts} attempts")
    if isinstance(exc, (BadBody, RetryAnswer)):
        return StageError(exc.reason, f"{exc} ({cfg.attempts} attempts)")
    if isinstance(exc, _BodyTooLarge):
        return StageError(f"{stage}.image_too_large", f"image from {safe()} {exc} (limit {max_image_bytes:,} bytes, fetch.http.max_image_bytes)")
    if isinstance(exc, asyncio.TimeoutError):
        return StageError(f"{stage}.timeout", f"no answer from {safe()} within {cfg.timeout_s:g} s ({cfg.attempts} attempts)")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return StageError(f"{stage}.truncated", f"the answer from {safe()} was cut off mid-body: {type(exc).__name__} ({cfg.attempts} attempts)")
    if isinstance(exc, aiohttp.ClientConnectionError):
        return StageError(f"{stage}.unreachable", f"cannot reach {safe()}: {type(exc).__name__} ({cfg.attempts} attempts)")
    return exc  # another aiohttp.ClientError: as it was


class _BodyTooLarge(Exception):
    """A body past max_image_bytes (not retried: the next answer would be the same)."""


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, read in chunks and abandoned past max_bytes (decompressed size, so a gzip
    Content-Encoding cannot smuggle more). A Content-Length over it is refused unread."""
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise _BodyTooLarge(f"declares {resp.content_length:,} bytes")
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK):
        buf += chunk
        if len(buf) > max_bytes:
            raise _BodyTooLarge(f"was cut off after {len(buf):,} bytes")
    return bytes(buf)


def rate_limiter(rate_per_s: float) -> Optional[AsyncLimiter]:
    """A token bucket for `rate_per_s` requests a second (0: None, unlimited). At or above 1/s it
    holds a second's worth; below, one token refilled every 1/rate s, as AsyncLimiter refuses to
    acquire more than its capacity (AsyncLimiter(0.2, 1.0) would fail every request)."""
    if rate_per_s <= 0:
        return None
    return AsyncLimiter(rate_per_s, 1.0) if rate_per_s >= 1 else AsyncLimiter(1, 1.0 / rate_per_s)


def image_validator(stage: str, what: str, limits: ImageLimits) -> Validator:
    """`validate` for an image GET: the decoded image; one that does not decode is fetched again
    (BadBody), one past the limits fails at once (the next answer would be the same)."""

    def check(body: bytes) -> Image.Image:
        try:
            return decode_image(body, stage, what, limits)
        except StageError as exc:
            if exc.reason == f"{stage}.bad_image":
                raise BadBody(exc.reason, str(exc)) from None
            raise

    return check


def json_validator(reason: str, what: str) -> Validator:
    """`validate` for a JSON answer: the parsed document; a body that does not parse (cut short
    in transit) is fetched again, then fails as `reason`."""

    def check(body: bytes) -> Any:
        try:
            return json.loads(body)
        except ValueError:
            raise BadBody(reason, f"{what} is not JSON ({len(body):,} bytes)") from None

    return check


def decode_image(body: bytes, stage: str, what: str, limits: ImageLimits) -> Image.Image:
    """Fully decode a provider image (a truncated body fails here, not later) within `limits`
    (corebuild.images.open_image). Failures: `<stage>.image_too_large` (bytes, pixels, or
    Pillow's bomb guard) and `<stage>.bad_image` (not an image, truncated, corrupt)."""
    try:
        return open_image(body, max_pixels=limits.max_pixels, max_bytes=limits.max_bytes, what=what)
    except ImageTooLarge as exc:
        hint = f" (fetch.http.max_image_{exc.limit})" if exc.limit in ("bytes", "pixels") else ""
        raise StageError(f"{stage}.image_too_large", f"{exc}{hint}") from None
    except ImageRejected as exc:
        raise StageError(f"{stage}.bad_image", str(exc)) from None
