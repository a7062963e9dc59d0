"""Backends by name, loaded lazily: a registry maps each name to `"module:attr"`, so the command
line can offer every name while torch, vllm or easyocr are imported only when chosen, and a
backend whose dependencies are missing fails once, in one line that names the extra to install.
Adding a backend is one module plus one line in its stage's registry."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Union

from corebuild.errors import ConfigError, CorebuildError, ModelUnavailableError


@dataclass(frozen=True)
class Backend:
    target: Union[str, Callable[..., Any]]  # "package.module:attr" (the class or factory), or the factory itself
    extra: str = ""  # the pip extra that brings its dependencies (pip install 'corebuild[<extra>]')
    shared: bool = False  # one instance per machine, shared by the worker processes (a GPU engine)


class Registry:
    """name -> Backend. Item assignment registers a factory in-process (a test's stand-in)."""

    def __init__(self, kind: str, backends: Mapping[str, Union[str, Backend]], unknown: type[CorebuildError] = ConfigError):
        self.kind, self._unknown = kind, unknown
        self._backends = {name: b if isinstance(b, Backend) else Backend(b) for name, b in backends.items()}

    def names(self) -> list[str]:
        return sorted(self._backends)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._backends

    def __getitem__(self, name: str) -> Backend:
        return self._backends[name]

    def __setitem__(self, name: str, target: Union[str, Backend, Callable[..., Any]]) -> None:
        self._backends[name] = target if isinstance(target, Backend) else Backend(target)

    def get(self, name: str, default: Any = None) -> Any:
        return self._backends.get(name, default)

    def __delitem__(self, name: str) -> None:
        del self._backends[name]

    def backend(self, name: str) -> Backend:
        try:
            return self._backends[name]
        except KeyError:
            raise self._unknown(f"unknown {self.kind} {name!r}; known: {self.names()}") from None

    def load(self, name: str) -> Any:
        """The class or factory registered under `name`, its module imported now."""
        b = self.backend(name)
        if not isinstance(b.target, str):
            return b.target
        module, _, attr = b.target.partition(":")
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            hint = f" (pip install 'corebuild[{b.extra}]')" if b.extra else ""
            raise ModelUnavailableError(f"{self.kind} {name!r} cannot load: {exc}{hint}") from None
        return getattr(mod, attr)
