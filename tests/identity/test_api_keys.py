"""API keys: shown once, stored hashed, scoped, rate-limited, revocable, accepted by every service."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from hishamos.agents.v1 import platform_pb2, platform_pb2_grpc
from hishamos.identity.v1 import api_key_pb2 as pb
from hishamos.identity.v1 import api_key_pb2_grpc, audit_pb2, audit_pb2_grpc, user_pb2, user_pb2_grpc
from hishamos.knowledge.v1 import document_pb2, document_pb2_grpc
from hishamos.projects.v1 import project_pb2, project_pb2_grpc
from hishamos_devstack.stack import Stack
from tests.conftest import Channels, Tenant, add_user
from tests.db import superuser
from tests.errors import Failure, decode, failure

LIST_PROJECTS = ["projects.projects.list", "knowledge.documents.list"]


def test_keys_are_listed_by_owner(channels: Channels, tenant: Tenant) -> None:
    member = add_user(channels, tenant, "developer")
    mine = create(channels, tenant, LIST_PROJECTS).api_key
    theirs = create(channels, member, ["projects.projects.list"]).api_key
    listing = pb.ListApiKeysRequest(parent=tenant.organization, filter=f'owner = "{member.user}"')
    listed = keys(channels).ListApiKeys(listing, metadata=tenant.metadata, timeout=10).api_keys
    assert [k.name for k in listed] == [theirs.name] and mine.name != theirs.name
    listing.filter = 'owner = "ada"'
    bad = failure(lambda: keys(channels).ListApiKeys(listing, metadata=tenant.metadata, timeout=10))
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT and "filter" in bad.violations


def test_a_key_is_renamed_rescoped_and_relimited_by_its_owner(channels: Channels, tenant: Tenant) -> None:
    owner, other = add_user(channels, tenant, "developer"), add_user(channels, tenant, "developer")
    key = create(channels, owner, ["projects.projects.list", "projects.projects.get"], rate_limit_per_minute=600)

    def update(caller: Tenant, *paths: str, **fields: object) -> pb.ApiKey:
        changed = pb.ApiKey(name=key.api_key.name, **fields)  # type: ignore[arg-type]
        request = pb.UpdateApiKeyRequest(api_key=changed, update_mask=FieldMask(paths=list(paths)))
        return keys(channels).UpdateApiKey(request, metadata=caller.metadata, timeout=10).api_key

    updated = update(owner, "display_name", "rate_limit_per_minute", display_name="Nightly", rate_limit_per_minute=2)
    assert (updated.display_name, updated.rate_limit_per_minute) == ("Nightly", 2)
    assert list(updated.scopes) == list(key.api_key.scopes) and updated.prefix == key.api_key.prefix
    for _ in range(2):
        list_projects(channels.direct("projects"), tenant, (("x-api-key", key.secret),))
    limited = failure(lambda: list_projects(channels.direct("projects"), tenant, (("x-api-key", key.secret),)))
    assert limited.code == grpc.StatusCode.RESOURCE_EXHAUSTED and limited.metadata["limit"] == "2"
    assert list(update(owner, "scopes", scopes=["projects.projects.list"]).scopes) == ["projects.projects.list"]

    beyond = failure(lambda: update(owner, "scopes", scopes=["identity.users.update"]))
    assert beyond.code == grpc.StatusCode.INVALID_ARGUMENT and "api_key.scopes[0]" in beyond.violations
    assert "update_mask.paths[0]" in failure(lambda: update(owner, "prefix", prefix="hos_x")).violations
    assert failure(lambda: update(other, "display_name", display_name="Mine")).code == grpc.StatusCode.PERMISSION_DENIED
    assert update(tenant, "display_name", display_name="By an admin").display_name == "By an admin"
    revoke(channels, owner, key.api_key.name)
    revoked = failure(lambda: update(owner, "display_name", display_name="Late"))
    assert revoked.code == grpc.StatusCode.FAILED_PRECONDITION and revoked.reason == "API_KEY_REVOKED"
    got = keys(channels).GetApiKey(pb.GetApiKeyRequest(name=key.api_key.name), metadata=owner.metadata, timeout=10)
    assert got.api_key.display_name == "By an admin" and list(got.api_key.scopes) == ["projects.projects.list"]


def test_a_manager_looks_after_the_keys_of_those_they_could_make_but_not_an_admins(
    channels: Channels, tenant: Tenant
) -> None:
    manager, developer = add_user(channels, tenant, "manager"), add_user(channels, tenant, "developer")
    admins = create(channels, tenant, ["projects.projects.list"]).api_key
    developers = create(channels, developer, ["projects.projects.list"]).api_key

    def relimit(name: str) -> pb.ApiKey:
        changed = pb.ApiKey(name=name, rate_limit_per_minute=1)
        request = pb.UpdateApiKeyRequest(api_key=changed, update_mask=FieldMask(paths=["rate_limit_per_minute"]))
        return keys(channels).UpdateApiKey(request, metadata=manager.metadata, timeout=10).api_key

    for refused in (lambda: relimit(admins.name), lambda: revoke(channels, manager, admins.name)):
        f = failure(refused)
        assert f.code == grpc.StatusCode.PERMISSION_DENIED and f.reason == "DELEGATION_DENIED"
    got = keys(channels).GetApiKey(pb.GetApiKeyRequest(name=admins.name), metadata=tenant.metadata, timeout=10)
    assert got.api_key.etag == admins.etag and not got.api_key.HasField("revoke_time")
    assert relimit(developers.name).rate_limit_per_minute == 1
    # A scope the manager holds but the developer does not would wake up the day the developer gained it.
    rescope = pb.UpdateApiKeyRequest(
        api_key=pb.ApiKey(name=developers.name, scopes=["projects.projects.list", "identity.users.delete"]),
        update_mask=FieldMask(paths=["scopes"]),
    )
    f = failure(lambda: keys(channels).UpdateApiKey(rescope, metadata=manager.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"api_key.scopes[1]"}
    assert revoke(channels, manager, developers.name).HasField("revoke_time")


def test_a_stale_etag_changes_nothing_and_using_a_key_keeps_its_etag(channels: Channels, tenant: Tenant) -> None:
    key = create(channels, tenant, LIST_PROJECTS)
    first = key.api_key.etag
    list_projects(channels.direct("projects"), tenant, (("x-api-key", key.secret),))  # writes last use
    get = pb.GetApiKeyRequest(name=key.api_key.name)
    assert keys(channels).GetApiKey(get, metadata=tenant.metadata, timeout=10).api_key.etag == first

    def update(etag: str, display_name: str) -> pb.ApiKey:
        changed = pb.ApiKey(name=key.api_key.name, display_name=display_name, etag=etag)
        request = pb.UpdateApiKeyRequest(api_key=changed, update_mask=FieldMask(paths=["display_name"]))
        return keys(channels).UpdateApiKey(request, metadata=tenant.metadata, timeout=10).api_key

    second = update(first, "Renamed").etag
    assert second and second != first
    for stale in (lambda: update(first, "Lost"), lambda: revoke(channels, tenant, key.api_key.name, first)):
        refused = failure(stale)
        assert refused.code == grpc.StatusCode.ABORTED and refused.reason == "ETAG_MISMATCH"
        assert refused.metadata["current_etag"] == second
    got = keys(channels).GetApiKey(get, metadata=tenant.metadata, timeout=10).api_key
    assert (got.display_name, got.etag, got.HasField("revoke_time")) == ("Renamed", second, False)
    list_projects(channels.direct("projects"), tenant, (("x-api-key", key.secret),))  # still works
    revoked = revoke(channels, tenant, key.api_key.name, second)
    assert revoked.HasField("revoke_time") and revoked.etag not in (first, second)


def revoke(channels: Channels, caller: Tenant, name: str, etag: str = "") -> pb.ApiKey:
    request = pb.RevokeApiKeyRequest(name=name, etag=etag)
    return keys(channels).RevokeApiKey(request, metadata=caller.metadata, timeout=10).api_key


def refusals_by_identity(stack: Stack, code: str = "UNAUTHENTICATED") -> float:
    """How many AuthenticateApiKey calls identity has answered with `code`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.ports.metrics['identity']}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    method = "/hishamos.identity.v1.ApiKeyService/AuthenticateApiKey"
    found = re.search(rf'grpc_server_handled_total{{grpc_code="{code}",grpc_method="{method}"}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def test_a_refused_key_is_remembered_not_asked_about_on_every_call(
    stack: Stack, channels: Channels, tenant: Tenant
) -> None:
    bogus = f"hos_{tenant.organization.split('/')[1].replace('-', '')}_{'b' * 43}"
    before = refusals_by_identity(stack)
    for _ in range(20):
        f = failure(lambda: list_projects(channels.direct("projects"), tenant, (("x-api-key", bogus),)))
        assert f.code == grpc.StatusCode.UNAUTHENTICATED
    assert refusals_by_identity(stack) - before == 1


