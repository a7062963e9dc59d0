"""The locate stage: the cheap first call per point (Street View metadata, a Mapillary search, a
folder index) says where imagery is, before any image is downloaded, so dedupe can run first."""

from __future__ import annotations

from corebuild.record import Record
from corebuild.stages.fetch.fetcher import FetchConfig, Fetcher
from corebuild.stages.stage import StageBase


class FetcherStage(StageBase):
    """A stage over the providers: one Fetcher (HTTP session, clients, rate limits) per worker."""

    def __init__(self, cfg: FetchConfig, batch_size: int):
        self.cfg, self.batch_size = cfg, batch_size

    def setup(self) -> None:
        self.fetcher = Fetcher(self.cfg)

    def teardown(self) -> None:
        if getattr(self, "fetcher", None):
            self.fetcher.close()


class LocateStage(FetcherStage):
    name, failure_stage = "locate", "street"

    def process(self, batch: list[Record]) -> list[Record]:
        return self.fetcher.locate(batch)
