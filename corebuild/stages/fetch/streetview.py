"""Google Street View Static API client: free metadata call first, then one image per heading."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlencode, urlsplit

from corebuild.errors import StageError
from corebuild.options import option
from corebuild.geo import distance_m
from corebuild.licenses import GOOGLE_MAPS_TOS
from corebuild.record import StreetCapture, StreetLocation, StreetView
from corebuild.secrets import resolve_secret
from corebuild.stages.fetch.blank import is_mostly_flat
from corebuild.stages.fetch.http import HttpClient, RetryAnswer, Validator, image_validator, json_validator

# Metadata statuses the API documents; anything else is reported as it came.
METADATA_FAILURES = {
    "ZERO_RESULTS": "street.zero_results",
    "NOT_FOUND": "street.not_found",
    "OVER_QUERY_LIMIT": "street.over_query_limit",
    "REQUEST_DENIED": "street.request_denied",
    "INVALID_REQUEST": "street.invalid_request",
    "UNKNOWN_ERROR": "street.unknown_error",
}
# Statuses that come inside a 200 but mean "ask again" (quota/QPS, a server fault): retried
# within the request like a 429.
METADATA_RETRY = frozenset({"OVER_QUERY_LIMIT", "UNKNOWN_ERROR"})


@dataclass(frozen=True)
class StreetViewConfig:
    base_url: str = option("https://maps.googleapis.com", flag="--streetview-url", empty_is_default=True, help="Street View API base URL")
    api_key_env: str = "GOOGLE_MAPS_API_KEY"  # the key itself never enters config or output
    signing_secret_env: Optional[str] = None  # optional URL-signing secret (env var name)
    headings: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
    fov: float = 90.0
    pitch: float = 0.0
    width: int = 640
    height: int = 640
    radius_m: float = 50.0
    source: str = "outdoor"
    # The imagery's licence (corebuild.licenses), recorded per row with the metadata's `copyright`
    # as its attribution. Not hashed: it follows from the provider, it chooses no image.
    license: str = option(GOOGLE_MAPS_TOS.id, hashed=False)


def _status_message(doc: dict, radius_m: float) -> str:
    status = doc.get("status", "<missing>")
    detail = doc.get("error_message", "")
    where = f" (no panorama within {radius_m:g} m)" if status == "ZERO_RESULTS" else ""
    return f"Street View metadata status {status}{where}" + (f": {detail}" if detail else "")


def metadata_validator(radius_m: float) -> Validator:
    """`validate` for a metadata answer: the parsed JSON; a retryable status raises RetryAnswer."""
    parse = json_validator("street.bad_metadata", "Street View metadata")

    def check(body: bytes) -> object:
        doc = parse(body)
        if isinstance(doc, dict) and doc.get("status") in METADATA_RETRY:
            raise RetryAnswer(METADATA_FAILURES[doc["status"]], _status_message(doc, radius_m))
        return doc

    return check


def sign_url(path_and_query: str, secret_b64: str) -> str:
    """Google's URL signature: HMAC-SHA1 of path+query with the url-safe base64 secret."""
    key = base64.urlsafe_b64decode(secret_b64)
    digest = hmac.new(key, path_and_query.encode(), hashlib.sha1).digest()
    return base64.urlsafe_b64encode(digest).decode()


