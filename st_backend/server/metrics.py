"""Prometheus text-format metrics, named after TEI's (te_request_count -> st_request_count, ...).

Hand-written (no dependency): a few counters, gauges and histograms with labels, updated from the event loop and
the batcher threads under one lock, rendered on GET /metrics.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, *TIME_BUCKETS)  # a request's short stages take tens of microseconds
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
TOKEN_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def _labels(names: tuple[str, ...], values: tuple) -> str:
    if not names:
        return ""
    inner = ",".join(
        f'{n}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for n, v in zip(names, values)
    )
    return "{" + inner + "}"


class _Metric:
    def __init__(self, name: str, help_text: str, kind: str, labels: tuple[str, ...], lock: threading.Lock) -> None:
        self.name, self.help, self.kind, self.label_names, self.lock = name, help_text, kind, labels, lock


class Counter(_Metric):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.values: dict[tuple, float] = defaultdict(float)

    def inc(self, *labels, amount: float = 1) -> None:
        with self.lock:
            self.values[labels] += amount

    def value(self, *labels) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> list[str]:
        return [f"{self.name}{_labels(self.label_names, k)} {v:g}" for k, v in sorted(self.values.items())]


class Gauge(Counter):
    def set(self, *labels, value: float) -> None:
        with self.lock:
            self.values[labels] = value


class Histogram(_Metric):
    def __init__(self, *args, buckets: tuple[float, ...]) -> None:
        super().__init__(*args)
        self.buckets = buckets
        self.series: dict[tuple, list] = {}  # labels -> [bucket counts (non-cumulative), sum, count]

    def observe(self, *labels, value: float) -> None:
        with self.lock:
            entry = self.series.get(labels)
            if entry is None:
                entry = self.series[labels] = [[0] * (len(self.buckets) + 1), 0.0, 0]
            entry[0][bisect.bisect_left(self.buckets, value)] += 1
            entry[1] += value
            entry[2] += 1

    def count(self, *labels) -> int:
        entry = self.series.get(labels)
        return entry[2] if entry else 0

    def render(self) -> list[str]:
        lines = []
        for key, (counts, total, n) in sorted(self.series.items()):
            running = 0
            for bound, c in zip((*self.buckets, "+Inf"), counts):
                running += c
                le = bound if isinstance(bound, str) else f"{bound:g}"
                lines.append(f"{self.name}_bucket{_labels((*self.label_names, 'le'), (*key, le))} {running}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {total:g}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {n}")
        return lines


class Metrics:
    """Every metric the server reports; one instance per app."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._all: list[_Metric] = []
        c, g, h = self._counter, self._gauge, self._histogram
        self.requests = c("st_request_count", "Requests answered, by route and HTTP status", ("route", "status"))
        self.request_duration = h("st_request_duration", "Seconds from request to response", ("route",), TIME_BUCKETS)
        # A request's stages, in order: parse, tokenization, queue, inference, serialize (TEI's names where it has
        # them); their sum and the network make st_request_duration.
        self.parse = h(
            "st_request_parse_duration",
            "Seconds from a request's headers to its route: reading the body, parsing and validating the JSON",
            ("route",),
            STAGE_BUCKETS,
        )
        self.tokenization = h(
            "st_request_tokenization_duration", "Seconds counting a request's tokens", ("route",), STAGE_BUCKETS
        )
        self.input_tokens = h(
            "st_request_input_length", "Tokens per request (after truncation)", ("route",), TOKEN_BUCKETS
        )
        self.queue_duration = h(
            "st_request_queue_duration", "Seconds a request waited in its model's queue", ("model",), TIME_BUCKETS
        )
        self.request_inference = h(
            "st_request_inference_duration",
            "Seconds of the merged model call (forward) a request's rows ran in",
            ("model",),
            TIME_BUCKETS,
        )
        self.serialize = h(
            "st_request_serialize_duration",
            "Seconds turning a request's outputs into its answer (scores, cuts, normalisation, JSON)",
            ("model",),
            STAGE_BUCKETS,
        )
        self.inference = h("st_batch_inference_duration", "Seconds of one merged model call", ("model",), TIME_BUCKETS)
        self.batch_rows = h("st_batch_size", "Rows (inputs or pairs) per merged model call", ("model",), SIZE_BUCKETS)
        self.batch_tokens = h("st_batch_tokens", "Tokens per merged model call", ("model",), TOKEN_BUCKETS)
        self.batch_requests = h("st_batch_requests", "Requests merged into one model call", ("model",), SIZE_BUCKETS)
        self.queue_size = g("st_queue_size", "Requests waiting in a model's queue", ("model",))
        self.dropped = c("st_request_dropped", "Requests dropped before the model: client disconnected", ("model",))
        self.rejected = c("st_request_rejected", "Requests refused: queue full (429)", ("model",))

    def add_devices(self) -> None:
        """The per-device series of ``serve --devices`` (labels: worker index and device), absent without it."""
        c, g, h, labels = self._counter, self._gauge, self._histogram, ("worker", "device")
        self.device_up = g("st_device_up", "1 while the device's process is loaded and serving, else 0", labels)
        self.device_outstanding = g(
            "st_device_outstanding_tokens", "Tokens sent to the device, not yet answered", labels
        )
        self.device_calls = c("st_device_calls", "Model calls the device answered", labels)
        self.device_tokens = c("st_device_tokens", "Tokens of the calls the device answered", labels)
        self.device_inference = h(
            "st_device_inference_duration",
            "Seconds from sending a call to the device to its answer",
            labels,
            TIME_BUCKETS,
        )
        self.device_restarts = c("st_device_restarts", "Times the device's process died and was restarted", labels)
        self.device_lost = c("st_device_lost_calls", "Calls in flight when the device's process died", labels)

    def _counter(self, name, help_text, labels) -> Counter:
        return self._add(Counter(name, help_text, "counter", labels, self.lock))

    def _gauge(self, name, help_text, labels) -> Gauge:
        return self._add(Gauge(name, help_text, "gauge", labels, self.lock))

    def _histogram(self, name, help_text, labels, buckets) -> Histogram:
        return self._add(Histogram(name, help_text, "histogram", labels, self.lock, buckets=buckets))

    def _add(self, metric):
        self._all.append(metric)
        return metric

    def render(self) -> str:
        lines = []
        with self.lock:
            for m in self._all:
                lines += [f"# HELP {m.name} {m.help}", f"# TYPE {m.name} {m.kind}", *m.render()]
        return "\n".join(lines) + "\n"
