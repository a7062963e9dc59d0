"""The one record type that flows through every stage.

A `Record` is frozen; a stage returns a new one with its fields filled in (`dataclasses.replace`)
or marks it failed. A failed record keeps flowing to the writer so every sampled point ends as a
row: kept, or failed with a reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Sequence

STATUS_PENDING = "pending"
STATUS_KEPT = "kept"
STATUS_FAILED = "failed"


def make_sample_id(region_id: str, seed: int, point_index: int) -> str:
    """Stable key: the same region, seed and point index always give the same id."""
    return f"{region_id}-s{seed}-{point_index:07d}"


@dataclass(frozen=True)
class StreetView:
    heading: float  # degrees clockwise from north
    fov: float
    pitch: float
    width: int
    height: int
    image: bytes  # encoded as fetched (JPEG from Street View)
    image_format: str = "jpeg"


@dataclass(frozen=True)
class StreetLocation:
    """Where a street-level provider has imagery near a point: the cheap first answer, before
    any image is downloaded (Street View metadata, a Mapillary search, a folder index)."""

    provider: str
    image_id: str  # pano id, Mapillary image id, or file path
    lat: float
    lon: float
    capture_date: Optional[str]
    distance_m: float  # from the sampled point
    dedupe_key: str  # unique per region: the pano, the Mapillary sequence, the file
    heading: Optional[float] = None  # camera heading, when the provider knows it
    sequence_id: Optional[str] = None
    copyright: Optional[str] = None  # the attribution its licence asks for (credit, creator)
    image_url: Optional[str] = None  # where capture() downloads from, if the search gave one
    license: Optional[str] = None  # SPDX id or LicenseRef-... (corebuild.licenses)


@dataclass(frozen=True)
class StreetCapture:
    provider: str
    pano_id: str
    lat: float  # where the camera stood (snapped), not the sampled point
    lon: float
    capture_date: Optional[str]  # "YYYY-MM" as the provider reports it
    distance_m: float  # from the sampled point to the camera
    views: tuple[StreetView, ...]
    copyright: Optional[str] = None  # the attribution its licence asks for (credit, creator)
    sequence_id: Optional[str] = None
    license: Optional[str] = None  # SPDX id or LicenseRef-... (corebuild.licenses)

    @classmethod
    def of(cls, loc: StreetLocation, views: Sequence[StreetView]) -> "StreetCapture":
        """The images of `loc`, with what its provider said about it (camera position, date,
        distance, copyright, sequence): how every street provider's `capture` ends."""
        return cls(
            provider=loc.provider, pano_id=loc.image_id, lat=loc.lat, lon=loc.lon, capture_date=loc.capture_date, distance_m=loc.distance_m,
            views=tuple(views), copyright=loc.copyright, sequence_id=loc.sequence_id, license=loc.license,
        )

    @classmethod
    def of_photo(cls, loc: StreetLocation, image: bytes, width: int, height: int, image_format: str, fov: float) -> "StreetCapture":
        """One level photo of `loc`, facing the heading the provider gave (north when unknown)."""
        heading = loc.heading if loc.heading is not None else 0.0
        return cls.of(loc, (StreetView(heading, fov, 0.0, width, height, image, image_format),))


@dataclass(frozen=True)
class AerialCrop:
    provider: str
    zoom: int
    width: int
    height: int
    west: float
    south: float
    east: float
    north: float
    center_lat: float
    center_lon: float
    gsd_m: float  # ground metres per pixel at the crop centre
    tiles: int  # how many tiles were stitched
    image: bytes
    image_format: str = "png"
    attribution: Optional[str] = None
    blank_tiles: int = 0  # tiles that were placeholders or uniform, stitched in as they came
    license: Optional[str] = None  # SPDX id or LicenseRef-... (corebuild.licenses)


@dataclass(frozen=True)
class OcrText:
    heading: float
    text: str
    confidence: float
    box: tuple[tuple[float, float], ...]  # polygon in pixel coordinates of that view
    dropped: Optional[str] = None  # why this text is not evidence (e.g. "on_vehicle"), else None


@dataclass(frozen=True)
class Segment:
    """One mask from open-world segmentation of a street view, with its label if one was given."""

    heading: float
    bbox: tuple[float, float, float, float]  # x, y, width, height in pixels
    area: int  # pixels
    predicted_iou: float
    stability: float
    rle_counts: tuple[int, ...]  # uncompressed COCO RLE, column-major, starting with a 0-run
    rle_size: tuple[int, int]  # (height, width)
    label: Optional[str] = None
    label_score: Optional[float] = None


@dataclass(frozen=True)
class Description:
    text: str
    backend: str
    model_id: str
    prompt_id: str
    prompt_hash: str
    parts: Optional[str] = None  # JSON of the structured answer (road, buildings, environment, signs)
    sampling: Optional[str] = None  # JSON of the sampling parameters sent
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None


@dataclass(frozen=True)
class Record:
    sample_id: str
    region_id: str
    seed: int
    point_index: int
    lat: float
    lon: float
    status: str = STATUS_PENDING
    failure_reason: Optional[str] = None  # short code, "<stage>.<kind>", used for counts
    error: Optional[str] = None  # human-readable message, never holds secrets
    location: Optional[StreetLocation] = None
    street: Optional[StreetCapture] = None
    aerial: Optional[AerialCrop] = None
    map: Optional[AerialCrop] = None  # optional second aerial modality (OSM map tiles)
    ocr: Optional[tuple[OcrText, ...]] = None
    ocr_backend: Optional[str] = None
    ocr_languages_read: Optional[tuple[str, ...]] = None  # the region's languages its OCR readers read
    ocr_languages_unread: Optional[tuple[str, ...]] = None  # ... and those no reader here reads
    segments: Optional[tuple[Segment, ...]] = None  # None: segmentation did not run
    segmenter: Optional[str] = None  # backend:model id
    labeler: Optional[str] = None  # backend:model id of the mask labels, or None
    description: Optional[Description] = None
    # Sign text the description claims in a script no OCR reader of the row read: kept, not checked.
    signs_unverifiable: Optional[tuple[str, ...]] = None
    timings: tuple[tuple[str, float], ...] = field(default=())

    @property
    def failed(self) -> bool:
        return self.status == STATUS_FAILED

    def with_(self, **changes) -> "Record":
        return dataclasses.replace(self, **changes)

    def fail(self, reason: str, error: str) -> "Record":
        """Mark failed. The first failure wins: later stages pass failed records through."""
        if self.failed:
            return self
        return dataclasses.replace(self, status=STATUS_FAILED, failure_reason=reason, error=error)

    def timed(self, stage: str, seconds: float) -> "Record":
        return dataclasses.replace(self, timings=self.timings + ((stage, round(seconds, 4)),))

    def finish(self) -> "Record":
        """Called by the writer: a record that survived every stage is kept."""
        if self.failed:
            return self
        return dataclasses.replace(self, status=STATUS_KEPT)
