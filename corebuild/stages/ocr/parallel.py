"""Several views read at once by one worker, each on its own engine.

A worker reads its record's views one after another on one core. When the other workers are idle
(a top-up round of one work unit, a round's last unit) the machine's other cores wait; with
`OcrConfig.parallel` engines a worker uses them. ONNX Runtime releases the GIL while it runs, so
threads suffice. Each engine is used by one thread at a time: rapidocr keeps per-call state
(its detector's preprocessing) on the engine. When every worker is busy the threads share the
cores: on 80 demo views two single-threaded engines took the same CPU as one (README, Evidence).
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
