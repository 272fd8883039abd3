"""Where one call's time goes: host stages timed with a clock, device work with CUDA events (read at the end,
so profiling adds no sync inside the loop)."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext

import torch


class Profile:
    """Seconds per stage. Host stages that run in worker threads are summed over threads."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._host: dict[str, list[float]] = defaultdict(list)  # list.append is atomic across threads
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._start = time.perf_counter()

    @contextmanager
    def host(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self._host[stage].append(time.perf_counter() - start)

    @contextmanager
    def device_work(self):
        """Brackets work queued on the GPU (forward, heads, pooling) with CUDA events."""
        if self.device.type != "cuda":
            with self.host("compute"):
                yield
            return
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        try:
            yield
        finally:
            end.record()
            self._events.append((begin, end))

    def summary(self) -> dict[str, float]:
        if self._events:
            torch.cuda.synchronize(self.device)
        out = {stage: sum(values) for stage, values in self._host.items()}
        if self._events:
            out["gpu compute (events)"] = sum(b.elapsed_time(e) for b, e in self._events) / 1000
        out["batches"] = len(self._events) or len(self._host.get("compute", []))
        out["wall"] = time.perf_counter() - self._start
        return out


def host(profile: Profile | None, stage: str):
    return profile.host(stage) if profile is not None else nullcontext()


def device_work(profile: Profile | None):
    return profile.device_work() if profile is not None else nullcontext()