def tried(call: Callable[[], object]) -> Failure | None:
    """None when `call` succeeds, else how it failed."""
    try:
        call()
    except grpc.RpcError as exc:
        return decode(exc)
    return None


def keys(channels: Channels) -> api_key_pb2_grpc.ApiKeyServiceStub:
    return api_key_pb2_grpc.ApiKeyServiceStub(channels.direct("identity"))


def create(channels: Channels, tenant: Tenant, scopes: list[str], **fields: object) -> pb.CreateApiKeyResponse:
    key = pb.ApiKey(display_name="CI", scopes=scopes, **fields)  # type: ignore[arg-type]
    return keys(channels).CreateApiKey(
        pb.CreateApiKeyRequest(parent=tenant.organization, api_key=key), metadata=tenant.metadata, timeout=10
    )


def test_the_audit_log_names_the_key_a_change_was_made_with(channels: Channels, tenant: Tenant) -> None:
    """A key acts as its owner; the admin reading the log still tells the key's doing from the owner's."""
    created = create(channels, tenant, ["identity.api_keys.revoke"])
    for metadata in ((("x-api-key", created.secret),), tenant.metadata):
        doomed = create(channels, tenant, LIST_PROJECTS).api_key.name
        keys(channels).RevokeApiKey(pb.RevokeApiKeyRequest(name=doomed), metadata=metadata, timeout=10)
    logged = audit_pb2.ListAuditEventsRequest(parent=tenant.organization, filter='action = "api_key.revoked"')
    audit = audit_pb2_grpc.AuditServiceStub(channels.direct("identity"))
    by_hand, by_key = audit.ListAuditEvents(logged, metadata=tenant.metadata, timeout=10).audit_events  # newest first
    assert (by_key.actor, by_key.details["api_key"]) == (tenant.user, created.api_key.name)
    assert by_hand.actor == tenant.user and "api_key" not in by_hand.details


