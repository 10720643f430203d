"""Prometheus metrics of one server (its own registry, so several apps in one process never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self):
        self.registry = registry = CollectorRegistry()
        self.queue_depth = Gauge("janus_edge_queue_depth", "requests waiting for the model", registry=registry)
        self.running = Gauge("janus_edge_running_requests", "requests the model is working on", registry=registry)
        self.latency = Histogram("janus_edge_request_latency_seconds", "time from arrival to the last byte",
                                 ["endpoint"], registry=registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
        self.requests = Counter("janus_edge_requests", "finished requests by endpoint and HTTP status",
                                ["endpoint", "status"], registry=registry)
        self.rejected = Counter("janus_edge_rejected_queue_full", "requests refused with 429", registry=registry)
        self.cancelled = Counter("janus_edge_cancelled", "requests stopped early (client gone or timed out)",
                                 registry=registry)
        self.batch_size = Histogram("janus_edge_understanding_batch_size", "conversations per understanding call",
                                    registry=registry, buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32))
        self.tokens = Counter("janus_edge_generated_tokens", "text tokens generated", registry=registry)
        self.images = Counter("janus_edge_generated_images", "images generated", registry=registry)
        self.tokens_per_s = Gauge("janus_edge_tokens_per_second", "decode rate of the last understanding call "
                                  "(tokens of all its rows over its decode time)", registry=registry)
        self.images_per_s = Gauge("janus_edge_images_per_second", "images over wall time of the last generation "
                                  "call", registry=registry)

    def text(self) -> bytes:
        return generate_latest(self.registry)
