"""Config fields that describe themselves: the one place a setting's default, help, command-line
flag, choices and "does it enter the config hash" are written.

    threads: int = option(0, help="ONNX threads per worker", flag="--ocr-threads", unset="cores / workers")

`option` returns a `dataclasses.field` whose metadata holds an `Option`. From it `add_flags` adds
the `corebuild build` flags (type from the annotation, the default from the field and shown in the
help, choices from the stage's registry, read only when the parser is built so that importing a
config imports no backend), `from_args` builds the config back from the parsed flags, and
`hashed_dict` is the config as the config hash sees it (fields marked `hashed=False` left out).
Config classes nest (`BuildConfig.fetch.http`): a field whose default is a config dataclass
(`field(default_factory=HttpConfig)`) is walked into, and its fields are named by dotted path."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

KEY = "corebuild"  # the metadata key that holds a field's Option


@dataclass(frozen=True)
class Option:
    help: str = ""
    flag: Optional[str] = None  # the `corebuild build` flag that sets the field; None: no flag
    hashed: bool = True  # False: the field changes no row (where output goes, how fast it runs)
    # The accepted values: a sequence, or a zero-argument callable returning one (a stage's
    # registry names, read when the parser is built, never when the config is imported).
    choices: Union[Sequence[str], Callable[[], Sequence[str]], None] = None
    # What a build does when the flag is not given, where that is not the field's default but
    # decided from other flags or later (the flag's own default is then None, and the help says
    # this): a text, or a zero-argument callable returning one.
    unset: Union[str, Callable[[], str], None] = None
    env: Optional[str] = None  # a flag left empty reads this environment variable, then the default
    scale: Optional[int] = None  # the flag is in units of `scale` field units (MB for bytes: 2**20)
    empty_is_default: bool = False  # an empty value means the field's default (a URL left blank)
    metavar: Optional[str] = None

    @property
    def dest(self) -> str:
        """The argparse attribute the flag lands in (argparse's own rule: --min-spacing -> min_spacing)."""
        return self.flag.lstrip("-").replace("-", "_") if self.flag else ""

    def unset_text(self) -> Optional[str]:
        return self.unset() if callable(self.unset) else self.unset

    def choice_list(self) -> Optional[list[str]]:
        if self.choices is None:
            return None
        return list(self.choices() if callable(self.choices) else self.choices)


def option(default: Any = MISSING, *, default_factory: Any = MISSING, **kw: Any) -> Any:
    """A dataclass field carrying an Option (keywords as Option's fields)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={KEY: Option(**kw)})


def option_of(f: dataclasses.Field) -> Option:
    return f.metadata.get(KEY) or Option()


def registry_names(registry: Any, *first: str) -> list[str]:
    """Choices from a registry (a `Registry`, or a dict of backends), after any `first` names
    that are not backends (`off`)."""
    names = registry.names() if hasattr(registry, "names") else sorted(registry)
    return [*first, *(n for n in names if n not in first)]


def _nested(f: dataclasses.Field) -> Optional[type]:
    """The config class a field holds by default, to walk into (`field(default_factory=X)`)."""
    factory = f.default_factory
    return factory if isinstance(factory, type) and dataclasses.is_dataclass(factory) else None


@dataclass(frozen=True)
class Flagged:
    path: str  # dotted, from the outer config: "fetch.http.rate_per_s"
    field: dataclasses.Field
    option: Option
    type: Any  # the annotation, Optional[...] unwrapped
    hashed: bool = True  # in the config hash: the field and every config holding it marked so

    @property
    def default(self) -> Any:
        """The field's own default (MISSING for a required one)."""
        return self.field.default

    @property
    def cli_default(self) -> Any:
        """The flag's default: the field's, in the flag's units; None where `unset` decides."""
        if self.option.unset is not None or self.default is MISSING:
            return None
        return self.default / self.option.scale if self.option.scale else self.default


def _unwrap(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is Union and len(args) == 1 else tp


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """A config class's annotations, resolved once: typing evaluates postponed ones on every call,
    and each parser the CLI builds walks every config class (most of its start-up time)."""
    return typing.get_type_hints(cls)


def walk(cls: type, prefix: str = "", hashed: bool = True) -> Iterator[Flagged]:
    """Every field of a config class and of the config classes it holds by default, in order."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        inner, opt = _nested(f), option_of(f)
        if inner is not None:
            yield from walk(inner, f"{prefix}{f.name}.", hashed and opt.hashed)
        else:
            yield Flagged(prefix + f.name, f, opt, _unwrap(hints[f.name]), hashed and opt.hashed)


def flagged(cls: type) -> list[Flagged]:
    """The fields of `cls` (nested configs included) that a flag sets."""
    return [x for x in walk(cls) if x.option.flag]


def flag_paths(cls: type) -> dict[str, str]:
    """Dotted field path -> the flag that sets it."""
    return {x.path: x.option.flag for x in flagged(cls)}


def _help(x: Flagged) -> str:
    o, default = x.option, x.cli_default
    if o.unset is not None:
        shown = o.unset_text()
    elif o.env:
        shown = f"${o.env}" + (f", else {default}" if default else "")
    elif default is None or default == "" or x.type is bool:
        shown = ""
    elif isinstance(default, tuple):
        shown = ",".join(map(str, default))
    else:
        shown = f"{default:g}" if isinstance(default, float) else str(default)
    text = f"{o.help} (default: {shown})" if shown else o.help
    return text.replace("%", "%%")


def comma_list(text: str) -> tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def add_flags(parser: argparse.ArgumentParser, cls: type, only: Optional[Sequence[str]] = None) -> list[Flagged]:
    """Adds a flag for every field of `cls` that has one (or only the `only` flags). A flag
    several fields share (`--prompts`: both prompt directories) is added once, and they must
    agree on its default."""
    added: dict[str, Flagged] = {}
    for x in flagged(cls):
        o = x.option
        if only is not None and o.flag not in only:
            continue
        if o.flag in added:
            if added[o.flag].cli_default != x.cli_default:
                raise ValueError(f"{o.flag}: {added[o.flag].path} and {x.path} have different defaults")
            continue
        kw: dict[str, Any] = {"default": x.cli_default, "help": _help(x)}
        if x.type is bool:
            kw["action"] = "store_true"
        elif typing.get_origin(x.type) is tuple:  # a comma list: --road-tags primary,residential
            kw.update(type=comma_list, metavar=o.metavar or "A,B")
        else:
            kw["type"] = float if o.scale else x.type
            kw.update({k: v for k, v in (("choices", o.choice_list()), ("metavar", o.metavar)) if v is not None})
        if x.default is MISSING:
            kw["required"] = True
        parser.add_argument(o.flag, **kw)
        added[o.flag] = x
    return list(added.values())


def _from_flag(x: Flagged, value: Any) -> Any:
    o = x.option
    if value is None and o.unset is not None:
        return MISSING  # decided by the caller (an override), else the field's default
    if o.scale:
        value = int(value * o.scale)
    if o.env:
        value = value or os.environ.get(o.env) or x.default
    if o.empty_is_default:
        value = value or x.default
    return value


def from_args(cls: type, args: argparse.Namespace, overrides: Mapping[str, Any] = {}, prefix: str = "") -> Any:
    """The config the flags in `args` describe; `overrides` (dotted path -> value) win over
    flags, and fields without either keep their default."""
    hints = _hints(cls)
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        if not f.init:
            continue
        if path in overrides:
            kw[f.name] = overrides[path]
        elif _nested(f) is not None:
            kw[f.name] = from_args(_nested(f), args, overrides, path + ".")
        elif option_of(f).flag:
            value = _from_flag(Flagged(path, f, option_of(f), _unwrap(hints[f.name])), getattr(args, option_of(f).dest))
            if value is not MISSING:
                kw[f.name] = value
    return cls(**kw)


def hashed_dict(obj: Any) -> Any:
    """`dataclasses.asdict`, less the fields marked `hashed=False` (at any depth)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: hashed_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if option_of(f).hashed}
    if isinstance(obj, (list, tuple)):
        return type(obj)(hashed_dict(v) for v in obj)
    if isinstance(obj, dict):
        return {k: hashed_dict(v) for k, v in obj.items()}
    return obj
