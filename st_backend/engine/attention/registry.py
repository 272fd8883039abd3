"""The attention backends, each registered by its own module with a priority (lower is tried first) and a
factory, as xformers' dispatch walks its operators in order. Adding a kernel is one file that calls
``register_backend``; the package imports every module in this folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .base import AttentionBackend


@dataclass(frozen=True)
class Registration:
    name: str
    priority: int
    factory: Callable[[bool], AttentionBackend]  # (xformers_torch_ops) -> backend


BACKENDS: dict[str, Registration] = {}
_INSTANCES: dict[tuple[str, bool], AttentionBackend] = {}


def register_backend(priority: int, options: bool = False):
    """Class decorator: register a backend class under its ``name``. ``options``: the class takes the
    ``xformers_torch_ops`` flag (one instance per value of it)."""

    def decorate(cls: type[AttentionBackend]) -> type[AttentionBackend]:
        factory = (lambda torch_ops: cls(torch_ops)) if options else (lambda torch_ops: cls())
        BACKENDS[cls.name] = Registration(cls.name, priority, factory)
        return cls

    return decorate


def priority() -> tuple[str, ...]:
    """Every registered backend's name, fastest first: "auto" takes the first that runs here."""
    return tuple(r.name for r in sorted(BACKENDS.values(), key=lambda r: r.priority))


def make_backend(name: str, xformers_torch_ops: bool = False) -> AttentionBackend:
    """The one instance of a backend (per option), so transformers' registry and the probe agree."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; known: {priority()}")
    key = (name, xformers_torch_ops and name == "xformers")
    if key not in _INSTANCES:
        _INSTANCES[key] = BACKENDS[name].factory(key[1])
    return _INSTANCES[key]
