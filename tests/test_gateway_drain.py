"""The gateway as deployed, with real Envoy in front of a slow backend: stopped the way Kubernetes and compose
stop it (deploy/docker/envoy-drain.sh, then SIGTERM) it finishes the calls under way; its metrics listener serves
Prometheus' stats and nothing else of the admin endpoint."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hishamos_devstack import envoy
from hishamos_devstack.stack import ROOT, free_port

DRAIN_HOOK = ROOT / "deploy" / "docker" / "envoy-drain.sh"
DOCKERFILE = ROOT / "deploy" / "docker" / "envoy.Dockerfile"
SLOW = "/hishamos.projects.v1.ProjectService/ListProjects"  # the backend takes SLOW_SECONDS over it
FAST = "/hishamos.projects.v1.ProjectService/GetProject"
SLOW_SECONDS = 5.0
DRAIN_SECONDS = 2  # Envoy's --drain-time-s here; the image's is 15


@dataclass
class Backend:
    """Every service of the gateway's config, in one grpc.aio server: health says SERVING, SLOW sleeps."""

    port: int = field(default_factory=free_port)
    slow_calls: asyncio.Event = field(default_factory=asyncio.Event)  # set when a SLOW call has arrived

    async def slow(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.slow_calls.set()
        await asyncio.sleep(SLOW_SECONDS)
        return b"slow"

    async def fast(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"fast"


class Serving(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    async def Check(self, request: object, context: object) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    api: int
    admin: int
    metrics: int
    log: Path

    def accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.api), timeout=1).close()
        except ConnectionRefusedError:
            return False
        return True


def image_flags() -> list[str]:
    """Envoy's flags in the image's CMD (the drain strategy among them), with this test's drain time."""
    cmd = json.loads(next(line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD "))[4:])
    assert cmd[:3] == ["envoy", "-c", "/etc/envoy/envoy.yaml"]
    flags = cmd[3:]
    flags[flags.index("--drain-time-s") + 1] = str(DRAIN_SECONDS)
    return flags


@asynccontextmanager
async def backend() -> AsyncIterator[Backend]:
    backend = Backend()
    server = grpc.aio.server()
    methods = {"ListProjects": backend.slow, "GetProject": backend.fast}
    handlers = {name: grpc.unary_unary_rpc_method_handler(handler) for name, handler in methods.items()}
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("hishamos.projects.v1.ProjectService", handlers)]
    )
    health_pb2_grpc.add_HealthServicer_to_server(Serving(), server)
    server.add_insecure_port(f"127.0.0.1:{backend.port}")
    await server.start()
    try:
        yield backend
    finally:
        await server.stop(0)


def spawn_envoy(config: Path, base_id: int, log: Path) -> subprocess.Popen[bytes]:
    binary = Path(sys.executable).parent / "envoy"
    args = [str(binary), "-c", str(config), *image_flags(), "--concurrency", "2", "--base-id", str(base_id)]
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@asynccontextmanager
async def gateway(tmp_path: Path, backend: Backend) -> AsyncIterator[Gateway]:
    """The deployment's config (metrics listener included) and flags, on free loopback ports."""
    api, admin, metrics = free_port(), free_port(), free_port()
    config = envoy.EnvoyConfig(
        backends={s: ("127.0.0.1", backend.port) for s in envoy.SERVICES},
        descriptor_path=str(ROOT / "build" / "hishamos.pb"),
        listen_port=api,
        admin_port=admin,
        metrics_port=metrics,
    )
    path = tmp_path / "envoy.yaml"
    path.write_text(envoy.to_yaml(envoy.render(config)))
    log = tmp_path / "envoy.log"
    process = spawn_envoy(path, api, log)
    running = Gateway(process, api, admin, metrics, log)
    try:
        # Up when a call through it reaches the backend.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{api}") as channel:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    if await channel.unary_unary(FAST)(b"", timeout=1) == b"fast":
                        break
                except grpc.aio.AioRpcError:
                    assert time.monotonic() < deadline, log.read_text()
                    await asyncio.sleep(0.1)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


async def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def test_the_drain_hook_finishes_calls_under_way_then_sigterm_stops_envoy(tmp_path: Path) -> None:
    """The preStop hook drains: new connections are still taken (and answered) for the drain time while load
    balancers take the pod out, then refused, while the call under way carries on to its answer; the hook returns
    only after it, and the SIGTERM that follows stops an Envoy with nothing left to cut."""

    async def scenario() -> None:
        async with backend() as slow_backend, gateway(tmp_path, slow_backend) as gw:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.api}") as channel:
                under_way = asyncio.ensure_future(channel.unary_unary(SLOW)(b"", timeout=30))
                await asyncio.wait_for(slow_backend.slow_calls.wait(), 10)
                hook = await asyncio.create_subprocess_exec("bash", str(DRAIN_HOOK), f"127.0.0.1:{gw.admin}", "30")
                started = time.monotonic()

                # Within the drain time a new connection is taken and its call answered.
                async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.api}") as late:
                    assert await late.unary_unary(FAST)(b"", timeout=5) == b"fast"
                assert time.monotonic() - started < DRAIN_SECONDS, "too slow to see the drain time: rerun"

                # Then the listener closes: new connections are refused while the call is still under way.
                await wait_until(lambda: not gw.accepts(), DRAIN_SECONDS + 5, "Envoy still takes connections")
                assert not under_way.done(), "the call ended before Envoy stopped taking connections"
                assert hook.returncode is None, "the hook returned with a call under way"

                assert await under_way == b"slow"  # OK, answered through the draining gateway
                assert await asyncio.wait_for(hook.wait(), 10) == 0
                assert time.monotonic() - started >= DRAIN_SECONDS

            gw.process.send_signal(signal.SIGTERM)  # what Kubernetes sends once the hook returns
            assert gw.process.wait(10) == 0

    asyncio.run(scenario())


