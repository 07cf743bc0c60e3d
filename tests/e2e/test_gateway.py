"""Through Envoy, as operators and programs use it: grpcurl, generated stubs and JSON over HTTP."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from hishamos.identity.v1 import auth_pb2, auth_pb2_grpc
from hishamos.projects.v1 import project_pb2, project_pb2_grpc
from hishamos_devstack import envoy
from hishamos_devstack.envoy import BACKEND_HEADER
from hishamos_devstack.stack import ROOT, SERVICES, Stack, free_port
from tests.conftest import PASSWORD, Channels, Tenant
from tests.errors import failure

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
API = [
    "hishamos.agents.v1.PlatformService",
    "hishamos.identity.v1.AuthService",
    "hishamos.identity.v1.OrganizationService",
    "hishamos.knowledge.v1.DocumentService",
    "hishamos.projects.v1.ProjectService",
]


def grpcurl(
    stack: Stack, *words: str, headers: tuple[str, ...] = (), data: object | None = None, port: int | None = None
) -> str:
    """`grpcurl -plaintext [-H h]... [-d data] ADDRESS WORDS...`, as an operator types it."""
    command = [GRPCURL, "-plaintext", "-max-time", "20"]
    for header in headers:
        command += ["-H", header]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += [f"127.0.0.1:{port or stack.ports.envoy}", *words]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_reflection_through_envoy_lists_and_describes_the_whole_api(stack: Stack) -> None:
    listed = grpcurl(stack, "list").split()
    assert set(API) | {"grpc.health.v1.Health"} <= set(listed)
    for service in API:
        described = grpcurl(stack, "describe", service)
        assert f"service {service.rsplit('.', 1)[1]} {{" in described
    method = grpcurl(stack, "describe", "hishamos.projects.v1.ProjectService.GetProject")
    assert "rpc GetProject ( .hishamos.projects.v1.GetProjectRequest )" in method
    message = grpcurl(stack, "describe", "hishamos.identity.v1.Organization")
    assert "message Organization {" in message


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_reports_serving_directly_and_through_envoy(stack: Stack, service: str) -> None:
    direct = json.loads(grpcurl(stack, "grpc.health.v1.Health/Check", port=stack.ports.services[service]))
    via_envoy = json.loads(grpcurl(stack, "grpc.health.v1.Health/Check", headers=(f"{BACKEND_HEADER}: {service}",)))
    assert direct == via_envoy == {"status": "SERVING"}


def test_a_backend_header_naming_no_backend_is_not_answered_by_another(stack: Stack) -> None:
    assert json.loads(grpcurl(stack, "grpc.health.v1.Health/Check")) == {"status": "SERVING"}  # identity's
    command = [GRPCURL, "-plaintext", "-H", f"{BACKEND_HEADER}: projekts", f"127.0.0.1:{stack.ports.envoy}"]
    typo = subprocess.run([*command, "grpc.health.v1.Health/Check"], capture_output=True, text=True, timeout=60)
    assert "code = InvalidArgument" in typo.stderr and "names no backend; use one of identity" in typo.stderr


def test_walkthrough_with_grpcurl(stack: Stack) -> None:
    """The README's walkthrough: sign up, log in, create a project, list projects."""
    signed_up = json.loads(
        grpcurl(
            stack,
            "hishamos.identity.v1.AuthService/SignUp",
            data={
                "organization_slug": "walkthrough",
                "organization_display_name": "Walkthrough Ltd",
                "email": "admin@walkthrough.test",
                "username": "admin",
                "password": PASSWORD,
            },
        )
    )
    org = signed_up["organization"]["name"]
    logged_in = json.loads(
        grpcurl(
            stack,
            "hishamos.identity.v1.AuthService/Login",
            data={"organization_slug": "walkthrough", "login": "admin", "password": PASSWORD},
        )
    )
    bearer = f"authorization: Bearer {logged_in['tokens']['access_token']}"
    created = json.loads(
        grpcurl(
            stack,
            "hishamos.projects.v1.ProjectService/CreateProject",
            headers=(bearer,),
            data={"parent": org, "project": {"display_name": "Apollo", "slug": "apollo"}},
        )
    )
    assert created["project"]["name"].startswith(f"{org}/projects/")
    listed = json.loads(
        grpcurl(stack, "hishamos.projects.v1.ProjectService/ListProjects", headers=(bearer,), data={"parent": org})
    )
    assert [p["name"] for p in listed["projects"]] == [created["project"]["name"]]