class GoogleStreetView:
    name = "google_streetview"

    def __init__(self, http: HttpClient, cfg: StreetViewConfig, api_key: str, signing_secret: Optional[str] = None):
        self.http, self.cfg = http, cfg
        self._key = api_key
        self._secret = signing_secret

    @property
    def license(self) -> str:
        return self.cfg.license

    def _params(self, path: str, params: dict) -> dict:
        params = {**params, "key": self._key}
        if self._secret:
            params["signature"] = sign_url(f"{urlsplit(self.cfg.base_url).path.rstrip('/')}{path}?{urlencode(params, safe=',|')}", self._secret)
        return params

    async def metadata(self, lat: float, lon: float) -> dict:
        path = "/maps/api/streetview/metadata"
        params = self._params(path, {"location": f"{lat:.7f},{lon:.7f}", "radius": f"{self.cfg.radius_m:g}", "source": self.cfg.source})
        # Metadata is not cached: it is free, and "no imagery yet" may change between runs.
        res = await self.http.get(self.cfg.base_url.rstrip("/") + path, params, "street", cacheable=False, validate=metadata_validator(self.cfg.radius_m))
        if res.status != 200:
            raise StageError(f"street.http_{res.status}", f"Street View metadata answered HTTP {res.status}")
        doc = res.value
        if not isinstance(doc, dict):
            raise StageError("street.bad_metadata", "Street View metadata is not a JSON object")
        status = doc.get("status", "<missing>")
        if status != "OK":
            raise StageError(METADATA_FAILURES.get(status, "street.unexpected_status"), _status_message(doc, self.cfg.radius_m))
        if not doc.get("pano_id") or "location" not in doc:
            raise StageError("street.bad_metadata", "Street View metadata OK but without pano_id/location")
        return doc

    async def view(self, pano_id: str, heading: float) -> StreetView:
        c = self.cfg
        path = "/maps/api/streetview"
        params = self._params(
            path,
            {
                "pano": pano_id,
                "size": f"{c.width}x{c.height}",
                "heading": f"{heading:g}",
                "fov": f"{c.fov:g}",
                "pitch": f"{c.pitch:g}",
                "return_error_code": "true",  # a 404 instead of the grey "no imagery" picture
            },
        )
        limits = self.http.cfg.image_limits
        what = f"Street View image (heading {heading:g})"
        res = await self.http.get(c.base_url.rstrip("/") + path, params, "street", max_image_bytes=limits.max_bytes, validate=image_validator("street", what, limits))
        if res.status != 200:
            raise StageError(f"street.http_{res.status}", f"{what} answered HTTP {res.status}")
        img = res.value
        if is_mostly_flat(img):  # the grey "Sorry, we have no imagery here" picture
            raise StageError("street.no_imagery", f"Street View image at heading {heading:g} is the no-imagery placeholder")
        if img.size != (c.width, c.height):
            raise StageError("street.bad_image", f"Street View image is {img.size}, asked for {c.width}x{c.height}")
        fmt = (img.format or "jpeg").lower()
        return StreetView(heading, c.fov, c.pitch, c.width, c.height, res.body, fmt)

    async def locate(self, lat: float, lon: float) -> StreetLocation:
        meta = await self.metadata(lat, lon)
        plat, plon = float(meta["location"]["lat"]), float(meta["location"]["lng"])
        pano = str(meta["pano_id"])
        return StreetLocation(
            provider=self.name,
            image_id=pano,
            lat=plat,
            lon=plon,
            capture_date=meta.get("date"),
            distance_m=round(distance_m(lat, lon, plat, plon), 2),
            dedupe_key=pano,  # two points snapping to one panorama would duplicate a sample
            copyright=meta.get("copyright"),
            license=self.license,
        )

    async def capture(self, location: StreetLocation) -> StreetCapture:
        views = await asyncio.gather(*(self.view(location.image_id, h) for h in self.cfg.headings))
        return StreetCapture.of(location, views)


def from_config(cfg, http: HttpClient) -> GoogleStreetView:
    """The `google_streetview` provider of a FetchConfig, its key (and URL-signing secret) resolved."""
    sv = cfg.streetview
    key = resolve_secret(sv.api_key_env, "Google Street View", cfg.secret_name(sv.api_key_env))
    secret = resolve_secret(sv.signing_secret_env, "Street View URL signing", cfg.secret_name(sv.signing_secret_env)) if sv.signing_secret_env else None
    return GoogleStreetView(http, sv, key, secret)
