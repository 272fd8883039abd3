"""Runs a transformers model on one packed batch: no padding token ever reaches a linear layer."""

from __future__ import annotations

import logging
import operator
import threading
from itertools import repeat

import torch

from . import hf
from .architectures import ArchSpec
from .attention import AttentionBackend, choose, register
from .graphs import CudaGraphs
from .kernels import fuse
from .packing import PackedBatch
from .positions import non_pad_positions
from .prefix import PrefixCache
from .rewrites import compiled, rewrites_for

logger = logging.getLogger(__name__)


class PackedRunner:
    """Calls ``model`` (a transformers base model) on a PackedBatch through a registered attention backend.

    It runs a view of the model (``hf.packed_view``: same parameters and buffers, its own config naming the
    backend), never the model itself, so calls from many threads, and ST's own path on the model, never see each
    other's attention implementation.
    """

    uses_backend = True  # it runs a probed packed attention backend

    def __init__(
        self,
        model: torch.nn.Module,
        arch: ArchSpec,
        backend: AttentionBackend,
        compile: bool | str = False,
        rewrites: tuple[str, ...] = (),
        shared_prefix: bool = False,
        cuda_graphs: bool = False,
        kernels: tuple[str, ...] | None = (),
    ) -> None:
        self.arch = arch
        self.backend = backend
        # Whether inputs of this model may share a prefix's keys and values: causal, and a backend whose key
        # prefix masks the probe checked here.
        self.shares_prefixes = arch.causal and backend.shared_prefix and shared_prefix
        self.attn_name = register(backend)
        self.model = hf.packed_view(model, self.attn_name)
        device = next(model.parameters()).device
        if compile:
            self.kernels = {"off": "compile (Inductor fuses these itself)"}
        elif kernels == ():
            self.kernels = {"off": "EngineConfig(kernels=())"}
        else:
            self.kernels = fuse(self.model, device, self.model.dtype, kernels)
        self.state = ModelState(model)
        self.prefixes = PrefixCache(self.model)
        self._call, self.rewrite_pass = compiled(self.model, compile, rewrites)
        # Small batches replay captured graphs (engine/graphs.py); a compiled forward keeps its own.
        graphs = cuda_graphs and device.type == "cuda" and not compile and backend.cuda_graphs
        self.graphs = CudaGraphs(self.model, device) if graphs else None

    def inputs(self, batch: PackedBatch) -> dict:
        """The keyword arguments the model is called with for one packed batch."""
        if self.arch.pad_positions:
            positions = non_pad_positions(batch, self.model.config.pad_token_id)
        else:
            positions = batch.position_ids
        kwargs = {
            "input_ids": batch.input_ids[None],
            "position_ids": positions[None],
            "cu_seq_lens_q": batch.cu_seqlens,
            "cu_seq_lens_k": batch.cu_seqlens,
            "max_length_q": batch.max_len,
            "max_length_k": batch.max_len,
        }
        if self.arch.token_type_ids and batch.token_type_ids is not None:
            kwargs["token_type_ids"] = batch.token_type_ids[None]
        if self.arch.causal:
            kwargs["use_cache"] = False
        if batch.kv_index is not None:  # a shared prefix, computed once (engine/prefix.py)
            keys, values = self.prefixes.get(batch.prefix, batch.input_ids.device)
            kwargs.update(
                cu_seq_lens_k=batch.cu_seqlens_k,
                max_length_k=batch.max_len_k,
                st_prefix_keys=keys,
                st_prefix_values=values,
                st_kv_index=batch.kv_index,
            )
        return kwargs

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """-> (total_tokens, hidden) last hidden states of the packed row."""
        kwargs = self.inputs(batch)
        if self.graphs is not None:
            hidden = self.graphs.run(kwargs, batch.host_lengths, batch.num_tokens)
            if hidden is not None:
                return hidden
        return self._call(**kwargs, return_dict=True).last_hidden_state[0]


#: ArchSpec.runner -> the class that runs one batch of that architecture (same constructor and ``forward`` as
#: PackedRunner). Other runners register themselves from their own files.
RUNNERS: dict[str, type] = {"packed": PackedRunner}