def test_json_over_http_is_transcoded(stack: Stack, tenant: Tenant) -> None:
    base = f"http://127.0.0.1:{stack.ports.envoy}"
    headers = {"authorization": f"Bearer {tenant.access_token}", "content-type": "application/json"}
    body = json.dumps({"displayName": "Gemini", "slug": "gemini"}).encode()
    request = urllib.request.Request(f"{base}/v1/{tenant.organization}/projects", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=20) as response:
        created = json.loads(response.read())
    assert created["project"]["slug"] == "gemini"
    listing = urllib.request.Request(f"{base}/v1/{tenant.organization}/projects?pageSize=10", headers=headers)
    with urllib.request.urlopen(listing, timeout=20) as response:
        assert [p["name"] for p in json.loads(response.read())["projects"]] == [created["project"]["name"]]
    misspelt = urllib.request.Request(f"{base}/v1/{tenant.organization}/projects?pageSiz=10", headers=headers)
    with pytest.raises(urllib.error.HTTPError) as unknown:
        urllib.request.urlopen(misspelt, timeout=20)
    assert unknown.value.code == 400 and '"pageSiz"' in json.loads(unknown.value.read())["message"]
    anonymous = urllib.request.Request(f"{base}/v1/{tenant.organization}/projects")
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(anonymous, timeout=20)
    assert denied.value.code == 401
    assert json.loads(denied.value.read())["message"].startswith("send `authorization: Bearer")

    # An error reaches a JSON client as JSON (google.rpc.Status), with what to fix in its details.
    bad = json.dumps({"displayName": "", "slug": "NOT A SLUG"}).encode()
    refused = urllib.request.Request(f"{base}/v1/{tenant.organization}/projects", data=bad, headers=headers)
    with pytest.raises(urllib.error.HTTPError) as invalid:
        urllib.request.urlopen(refused, timeout=20)
    assert invalid.value.code == 400 and invalid.value.headers["content-type"] == "application/json"
    status = json.loads(invalid.value.read())
    assert status["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    (violations,) = (d for d in status["details"] if d["@type"].endswith("google.rpc.BadRequest"))
    assert {v["field"] for v in violations["fieldViolations"]} == {"project.display_name", "project.slug"}


def test_rich_errors_and_deadlines_survive_envoy(channels: Channels, tenant: Tenant) -> None:
    api = project_pb2_grpc.ProjectServiceStub(channels.envoy())
    bad = project_pb2.CreateProjectRequest(parent=tenant.organization, project=project_pb2.Project(slug="BAD"))
    f = failure(lambda: api.CreateProject(bad, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(f.violations) == {"project.display_name", "project.slug"}
    assert f.request_id, "Envoy's x-request-id reaches the service and comes back in RequestInfo"
    # An id sent from outside is replaced at the edge: audit events and logs join on the gateway's.
    forged = (*tenant.metadata, ("x-request-id", "victim-request-1"))
    f = failure(lambda: api.CreateProject(bad, metadata=forged, timeout=10))
    assert f.request_id and f.request_id != "victim-request-1"
    listing = project_pb2.ListProjectsRequest(parent=tenant.organization)
    late = failure(lambda: api.ListProjects(listing, metadata=tenant.metadata, timeout=0.0005))
    assert late.code == grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize("method", ["Login", "RequestPasswordReset"])
def test_a_storm_of_a_public_method_is_refused_at_the_gateway_as_resource_exhausted(
    channels: Channels, tenant: Tenant, method: str
) -> None:
    """RESOURCE_EXHAUSTED tells a client to back off; the UNAVAILABLE of a bare 429 says retry at once.
    Each method has buckets of its own: a flood of resets queues no flood of jobs and mail."""
    auth = auth_pb2_grpc.AuthServiceStub(channels.envoy())
    guess = auth_pb2.LoginRequest(organization_slug=tenant.slug, login="nobody-here", password="wrong-password-1")
    reset = auth_pb2.RequestPasswordResetRequest(organization_slug=tenant.slug, email="nobody@nowhere.test")
    answered = grpc.StatusCode.UNAUTHENTICATED if method == "Login" else grpc.StatusCode.OK

    def attempt(_: int) -> grpc.StatusCode:
        try:
            auth.Login(guess, timeout=30) if method == "Login" else auth.RequestPasswordReset(reset, timeout=30)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK

    # All at once, more than this client's bucket holds (twice what it refills a second: 10 for Login,
    # 2 for resets): the rest are refused on arrival, whatever the time identity takes over the others.
    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(attempt, range(32)))
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and answered in codes
    assert set(codes) <= {answered, grpc.StatusCode.RESOURCE_EXHAUSTED}
    time.sleep(2.5)  # the bucket full again for the calls of the tests after this one


def _login_over_http(stack: Stack, slug: str, source: str) -> int:
    """A sign-in as JSON over HTTP from the local address `source`: the HTTP status Envoy answers, whose body
    is google.rpc.Status JSON, a refusal by the gateway's buckets included."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.ports.envoy, timeout=30, source_address=(source, 0))
    body = json.dumps({"organizationSlug": slug, "login": "nobody-here", "password": "wrong-password-1"})
    try:
        connection.request("POST", "/v1/auth:login", body, {"content-type": "application/json"})
        response = connection.getresponse()
        status = json.loads(response.read())
        assert status["code"] == {401: 16, 429: 8}[response.status] and status["message"], status
        assert response.status != 429 or response.headers["retry-after"] == "1"
        return response.status
    finally:
        connection.close()


def test_one_client_storming_sign_in_leaves_other_clients_able_to_sign_in(stack: Stack, tenant: Tenant) -> None:
    """Sign-in buckets are per client address: a storm from one address empties its own bucket, not
    everyone's, so a flood from one machine cannot keep every user of the platform from signing in."""
    with ThreadPoolExecutor(48) as pool:  # more than even the gateway's shared bucket holds
        storm = list(pool.map(lambda _: _login_over_http(stack, tenant.slug, "127.0.0.1"), range(96)))
    assert 429 in storm and set(storm) <= {401, 429}
    assert storm.count(401) <= 20, "the storming client got no more than its own bucket's worth"
    # Another address is still answered (a wrong password: 401), not refused with the storming one.
    assert _login_over_http(stack, tenant.slug, "127.0.0.2") == 401
    time.sleep(2.5)  # the buckets full again for the calls of the tests after this one


def test_the_gateway_runs_with_its_overload_limits(stack: Stack) -> None:
    """Past its connection and heap limits the gateway refuses work instead of growing until it is killed."""
    url = f"http://127.0.0.1:{stack.ports.envoy_admin}/stats?filter=%5Eoverload%5C."
    with urllib.request.urlopen(url, timeout=10) as reply:
        stats = dict(line.split(": ", 1) for line in reply.read().decode().splitlines())
    assert stats["overload.envoy.overload_actions.stop_accepting_requests.active"] == "0"
    assert 0 < int(stats["overload.envoy.resource_monitors.fixed_heap.pressure"]) < 90  # percent of the limit


def test_json_over_http_keeps_query_strings_out_of_the_log_and_path_fields_out_of_the_body(
    stack: Stack, tenant: Tenant
) -> None:
    """A request field may ride in the query string (CreateUser's password does over HTTP), so the gateway
    logs paths without it; and a body cannot name another resource than the path it was sent to."""
    base = f"http://127.0.0.1:{stack.ports.envoy}"
    headers = {"authorization": f"Bearer {tenant.access_token}", "content-type": "application/json"}
    secret = "Query-Secret-" + tenant.slug
    body = json.dumps({"email": f"q@{tenant.slug}.test", "username": "query-user"}).encode()
    created = urllib.request.Request(
        f"{base}/v1/{tenant.organization}/users?password={secret}", data=body, headers=headers
    )
    with urllib.request.urlopen(created, timeout=20) as response:
        user = json.loads(response.read())["user"]["name"]
    swapped = json.dumps({"user": tenant.user, "role": f"{tenant.organization}/roles/viewer"}).encode()
    collision = urllib.request.Request(f"{base}/v1/{user}:assignRole", data=swapped, headers=headers)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(collision, timeout=20)
    assert refused.value.code == 400
    log = stack.log_dir / "envoy.log"
    deadline = time.monotonic() + 10  # Envoy's file logger flushes from a thread of its own
    while f"/v1/{user}:assignRole" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    text = log.read_text()
    assert f"/v1/{tenant.organization}/users" in text and f"/v1/{user}:assignRole" in text
    assert secret not in text


def test_what_the_gateway_answers_itself_reaches_a_json_client_as_status_json(stack: Stack, tenant: Tenant) -> None:
    """An unknown query parameter, or a path that names no method: google.rpc.Status JSON with the request id,
    as the services' own errors, where Envoy answered text/plain or nothing. gRPC clients keep gRPC statuses."""
    base = f"http://127.0.0.1:{stack.ports.envoy}"
    headers = {"authorization": f"Bearer {tenant.access_token}"}
    for path, status, reason in (
        (f"/v1/{tenant.organization}/projects?pageSiz=10", 400, "INVALID_ARGUMENT"),
        ("/v1/no/such/path", 404, "NOT_FOUND"),
    ):
        request = urllib.request.Request(base + path, headers=headers)
        with pytest.raises(urllib.error.HTTPError) as answered:
            urllib.request.urlopen(request, timeout=20)
        assert answered.value.code == status and answered.value.headers["content-type"] == "application/json"
        assert answered.value.headers["x-request-id"]
        error = json.loads(answered.value.read())
        assert error["code"] == {400: 3, 404: 5}[status] and error["details"][0]["reason"] == reason, error
        assert error["message"], error  # what was wrong, or what to check
    # A gRPC client of a method Envoy does not route still gets a gRPC status, not JSON.
    channel = grpc.insecure_channel(f"127.0.0.1:{stack.ports.envoy}")
    unknown = channel.unary_unary("/hishamos.nothing.v1.Nope/Call")
    with pytest.raises(grpc.RpcError) as refused:
        unknown(b"", timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _http(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request to the gateway: the status, the headers (lower-cased names) and the body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_a_grpc_web_client_reaches_the_api_and_hears_unimplemented_for_an_unknown_method(stack: Stack) -> None:
    """The gateway speaks gRPC-Web: a routed method answers (routes matched only application/grpc, chosen
    before the gRPC-Web filter rewrites it, so every gRPC-Web call found no route), an unknown one is 12."""
    frame = b"\x00\x00\x00\x00\x00"  # an empty HealthCheckRequest, gRPC-Web framed
    headers = {
        "content-type": "application/grpc-web+proto",
        "x-grpc-web": "1",
        "x-user-agent": "grpc-web-javascript/0.1",
    }
    status, got, body = _http(stack.ports.envoy, "POST", "/grpc.health.v1.Health/Check", frame, headers)
    served = status == 200 and (got.get("grpc-status") == "0" or b"grpc-status:0" in body)
    status2, got2, body2 = _http(stack.ports.envoy, "POST", "/hishamos.nothing.v1.Nope/Call", frame, headers)
    unknown = status2 == 200 and (got2.get("grpc-status") == "12" or b"grpc-status:12" in body2)
    assert served and unknown, (
        f"gRPC-Web health check: HTTP {status} headers={got} body={body!r}; "
        f"unknown method: HTTP {status2} headers={got2} body={body2!r}"
    )


@pytest.fixture
def gateway_with_dead_backends(tmp_path: Path) -> Iterator[int]:
    """The project's own gateway configuration (envoy.render), its backends on ports nobody listens on."""
    port, admin = free_port(), free_port()
    backends = {s: ("127.0.0.1", free_port()) for s in SERVICES}
    config = envoy.render(
        envoy.EnvoyConfig(
            backends=backends,
            descriptor_path=str(ROOT / "build" / "hishamos.pb"),
            listen_port=port,
            admin_port=admin,
        )
    )
    path = tmp_path / "envoy.yaml"
    path.write_text(envoy.to_yaml(config))
    log = (tmp_path / "envoy.log").open("wb")
    binary = Path(sys.executable).parent / "envoy"
    process = subprocess.Popen(
        [str(binary), "-c", str(path), "--log-level", "warn", "--concurrency", "1", "--base-id", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "envoy.log").read_text()
                time.sleep(0.1)
        time.sleep(0.3)
        yield port
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def test_a_json_client_hears_unavailable_as_status_json_when_a_backend_is_down(gateway_with_dead_backends: int) -> None:
    """A backend that is down: a JSON/HTTP client gets google.rpc.Status JSON (UNAVAILABLE) with the request
    id, as for Envoy's other replies, where it got text/plain."""
    org = f"organizations/{uuid.uuid4()}"
    status, headers, body = _http(
        gateway_with_dead_backends, "GET", f"/v1/{org}/projects", headers={"authorization": "Bearer x"}
    )
    assert status == 503
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    assert (
        headers.get("content-type") == "application/json"
        and isinstance(parsed, dict)
        and parsed.get("code") == 14
        and headers.get("x-request-id")
    ), f"503 to a JSON client: {headers} body={body!r}"
