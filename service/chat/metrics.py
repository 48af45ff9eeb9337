"""Prometheus metrics, per configuration and adapter, in a registry of the app's own."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric

# The label of every request that names no served configuration or experiment.
UNKNOWN_MODEL = "(unknown)"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@runtime_checkable
class MetricSource(Protocol):
    """A part that keeps metrics of its own (the vLLM engine's per-replica counters)."""

    def collect(self) -> Iterable[Metric]:
        """Its metric families, read at each scrape."""
        ...


class Metrics:
    """The service's counters and histograms, and those of the sources given."""

    def __init__(self, *sources: MetricSource) -> None:
        self.registry = CollectorRegistry()
        for source in sources:
            self.registry.register(source)
        labels = ("configuration", "adapter")
        self.requests = Counter(
            "ladder_requests",
            "Chat requests by outcome.",
            (*labels, "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "ladder_request_seconds",
            "Whole-request latency.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "ladder_time_to_first_token_seconds",
            "Time to the first streamed token.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.retrieval = Histogram(
            "ladder_retrieval_seconds",
            "Retrieval latency (embed + search).",
            ("configuration",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "ladder_prompt_tokens",
            "Prompt tokens sent to the engine.",
            labels,
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "ladder_completion_tokens",
            "Completion tokens generated.",
            labels,
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