def list_projects(channel: grpc.Channel, tenant: Tenant, metadata: tuple[tuple[str, str], ...]) -> object:
    api = project_pb2_grpc.ProjectServiceStub(channel)
    return api.ListProjects(project_pb2.ListProjectsRequest(parent=tenant.organization), metadata=metadata, timeout=10)


def test_a_key_calls_other_services_within_its_scopes(stack: Stack, channels: Channels, tenant: Tenant) -> None:
    created = create(channels, tenant, LIST_PROJECTS)
    secret = created.secret
    assert secret.startswith(created.api_key.prefix[:4]) and secret[37:45] == created.api_key.prefix[4:]
    assert created.api_key.owner == tenant.user and list(created.api_key.scopes) == sorted(LIST_PROJECTS)
    list_projects(channels.direct("projects"), tenant, (("x-api-key", secret),))
    list_projects(channels.envoy(), tenant, (("authorization", f"Bearer {secret}"),))
    create_project = project_pb2.CreateProjectRequest(
        parent=tenant.organization, project=project_pb2.Project(display_name="K", slug="kk")
    )
    api = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    denied = failure(lambda: api.CreateProject(create_project, metadata=(("x-api-key", secret),), timeout=10))
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED
    listed = keys(channels).ListApiKeys(
        pb.ListApiKeysRequest(parent=tenant.organization), metadata=tenant.metadata, timeout=10
    )
    assert [k.name for k in listed.api_keys] == [created.api_key.name]
    assert secret not in str(listed) and listed.api_keys[0].last_used_time.seconds > 0
    with superuser(stack, "identity") as conn:
        stored = str(conn.execute("select * from api_keys").fetchall())
    assert secret not in stored and secret[37:] not in stored