def test_sigterm_without_the_hook_cuts_the_call_under_way(tmp_path: Path) -> None:
    """What the hook is for: Envoy exits at SIGTERM at once, and the call under way fails."""

    async def scenario() -> None:
        async with (
            backend() as slow_backend,
            gateway(tmp_path, slow_backend) as gw,
            grpc.aio.insecure_channel(f"127.0.0.1:{gw.api}") as channel,
        ):
            under_way = asyncio.ensure_future(channel.unary_unary(SLOW)(b"", timeout=30))
            await asyncio.wait_for(slow_backend.slow_calls.wait(), 10)
            gw.process.send_signal(signal.SIGTERM)
            try:
                await under_way
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            else:
                raise AssertionError("the call survived a plain SIGTERM")

    asyncio.run(scenario())


def test_the_local_stacks_drain_finishes_calls_under_way(tmp_path: Path) -> None:
    """`make up` stops Envoy the same way, without the drain time (no load balancer to wait for): the listener
    closes at once and the stop waits for the call under way."""

    async def scenario() -> None:
        async with backend() as slow_backend, gateway(tmp_path, slow_backend) as gw:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.api}") as channel:
                under_way = asyncio.ensure_future(channel.unary_unary(SLOW)(b"", timeout=30))
                await asyncio.wait_for(slow_backend.slow_calls.wait(), 10)
                drained = asyncio.ensure_future(asyncio.to_thread(envoy.drain, gw.admin, timeout=30))
                await wait_until(lambda: not gw.accepts(), 5, "Envoy still takes connections")
                assert not drained.done() and not under_way.done()
                await drained
                assert under_way.done() and await under_way == b"slow"
            gw.process.send_signal(signal.SIGTERM)
            assert gw.process.wait(10) == 0

    asyncio.run(scenario())


def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def test_the_metrics_listener_serves_prometheus_stats_and_nothing_else_of_the_admin_endpoint(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with backend() as slow_backend, gateway(tmp_path, slow_backend) as gw:
            status, body = await asyncio.to_thread(get, gw.metrics, envoy.METRICS_PATH)
            assert status == 200
            assert "# TYPE envoy_http_downstream_rq_total counter" in body
            assert 'envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="api"}' in body
            status, body = await asyncio.to_thread(get, gw.metrics, f"{envoy.METRICS_PATH}?usedonly")
            assert status == 200 and "envoy_cluster_upstream_rq_total" in body

            refused = [
                ("POST", "/quitquitquit"),
                ("GET", "/config_dump"),
                ("GET", "/stats"),
                ("GET", "/server_info"),
                ("GET", "/clusters"),
                ("GET", "/ready"),
                ("POST", "/healthcheck/fail"),
                ("POST", "/logging?level=trace"),
                ("POST", "/drain_listeners"),
                ("GET", "/"),
                ("POST", envoy.METRICS_PATH),  # the stats path, but only to read
                ("GET", f"{envoy.METRICS_PATH}/../../config_dump"),
                ("POST", f"{envoy.METRICS_PATH}/../../quitquitquit"),
                ("GET", "/stats%2Fprometheus"),
                ("GET", "/STATS/PROMETHEUS"),
            ]
            for method, path in refused:
                status, body = await asyncio.to_thread(get, gw.metrics, path, method)
                assert status in {400, 404}, (method, path, status, body)
                assert "envoy_" not in body and "configs" not in body, (method, path)
            # Nothing of that reached the admin endpoint: Envoy runs on, listeners and health as they were.
            assert gw.process.poll() is None
            assert await asyncio.to_thread(get, gw.admin, "/ready") == (200, "LIVE\n")
            assert gw.accepts()

    asyncio.run(scenario())
