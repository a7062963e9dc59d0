"""The capture stage: for each located, unique point, its street views and the aerial crop
centred where the camera stood (plus the optional map crop)."""

from __future__ import annotations

from corebuild.record import Record
from corebuild.stages.locate import FetcherStage


class CaptureStage(FetcherStage):
    name, failure_stage = "capture", "fetch"

    def process(self, batch: list[Record]) -> list[Record]:
        return self.fetcher.capture(batch)
