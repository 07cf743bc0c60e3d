"""Prometheus metrics every service exports on its metrics port."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RPC_HANDLED = Counter("grpc_server_handled_total", "RPCs completed", ["grpc_method", "grpc_code"])
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "RPC latency",
    ["grpc_method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Background jobs by kind and outcome (done, retried, given_up): a queue that only fails shows here, not in RPCs.
JOBS_RUN = Counter("hishamos_jobs_total", "background job runs", ["kind", "outcome"])


class RpcMetrics:
    """Caches labelled children: a label lookup per call would cost more than the observation."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str], Counter] = {}
        self._histograms: dict[str, Histogram] = {}

    def observe(self, method: str, code: str, seconds: float) -> None:
        counter = self._counters.get((method, code))
        if counter is None:
            counter = self._counters[(method, code)] = RPC_HANDLED.labels(method, code)
        histogram = self._histograms.get(method)
        if histogram is None:
            histogram = self._histograms[method] = RPC_SECONDS.labels(method)
        counter.inc()
        histogram.observe(seconds)


def serve_metrics(host: str, port: int, setting: str) -> None:
    """Prometheus /metrics on `port` (-1: none); `setting` names the variable that moves it."""
    if port >= 0:
        try:
            start_http_server(port, addr=host)
        except OSError as exc:
            raise SystemExit(
                f"cannot serve metrics on {host}:{port} ({exc.strerror}): is another process using the port? "
                f"Set {setting} to another port, or to -1 to serve no metrics"
            ) from None
