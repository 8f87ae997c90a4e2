"""Prometheus metrics of one server (its own registry, so several apps can live in one process).

Per request: `rwkv7_requests_total{endpoint,model,status}`, the latency histogram `rwkv7_request_seconds`,
prompt / cached prompt / completion token counters, and `rwkv7_requests_in_flight` (the admission queue's
depth). Read from each engine at scrape time: its scheduler's counters (`rwkv7_scheduler_*_total`: forwards
and the rows they served, decode steps and rows, so rate(rows) / rate(steps) is the mean batch size;
requests, failed, cancelled), the live decode batch size, and the prefix state cache (hits, tokens reused =
prompt tokens served from cache, tokens computed, bytes, snapshots).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..integrations.client import Completion
    from ..runtime.engine import Engine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300)
SCHEDULER_COUNTERS = ("forwards", "forward_rows", "decode_steps", "decode_rows", "logprob_calls", "requests",
                      "failed", "cancelled")
CACHE_COUNTERS = ("hits", "misses", "tokens_reused", "tokens_computed", "evictions")
CACHE_GAUGES = ("bytes", "budget_bytes", "snapshots")


class EngineCollector(Collector):
    """Engine-side numbers, read when Prometheus scrapes (nothing to update on the request path)."""

    def __init__(self, engines: Callable[[], dict[str, Engine]]) -> None:
        self.engines = engines

    def collect(self) -> Iterator[Metric]:
        engines = self.engines()
        for name in SCHEDULER_COUNTERS:
            family = CounterMetricFamily(f"rwkv7_scheduler_{name}", f"scheduler counter {name}", labels=["model"])
            for model, engine in engines.items():
                family.add_metric([model], getattr(engine.scheduler.stats, name))
            yield family
        batch = GaugeMetricFamily("rwkv7_decode_batch_rows", "generations in the decode batch now", labels=["model"])
        for model, engine in engines.items():
            batch.add_metric([model], engine.scheduler.decode.size)
        yield batch
        stats = {model: engine.cache_stats() for model, engine in engines.items()}
        for name in CACHE_COUNTERS:
            family = CounterMetricFamily(f"rwkv7_cache_{name}", f"prefix state cache counter {name}", labels=["model"])
            for model, values in stats.items():
                family.add_metric([model], values[name])
            yield family
        for name in CACHE_GAUGES:
            family = GaugeMetricFamily(f"rwkv7_cache_{name}", f"prefix state cache {name}", labels=["model"])
            for model, values in stats.items():
                family.add_metric([model], values[name])
            yield family


class Metrics:
    def __init__(self, engines: Callable[[], dict[str, Engine]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("rwkv7_requests", "HTTP requests", ["endpoint", "model", "status"], registry=r)
        self.latency = Histogram("rwkv7_request_seconds", "request latency (to the last byte for streams)",
                                 ["endpoint", "model"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("rwkv7_requests_in_flight", "requests admitted and not finished", registry=r)
        self.prompt_tokens = Counter("rwkv7_prompt_tokens", "prompt tokens", ["model"], registry=r)
        self.cached_tokens = Counter("rwkv7_cached_prompt_tokens", "prompt tokens served from the state cache",
                                     ["model"], registry=r)
        self.completion_tokens = Counter("rwkv7_completion_tokens", "generated tokens", ["model"], registry=r)
        r.register(EngineCollector(engines))

    def observe(self, endpoint: str, model: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, model, str(status)).inc()
        self.latency.labels(endpoint, model).observe(seconds)

    def tokens(self, model: str, done: list[Completion]) -> None:
        self.prompt_tokens.labels(model).inc(sum(d.prompt_tokens for d in done))
        self.cached_tokens.labels(model).inc(sum(d.cached_tokens for d in done))
        self.completion_tokens.labels(model).inc(sum(d.completion_tokens for d in done))

    def render(self) -> bytes:
        return generate_latest(self.registry)
