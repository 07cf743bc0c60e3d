"""What operators rely on: metrics, clean logs, and a graceful stop."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
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


def misconfigured(stack: Stack, service: str, **settings: str) -> tuple[int, str]:
    """`service` started beside the running stack with `settings` (its own variables, prefix left out)
    on free ports unless they are among them: its exit code and what it printed."""
    prefix = f"HISHAMOS_{service.upper()}_"
    env = {**stack.service_env(service), prefix + "PORT": str(free_port()), prefix + "METRICS_PORT": str(free_port())}
    env.update({prefix + name.upper(): value for name, value in settings.items()})
    done = subprocess.run(
        [sys.executable, "-m", f"hishamos_{service}"], env=env, capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stdout + done.stderr


def test_a_misconfigured_service_stops_with_a_line_that_says_what_to_set(stack: Stack) -> None:
    """No traceback for a setting: the operator learns which variable is wrong and what would do."""
    cases = [
        ("agents", {"port": "abc"}, "bad setting: HISHAMOS_AGENTS_PORT: Input should be a valid integer"),
        ("agents", {"log_level": "verbose"}, "bad setting: HISHAMOS_AGENTS_LOG_LEVEL: Value error, must be one of"),
        (
            "identity",
            {"service_credentials": "{bad"},
            "bad setting: HISHAMOS_IDENTITY_SERVICE_CREDENTIALS must be JSON",
        ),
        # The running copy holds these ports: a second copy must not quietly share them.
        (
            "agents",
            {"port": str(stack.ports.services["agents"])},
            "is another process using the port? Set HISHAMOS_AGENTS_PORT",
        ),
        (
            "agents",
            {"metrics_port": str(stack.ports.metrics["agents"])},
            "Set HISHAMOS_AGENTS_METRICS_PORT to another port",
        ),
        (
            "identity",
            {"mail_outbox_dir": "", "smtp_host": ""},
            "identity sends mail (invitations, password resets): set",
        ),
        (
            "identity",
            {"key_encryption_key": base64.b64encode(b"k" * 32).decode()},
            "HISHAMOS_IDENTITY_KEY_ENCRYPTION_KEY does not open the signing keys in the database",
        ),
    ]
    for service, settings, said in cases:
        code, output = misconfigured(stack, service, **settings)
        assert code != 0 and said in output and "Traceback" not in output, (settings, output[-2000:])


def test_a_service_without_its_database_waits_saying_so_and_never_says_serving(stack: Stack, tmp_path: Path) -> None:
    env = {
        **stack.service_env("agents"),
        "HISHAMOS_AGENTS_PORT": str(port := free_port()),
        "HISHAMOS_AGENTS_METRICS_PORT": "-1",
        "HISHAMOS_AGENTS_DATABASE_URL": f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing",
    }
    log = tmp_path / "agents.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "hishamos_agents"], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while "waiting to serve" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        said = log.read_text()
        assert "the database is unreachable (connection failed:" in said and "Connection refused" in said
        assert "check DATABASE_URL" in said
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=2)  # not listening: no probe calls it ready
        assert process.poll() is None  # still waiting, not crashed
    finally:
        process.terminate()
        process.wait(timeout=30)