def test_scopes_must_be_held_by_the_owner(channels: Channels, tenant: Tenant) -> None:
    developer = add_user(channels, tenant, "developer")
    f = failure(lambda: create(channels, developer, ["projects.projects.delete", "projects.projects.list"]))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"api_key.scopes[0]"}
    past = Timestamp(seconds=int(time.time()) - 60)
    f = failure(lambda: create(channels, tenant, [], expire_time=past))
    assert set(f.violations) == {"api_key.scopes", "api_key.expire_time"}
    for beyond in (Timestamp(seconds=253402300800), Timestamp(seconds=int(time.time()) + 3600, nanos=2_000_000_000)):
        f = failure(lambda b=beyond: create(channels, tenant, LIST_PROJECTS, expire_time=b))
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"api_key.expire_time"}


def test_a_key_made_by_a_key_ends_when_it_does(channels: Channels, tenant: Tenant) -> None:
    scopes = [*LIST_PROJECTS, "identity.api_keys.create"]
    soon = Timestamp(seconds=int(time.time()) + 3600)
    parent = create(channels, tenant, scopes, expire_time=soon).secret
    by_key = (("x-api-key", parent),)

    def make(**fields: object) -> pb.CreateApiKeyResponse:
        key = pb.ApiKey(display_name="child", scopes=LIST_PROJECTS, **fields)  # type: ignore[arg-type]
        request = pb.CreateApiKeyRequest(parent=tenant.organization, api_key=key)
        return keys(channels).CreateApiKey(request, metadata=by_key, timeout=10)

    for fields in ({}, {"expire_time": Timestamp(seconds=soon.seconds + 60)}):
        f = failure(lambda fields=fields: make(**fields))
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"api_key.expire_time"}
    child = make(expire_time=Timestamp(seconds=soon.seconds - 60)).api_key
    assert child.expire_time.seconds == soon.seconds - 60

    # Nor does it reach further through a key that outlives it: it changes only keys that end first.
    lasting = create(channels, tenant, LIST_PROJECTS).api_key
    updater = create(channels, tenant, [*scopes, "identity.api_keys.update"], expire_time=soon).secret

    def rescope(name: str) -> pb.ApiKey:
        changed = pb.ApiKey(name=name, scopes=[*LIST_PROJECTS, "identity.api_keys.update"])
        request = pb.UpdateApiKeyRequest(api_key=changed, update_mask=FieldMask(paths=["scopes"]))
        return keys(channels).UpdateApiKey(request, metadata=(("x-api-key", updater),), timeout=10).api_key

    f = failure(lambda: rescope(lasting.name))
    assert f.code == grpc.StatusCode.PERMISSION_DENIED and f.reason == "KEY_OUTLIVES_CALLER"
    assert "identity.api_keys.update" in rescope(child.name).scopes
    revoker = (("x-api-key", create(channels, tenant, ["identity.api_keys.revoke"], expire_time=soon).secret),)
    f = failure(lambda: keys(channels).RevokeApiKey(pb.RevokeApiKeyRequest(name=lasting.name), metadata=revoker))
    assert f.code == grpc.StatusCode.PERMISSION_DENIED and f.reason == "KEY_OUTLIVES_CALLER"
    got = keys(channels).GetApiKey(pb.GetApiKeyRequest(name=lasting.name), metadata=tenant.metadata, timeout=10)
    assert not got.api_key.HasField("revoke_time")


