"""Closed-loop load: N concurrent callers issue one unary call after another for a fixed time."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

CONCURRENCY = 16  # callers of every figure


@dataclass(frozen=True)
class Figure:
    qps: float
    p50_ms: float
    p99_ms: float
    calls: int
    errors: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "qps": round(self.qps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "calls": self.calls,
            "errors": self.errors,
        }


async def _measure(
    target: str,
    method: str,
    requests: Sequence[bytes],
    metadata: Sequence[tuple[str, str]],
    concurrency: int,
    seconds: float,
    warmup: float,
) -> Figure:
    # Bytes in, bytes out: the client spends the same on every figure, whatever the message.
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        latencies: list[float] = []
        errors = 0
        recording = False
        stop_at = time.perf_counter() + warmup + seconds

        async def caller(request: bytes) -> None:
            nonlocal errors
            while (now := time.perf_counter()) < stop_at:
                try:
                    await call(request, metadata=metadata, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                if recording:
                    latencies.append(time.perf_counter() - now)

        async def clock() -> float:
            nonlocal recording
            await asyncio.sleep(warmup)
            recording = True
            return time.perf_counter()

        started = asyncio.create_task(clock())
        await asyncio.gather(*(caller(requests[i % len(requests)]) for i in range(concurrency)))
        elapsed = time.perf_counter() - started.result()
    if not latencies:
        raise SystemExit(f"no successful calls to {method} at {target} ({errors} errors)")
    cuts = statistics.quantiles(latencies, n=100)
    return Figure(len(latencies) / elapsed, cuts[49] * 1000, cuts[98] * 1000, len(latencies), errors)


def measure(
    target: str,
    method: str,
    request: bytes | Sequence[bytes],
    metadata: Sequence[tuple[str, str]] = (),
    concurrency: int = CONCURRENCY,
    seconds: float = 5.0,
    warmup: float = 1.0,
) -> Figure:
    """Caller i sends `request`, or the i-th of `request` when it is several (one per user, say)."""
    requests = [request] if isinstance(request, bytes) else list(request)
    return asyncio.run(_measure(target, method, requests, metadata, concurrency, seconds, warmup))
