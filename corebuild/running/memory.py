"""Process memory settings of a local run (the launcher and the DirectRunner's workers)."""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger("corebuild.running")
ENV = "MALLOC_ARENA_MAX"
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int) -> int:
    """glibc gives threads that allocate at once their own malloc arenas (up to 8 per core), and
    each keeps what it freed: a launcher's gRPC and executor threads grew its RSS well past the
    Python objects it held (bench_load.py --grouping: README, Scaling). Caps them for this
    process (mallopt) and, through the environment, for the worker processes it starts. A value
    the user already set in the environment wins. Returns the cap in force (0: none)."""
    arenas = int(os.environ.get(ENV, arenas) or 0)
    if arenas <= 0:
        return 0
    os.environ[ENV] = str(arenas)
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, arenas)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the environment still reaches workers
        log.debug("mallopt unavailable; %s=%d set for worker processes only", ENV, arenas)
    return arenas