def list_anything(channels: Channels, tenant: Tenant, service: str, secret: str) -> object:
    """A List call on `service` made with the API key `secret`."""
    metadata = (("x-api-key", secret),)
    if service == "identity":
        users = user_pb2_grpc.UserServiceStub(channels.direct(service))
        return users.ListUsers(user_pb2.ListUsersRequest(parent=tenant.organization), metadata=metadata, timeout=10)
    if service == "agents":
        platforms = platform_pb2_grpc.PlatformServiceStub(channels.direct(service))
        listing = platform_pb2.ListPlatformsRequest(parent=tenant.organization)
        return platforms.ListPlatforms(listing, metadata=metadata, timeout=10)
    if service == "knowledge":
        documents = document_pb2_grpc.DocumentServiceStub(channels.direct(service))
        request = document_pb2.ListDocumentsRequest(parent=tenant.organization)
        return documents.ListDocuments(request, metadata=metadata, timeout=10)
    return list_projects(channels.direct(service), tenant, metadata)


EVERY_SERVICE = ("identity", "agents", "projects", "knowledge")
EVERY_LIST = [*LIST_PROJECTS, "identity.users.list", "agents.platforms.list"]


def test_the_rate_limit_is_shared_by_every_service(channels: Channels, tenant: Tenant) -> None:
    secret = create(channels, tenant, EVERY_LIST, rate_limit_per_minute=4).secret
    negative = pb.AuthenticateApiKeyRequest(key=secret, reserve_calls=-1)
    assert failure(lambda: keys(channels).AuthenticateApiKey(negative, timeout=10)).violations.keys() == {
        "reserve_calls"
    }
    started = time.monotonic()
    # 20 calls at once, five to each service: four in all are served, not four by each.
    with ThreadPoolExecutor(20) as pool:
        outcomes = list(
            pool.map(
                lambda service: tried(lambda: list_anything(channels, tenant, service, secret)),
                [service for service in EVERY_SERVICE for _ in range(5)],
            )
        )
    refilled = int((time.monotonic() - started) / 15)  # one call every 15 seconds
    served = [o for o in outcomes if o is None]
    assert 4 <= len(served) <= 4 + refilled
    for refused in (o for o in outcomes if o is not None):
        assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED and refused.metadata["limit"] == "4"
        assert refused.retry_delay is not None and 0 < refused.retry_delay <= 15


def test_a_rate_limited_key_works_again_after_the_delay_it_is_told(channels: Channels, tenant: Tenant) -> None:
    secret = create(channels, tenant, EVERY_LIST, rate_limit_per_minute=120).secret
    started = time.monotonic()
    served = 0
    while (refused := tried(lambda: list_anything(channels, tenant, "projects", secret))) is None:
        served += 1
        assert served <= 120 + 2 * (time.monotonic() - started) + 1, "more calls served than the limit allows"
    assert served >= 120 - 4  # reserved calls still unused when the key is verified again are dropped
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED and refused.retry_delay is not None
    assert 0 < refused.retry_delay <= 2  # until the four calls a process reserves at a time are there
    time.sleep(refused.retry_delay + 0.05)
    list_anything(channels, tenant, "agents", secret)


