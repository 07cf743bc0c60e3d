"""What operators rely on: metrics, clean logs, and a graceful stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hishamos.projects.v1 import project_pb2, project_pb2_grpc
from hishamos_devstack.stack import Stack, free_port
from tests.conftest import PASSWORD, Channels, Tenant
from tests.errors import failure


def test_every_call_is_counted_in_prometheus_metrics(stack: Stack, channels: Channels, tenant: Tenant) -> None:
    api = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    api.ListProjects(project_pb2.ListProjectsRequest(parent=tenant.organization), metadata=tenant.metadata, timeout=10)
    failure(lambda: api.ListProjects(project_pb2.ListProjectsRequest(parent=tenant.organization), timeout=10))
    url = f"http://127.0.0.1:{stack.ports.metrics['projects']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    method = 'grpc_method="/hishamos.projects.v1.ProjectService/ListProjects"'
    assert f'grpc_server_handled_total{{grpc_code="OK",{method}}}' in text
    assert f'grpc_server_handled_total{{grpc_code="UNAUTHENTICATED",{method}}}' in text
    assert f"grpc_server_handling_seconds_bucket{{{method}" in text


def test_logs_are_json_without_stack_traces_sql_or_secrets(stack: Stack, channels: Channels, tenant: Tenant) -> None:
    api = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    bad = project_pb2.CreateProjectRequest(parent=tenant.organization, project=project_pb2.Project(slug="X"))
    failure(lambda: api.CreateProject(bad, metadata=tenant.metadata, timeout=10))
    forged = (("authorization", f"Bearer {tenant.access_token[:-6]}AAAAAA"),)
    failure(lambda: api.GetProject(project_pb2.GetProjectRequest(name="x"), metadata=forged, timeout=10))
    secrets = [PASSWORD, tenant.access_token, tenant.refresh_token, *stack.secrets.values()]
    for service in ("identity", "agents", "projects", "knowledge"):
        lines = (stack.log_dir / f"{service}.log").read_text().splitlines()
        assert lines, service
        for line in lines:
            entry = json.loads(line)  # every line is one JSON object
            assert entry["service"] == service and entry["level"] and entry["time"]
            assert "Traceback" not in line and "SELECT " not in line.upper() and "INSERT " not in line.upper()
            assert not any(secret in line for secret in secrets), f"{service} logged a secret"


def test_sigterm_stops_serving_and_exits_cleanly(stack: Stack) -> None:
    port = free_port()
    env = stack.service_env("projects") | {"HISHAMOS_PROJECTS_PORT": str(port), "HISHAMOS_PROJECTS_METRICS_PORT": "-1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "hishamos_projects"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 30
            while True:
                try:
                    if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        break
                except grpc.RpcError:
                    assert time.monotonic() < deadline, "the service never became healthy"
                    time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    messages = [json.loads(line)["message"] for line in process.stderr.read().decode().splitlines()]  # type: ignore[union-attr]
    assert messages.index("draining") < messages.index("stopped")
