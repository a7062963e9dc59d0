"""Several views read at once by one worker, each on its own engine.

A worker reads its record's views one after another on one core. In a round of fewer work units
than workers (a top-up round of one unit) the other workers idle and so do their cores; with
`OcrConfig.parallel` engines a worker uses them (corebuild.running.build.round_config sets it for
such rounds only). ONNX Runtime and OpenVINO release the GIL while they run, so threads suffice. Each engine is
used by one thread at a time: rapidocr keeps per-call state (its detector's preprocessing) on
the engine. Measured (README, Evidence): alone, two single-threaded engines read 80 demo views in
0.56x the time for the same CPU; in the demo's top-up round, 37 s became 29-32 s.
"""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Sequence, Union

if TYPE_CHECKING:
    from corebuild.stages.ocr import OcrEngine, OcrHit

Reading = Union[list["OcrHit"], Exception]  # a view's hits, or what reading it raised


class ParallelReader:
    def __init__(self, engines: Sequence["OcrEngine"]):
        if not engines:
            raise ValueError("ParallelReader needs at least one engine")
        self.engines = list(engines)
        self._free: "queue.SimpleQueue[OcrEngine]" = queue.SimpleQueue()
        for engine in self.engines:
            self._free.put(engine)
        self._pool = ThreadPoolExecutor(len(self.engines), thread_name_prefix="ocr") if len(self.engines) > 1 else None

    def _read(self, image: bytes) -> Reading:
        engine = self._free.get()
        try:
            return engine.read(image)
        except Exception as exc:  # a corrupt image or an engine fault: the caller fails its record
            return exc
        finally:
            self._free.put(engine)

    def read_all(self, images: Sequence[bytes]) -> list[Reading]:
        """Each image's reading, in order."""
        if self._pool is None or len(images) < 2:
            return [self._read(image) for image in images]
        return list(self._pool.map(self._read, images))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