def test_revoked_or_bogus_keys_stop_working(channels: Channels, tenant: Tenant, other_tenant: Tenant) -> None:
    created = create(channels, tenant, LIST_PROJECTS)
    secret = created.secret
    list_projects(channels.direct("projects"), tenant, (("x-api-key", secret),))  # cached by projects now
    theirs = failure(lambda: revoke(channels, other_tenant, created.api_key.name))
    assert theirs.code == grpc.StatusCode.NOT_FOUND
    revoked = revoke(channels, tenant, created.api_key.name)
    assert revoked.revoke_time.seconds > 0
    documents = document_pb2_grpc.DocumentServiceStub(channels.direct("knowledge"))
    request = document_pb2.ListDocumentsRequest(parent=tenant.organization)
    # A service that had not cached the key refuses it at once; one that had, within 10 seconds.
    assert failure(lambda: documents.ListDocuments(request, metadata=(("x-api-key", secret),), timeout=10)).code == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    time.sleep(10.5)
    f = failure(lambda: list_projects(channels.direct("projects"), tenant, (("x-api-key", secret),)))
    assert f.code == grpc.StatusCode.UNAUTHENTICATED
    for bogus in ("hos_nope", secret[:-3] + "abc", f"hos_{'0' * 32}_{'a' * 43}"):
        f = failure(lambda b=bogus: list_projects(channels.direct("projects"), tenant, (("x-api-key", b),)))
        assert f.code == grpc.StatusCode.UNAUTHENTICATED


def test_a_key_a_service_has_cached_stops_working_when_it_expires(
    stack: Stack, channels: Channels, tenant: Tenant
) -> None:
    """A revocation reaches a service within its cache time; an expiry is known in advance and holds
    to the second. A blank `x-api-key` beside a token is no credential."""
    made = create(channels, tenant, LIST_PROJECTS, expire_time=Timestamp(seconds=int(time.time()) + 3600))
    with superuser(stack, "identity") as conn:  # an hour on: the key ends in five seconds
        conn.execute(
            "UPDATE api_keys SET expires_at = now() + interval '5 seconds' WHERE id = %s",
            (made.api_key.name.rsplit("/", 1)[1],),
        )
    documents = document_pb2_grpc.DocumentServiceStub(channels.direct("knowledge"))
    request = document_pb2.ListDocumentsRequest(parent=tenant.organization)
    for _ in range(2):  # verified, and calls reserved for it
        documents.ListDocuments(request, metadata=(("x-api-key", made.secret),), timeout=10)
    time.sleep(5.5)
    f = failure(lambda: documents.ListDocuments(request, metadata=(("x-api-key", made.secret),), timeout=10))
    assert f.code == grpc.StatusCode.UNAUTHENTICATED
    assert documents.ListDocuments(request, metadata=(*tenant.metadata, ("x-api-key", " ")), timeout=10)


def test_a_retried_create_returns_the_first_key_without_its_secret(channels: Channels, tenant: Tenant) -> None:
    """A client whose answer was lost retries: one key, whose secret is not shown again (it can revoke it)."""
    key = pb.ApiKey(display_name="Retried", scopes=LIST_PROJECTS)
    request = pb.CreateApiKeyRequest(parent=tenant.organization, api_key=key, request_id=str(uuid.uuid4()))
    first = keys(channels).CreateApiKey(request, metadata=tenant.metadata, timeout=10)
    again = keys(channels).CreateApiKey(request, metadata=tenant.metadata, timeout=10)
    assert first.secret.startswith("hos_") and again.secret == "" and again.api_key == first.api_key
    listed = keys(channels).ListApiKeys(pb.ListApiKeysRequest(parent=tenant.organization), metadata=tenant.metadata)
    assert [k.name for k in listed.api_keys if k.display_name == "Retried"] == [first.api_key.name]
    later = create(channels, tenant, LIST_PROJECTS).api_key
    oldest_first = pb.ListApiKeysRequest(parent=tenant.organization, order_by="create_time")
    names = [k.name for k in keys(channels).ListApiKeys(oldest_first, metadata=tenant.metadata).api_keys]
    assert names.index(first.api_key.name) < names.index(later.name)
    request.request_id = "not-a-uuid"
    f = failure(lambda: keys(channels).CreateApiKey(request, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"request_id"}
