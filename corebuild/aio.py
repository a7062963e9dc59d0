"""An event loop on a background thread, so synchronous Beam DoFns can drive async clients
whose sessions live for the whole worker (aiohttp sessions are bound to one loop)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "corebuild-loop"):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class RunningServer:
    base_url: str
    stop: Callable[[], None]
    server: Any = None  # the app's state object, where the caller needs it (fault counts)

    @property
    def url(self) -> str:
        return self.base_url

    @property
    def tile_template(self) -> str:
        return f"{self.base_url}/tiles/{{z}}/{{x}}/{{y}}.png"


def serve_app(app, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Run an aiohttp Application on its own loop thread (loopback servers for tests and the
    synthetic world); returns once it is listening."""
    from aiohttp import web

    loop = LoopThread("loopback-server")

    async def start():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner

    runner = loop.run(start(), timeout=30)

    def stop() -> None:
        loop.run(runner.cleanup(), timeout=10)
        loop.close()

    return RunningServer(f"http://{host}:{runner.addresses[0][1]}", stop)