class ModelState:
    """Which modules, parameters and buffers the model holds, and how many forward hooks and instance ``forward``
    patches it carries, as found when a view of it was made: ``model.to(...)`` replaces buffers, a resize replaces
    modules, a hook or a patched forward changes what a module computes, after which that view would run stale
    tensors or skip the change. Checking is one identity test per entry and two sums over prebuilt lists, with no
    walk of the module tree (tens of microseconds per call)."""

    def __init__(self, model: torch.nn.Module) -> None:
        modules = list(model.named_modules(remove_duplicate=False))
        self.entries = [
            (table, name, value)
            for _, module in modules
            for table in (module._modules, module._parameters, module._buffers)
            for name, value in table.items()
        ]
        self._names = [name for name, _ in modules]
        self._hook_tables = [t for _, m in modules for t in (m._forward_hooks, m._forward_pre_hooks)]
        self._instance_dicts = [m.__dict__ for _, m in modules]
        self.hooks, self.patches = self._hooks(), self._patches()

    def _hooks(self) -> int:
        from torch.nn.modules import module as torch_module

        hooks = sum(map(len, self._hook_tables))
        return hooks + len(torch_module._global_forward_hooks) + len(torch_module._global_forward_pre_hooks)

    def _patches(self) -> int:
        return sum(map(operator.contains, self._instance_dicts, repeat("forward")))

    def current(self) -> bool:
        return (
            self._hooks() == self.hooks
            and self._patches() == self.patches
            and all(table.get(name) is value for table, name, value in self.entries)
        )

    def changed_behaviour(self) -> str | None:
        """Why running the model's modules another way than its own forward would skip something the user added:
        forward hooks (global or on a module: pruning and the old weight_norm are pre-hooks) or a module whose
        ``forward`` was replaced on the instance; None when there are none."""
        if self.hooks:
            hooked = [self._names[i // 2] or "the model" for i, t in enumerate(self._hook_tables) if t]
            where = f"on {', '.join(sorted(set(hooked))[:3])}" if hooked else "registered globally"
            return f"forward hooks {where} (ST's forward runs them)"
        if self.patches:
            patched = [self._names[i] or "the model" for i, d in enumerate(self._instance_dicts) if "forward" in d]
            return f"an instance forward is patched on {', '.join(patched[:3])}"
        return None


class RunnerCache:
    """One PackedRunner per (device, dtype) for a model, its backend chosen by the probe and logged once; rebuilt
    when the model's tensors were replaced since (ModelState)."""

    def __init__(self, model: torch.nn.Module, arch: ArchSpec, config) -> None:
        self.model = model  # the base model (no task head)
        self.arch = arch
        self.config = config
        self._runners: dict[tuple[str, torch.dtype], PackedRunner] = {}
        self._lock = threading.Lock()

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def get(self, device: torch.device) -> PackedRunner:
        key = (str(device), self.dtype)
        runner = self._runners.get(key)
        if runner is not None and runner.state.current():
            return runner
        with self._lock:
            runner = self._runners.get(key)
            if runner is None or not runner.state.current():
                runner = self._runners[key] = self._build(device, key[1])
        return runner

    def _build(self, device: torch.device, dtype: torch.dtype) -> PackedRunner:
        runner = RUNNERS[self.arch.runner]
        rewrites = rewrites_for(device) if self.config.rewrites is None else self.config.rewrites
        if not runner.uses_backend:  # it runs the model's own attention: no packed kernel to probe
            return runner(self.model, self.arch, None, compile=self.config.compile, rewrites=rewrites)
        backend, result = choose(
            self.config.attention,
            device,
            dtype,
            self.arch.layer_kinds(self.model.config),
            self.config.xformers_torch_ops,
        )
        logger.info(
            "st_backend: %s on %s/%s uses attention backend %r (%s)",
            self.model.config.model_type,
            device,
            result.dtype,
            backend.name,
            "; ".join(result.lines()),
        )
        return runner(
            self.model,
            self.arch,
            backend,
            compile=self.config.compile,
            rewrites=rewrites,
            shared_prefix=result.shared_prefix.get(backend.name, False),
            cuda_graphs=self.config.cuda_graphs,
            kernels=self.config.kernels,
        )


from . import grouped  # noqa: E402,F401  (registers RUNNERS["grouped"])
