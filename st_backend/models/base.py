"""What the three ST-facing classes share: engine settings at load, one engine per key (a task, a route) derived
from the model as it is at each call (rebuilt when it changed) and safely from many threads, pickling without engines (ST's multi-process pools rebuild them in each
worker), ST's own path with a one-time note, and the Matryoshka config keys ST itself ignores."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from .. import _compat
from ..engine.config import EngineConfig
from ..engine.engine import Engine
from ..engine.plan import Plan
from ..engine.runner import ModelState
from ..matryoshka import Matryoshka
from ._fallback import warn_fallback
from .state import Built, fingerprint

# Engines kept per model (one per task or route key): a call with a new ``task=`` evicts the least recently used.
MAX_ENGINES = 8


class PackedModel:
    """Mixed in before the sentence_transformers class: ``_st_path`` and the config hooks reach it by super()."""

    def _init_packed(self, engine: EngineConfig | None) -> None:
        """Engine settings, the cast they ask for, and an attention backend named in them checked at load."""
        _compat.check_versions()
        self.engine_config = engine if engine is not None else EngineConfig()
        self.engine_config.cast(self)
        self.engine_config.check_attention(self)
        self._st_engines: OrderedDict = OrderedDict()
        self._st_lock = threading.Lock()

    def _modules_for(self, task: str | None) -> list:
        """The pipeline a text of ``task`` runs through: a leading Router replaced by the route it picks."""
        modules = list(self)
        if modules and isinstance(modules[0], _compat.Router):
            modules = _compat.route_modules(modules[0], task) + modules[1:]
        return modules

    def _packed_engine(self, key, plan: Callable[[], Plan | str]) -> Engine | str:
        """The engine for ``key``, derived from the model as it is now, or the reason its calls run ST's own path.

        Built from ``plan()`` at the first call and again whenever the model changed since (models/state.py):
        modules added, removed or replaced, their settings, the tokenizer's state, adapters, hooks, a patched
        forward. A handful of keys are kept, least recently used first out."""
        if not self.engine_config.packed:
            return "EngineConfig(packed=False)"
        built = self._st_engines.get(key)
        if built is None or not built.current(self):
            with self._st_lock:
                built = self._st_engines.get(key)
                if built is None or not built.current(self):
                    built = self._st_engines[key] = self._build(plan)
                self._st_engines.move_to_end(key)
                while len(self._st_engines) > MAX_ENGINES:
                    self._st_engines.popitem(last=False)
        else:
            try:
                self._st_engines.move_to_end(key)
            except KeyError:  # evicted by another thread meanwhile: this call still has its engine
                pass
        return built.engine

    def _build(self, plan: Callable[[], Plan | str]) -> Built:
        # The state is read before the plan, so a change made while building is seen at the next call.
        found, tree = fingerprint(self), ModelState(self)
        reason = tree.changed_behaviour()
        if reason is None:
            try:
                made = plan()
                reason = made if isinstance(made, str) else None
                engine = Engine(made, self.engine_config) if reason is None else None
            except Exception as exc:  # a module that cannot be viewed or copied (say, a tensor attribute)
                reason = f"the packed engine could not be built from this model ({type(exc).__name__}: {exc})"
        return Built(reason if reason is not None else engine, found, tree)

    def engines(self) -> dict:
        """Each key's engine (or the reason it runs ST's own path), as built so far."""
        return {key: built.engine for key, built in list(self._st_engines.items())}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_st_engines"] = OrderedDict()  # tokenizer copies and runners are rebuilt in each process
        state.pop("_st_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._st_lock = threading.Lock()

    def _st_path(self, reason: str, inputs: list, arguments: dict):
        """ST's own _inference for this call, said once per reason."""
        warn_fallback(type(self).__name__, reason)
        return super()._inference(inputs, **arguments)

    # Matryoshka sizes: ST drops the config keys, so they are kept here on load and written back on save.

    def _init_matryoshka(
        self, dimensions: Sequence[int] | None, strict: bool | None, is_matryoshka: bool | None, hf_config
    ) -> None:
        self.matryoshka = Matryoshka.resolve(
            dimensions, strict, getattr(self, "_st_config", {}), hf_config, is_matryoshka=is_matryoshka
        )

    def _parse_model_config(self, model_config: dict[str, Any]) -> None:
        self._st_config = dict(model_config)  # keeps matryoshka_dimensions / is_matryoshka, which ST ignores
        super()._parse_model_config(model_config)

    def _get_model_config(self) -> dict[str, Any]:
        config = super()._get_model_config()
        matryoshka = getattr(self, "matryoshka", None)
        if matryoshka is not None and matryoshka.dimensions:
            config["matryoshka_dimensions"] = list(matryoshka.dimensions)
        elif matryoshka is not None and matryoshka.any_prefix:
            config["is_matryoshka"] = True
        return config


def split_arguments(kwargs: dict, own: frozenset[str]) -> tuple[dict, dict]:
    """ST's _inference keyword arguments: (those of ST's own signature, the module kwargs it passes through)."""
    return {k: v for k, v in kwargs.items() if k in own}, {k: v for k, v in kwargs.items() if k not in own}
