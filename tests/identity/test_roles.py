"""Roles and permissions: the catalog, predefined and custom roles, grants, and enforcement everywhere."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf import symbol_database
from google.protobuf.field_mask_pb2 import FieldMask

from hishamos.identity.v1 import role_pb2 as pb
from hishamos.identity.v1 import role_pb2_grpc, user_pb2, user_pb2_grpc
from hishamos.projects.v1 import project_pb2, project_pb2_grpc
from hishamos_devstack.envoy import SERVICES
from hishamos_kit import api as catalog
from tests.conftest import Channels, Tenant, add_user, sign_up
from tests.errors import decode, failure
from tests.pages import every_page


def roles(channels: Channels) -> role_pb2_grpc.RoleServiceStub:
    return role_pb2_grpc.RoleServiceStub(channels.direct("identity"))


def create_role(channels: Channels, caller: Tenant, role_id: str, permissions: list[str]) -> pb.Role:
    request = pb.CreateRoleRequest(
        parent=caller.organization, role_id=role_id, role=pb.Role(display_name=role_id.title(), permissions=permissions)
    )
    return roles(channels).CreateRole(request, metadata=caller.metadata, timeout=10).role


def test_the_permission_catalog_is_every_rpcs_permission(channels: Channels, tenant: Tenant) -> None:
    listed = every_page(roles(channels).ListPermissions, pb.ListPermissionsRequest(), "permissions", tenant.metadata)
    assert listed == catalog.permissions()
    assert {"projects.projects.create", "identity.roles.assign", "knowledge.documents.delete"} <= set(listed)
    by_seven = pb.ListPermissionsRequest(page_size=7)
    assert every_page(roles(channels).ListPermissions, by_seven, "permissions", tenant.metadata) == listed
    first = roles(channels).ListPermissions(pb.ListPermissionsRequest(), metadata=tenant.metadata, timeout=10)
    assert len(first.permissions) == 50 and first.next_page_token  # the catalog is longer than a default page
    # A token continues only the list it came from.
    alien = pb.ListRolesRequest(parent=tenant.organization, page_token=first.next_page_token)
    f = failure(lambda: roles(channels).ListRoles(alien, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in f.violations


def test_roles_page_predefined_first_then_custom_by_id(channels: Channels, tenant: Tenant) -> None:
    for role_id in ("zeta", "alpha", "mid"):
        create_role(channels, tenant, role_id, ["projects.projects.get"])
    request = pb.ListRolesRequest(parent=tenant.organization, page_size=3)
    ids = [r.name.rsplit("/", 1)[1] for r in every_page(roles(channels).ListRoles, request, "roles", tenant.metadata)]
    assert ids == ["admin", "manager", "developer", "viewer", "alpha", "mid", "zeta"]
    whole = roles(channels).ListRoles(pb.ListRolesRequest(parent=tenant.organization), metadata=tenant.metadata)
    assert [r.name.rsplit("/", 1)[1] for r in whole.roles] == ids and not whole.next_page_token
    # A role deleted between pages neither repeats nor hides the ones after it.
    first = roles(channels).ListRoles(
        pb.ListRolesRequest(parent=tenant.organization, page_size=5), metadata=tenant.metadata, timeout=10
    )
    roles(channels).DeleteRole(pb.DeleteRoleRequest(name=first.roles[-1].name), metadata=tenant.metadata)
    rest = roles(channels).ListRoles(
        pb.ListRolesRequest(parent=tenant.organization, page_size=5, page_token=first.next_page_token),
        metadata=tenant.metadata,
        timeout=10,
    )
    assert [r.name.rsplit("/", 1)[1] for r in rest.roles] == ["mid", "zeta"] and not rest.next_page_token
    other = sign_up(channels.direct("identity"))
    f = failure(
        lambda: roles(channels).ListRoles(
            pb.ListRolesRequest(parent=other.organization, page_token=first.next_page_token), metadata=other.metadata
        )
    )
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in f.violations


def test_predefined_roles_nest_from_viewer_to_admin(channels: Channels, tenant: Tenant) -> None:
    listed = roles(channels).ListRoles(
        pb.ListRolesRequest(parent=tenant.organization), metadata=tenant.metadata, timeout=10
    )
    by_id = {r.name.rsplit("/", 1)[1]: set(r.permissions) for r in listed.roles if r.predefined}
    assert list(by_id) == ["admin", "manager", "developer", "viewer"]
    tenant_permissions = set(catalog.permissions()) - catalog.operator_permissions()
    assert by_id["viewer"] < by_id["developer"] < by_id["manager"] < by_id["admin"] == tenant_permissions
    self_service = {"identity.self.update", "identity.sessions.revoke"}
    assert all(p.split(".")[2] in ("get", "list") or p in self_service for p in by_id["viewer"])
    assert "identity.audit.list" not in by_id["manager"] and "projects.projects.delete" not in by_id["developer"]
    admin = pb.Role(name=f"{tenant.organization}/roles/admin", display_name="Boss")
    f = failure(
        lambda: roles(channels).UpdateRole(pb.UpdateRoleRequest(role=admin), metadata=tenant.metadata, timeout=10)
    )
    assert f.code == grpc.StatusCode.FAILED_PRECONDITION


def test_custom_role_grants_exactly_its_permissions(channels: Channels, tenant: Tenant) -> None:
    bad = pb.Role(display_name="", permissions=["projects.projects.list", "launch.missiles.fire"])
    request = pb.CreateRoleRequest(parent=tenant.organization, role=bad, role_id="Not A Slug")
    f = failure(lambda: roles(channels).CreateRole(request, metadata=tenant.metadata, timeout=10))
    assert set(f.violations) == {"role_id", "role.display_name", "role.permissions[1]"}
    predefined_id = pb.CreateRoleRequest(
        parent=tenant.organization,
        role=pb.Role(display_name="x", permissions=["projects.projects.list"]),
        role_id="admin",
    )
    assert (
        "role_id"
        in failure(lambda: roles(channels).CreateRole(predefined_id, metadata=tenant.metadata, timeout=10)).violations
    )

    auditor = pb.Role(display_name="Project auditor", permissions=["projects.projects.list"])
    created = (
        roles(channels)
        .CreateRole(
            pb.CreateRoleRequest(parent=tenant.organization, role=auditor, role_id="project-auditor"),
            metadata=tenant.metadata,
            timeout=10,
        )
        .role
    )
    assert created.name == f"{tenant.organization}/roles/project-auditor" and not created.predefined
    member = add_user(channels, tenant, "project-auditor")
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    projects.ListProjects(
        project_pb2.ListProjectsRequest(parent=tenant.organization), metadata=member.metadata, timeout=10
    )
    create = project_pb2.CreateProjectRequest(
        parent=tenant.organization, project=project_pb2.Project(display_name="X", slug="xx")
    )
    denied = failure(lambda: projects.CreateProject(create, metadata=member.metadata, timeout=10))
    assert (
        denied.code == grpc.StatusCode.PERMISSION_DENIED and denied.metadata["permission"] == "projects.projects.create"
    )

    renamed = pb.Role(name=created.name, etag=created.etag, display_name="Auditor")
    updated = (
        roles(channels)
        .UpdateRole(
            pb.UpdateRoleRequest(role=renamed, update_mask=FieldMask(paths=["display_name"])),
            metadata=tenant.metadata,
            timeout=10,
        )
        .role
    )
    assert updated.display_name == "Auditor" and list(updated.permissions) == ["projects.projects.list"]
    roles(channels).DeleteRole(pb.DeleteRoleRequest(name=created.name), metadata=tenant.metadata, timeout=10)
    assert (
        failure(
            lambda: roles(channels).GetRole(pb.GetRoleRequest(name=created.name), metadata=tenant.metadata, timeout=10)
        ).code
        == grpc.StatusCode.NOT_FOUND
    )
    # Created again under the same id, it is a new role: an etag read from the deleted one is stale.
    again = create_role(channels, tenant, "project-auditor", ["projects.projects.list"])
    stale = pb.Role(name=again.name, etag=created.etag, permissions=["projects.projects.create"])  # both v1
    update = pb.UpdateRoleRequest(role=stale, update_mask=FieldMask(paths=["permissions"]))
    f = failure(lambda: roles(channels).UpdateRole(update, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.ABORTED and f.metadata["current_etag"] == again.etag
    got = roles(channels).GetRole(pb.GetRoleRequest(name=again.name), metadata=tenant.metadata, timeout=10).role
    assert list(got.permissions) == ["projects.projects.list"]


def test_a_token_names_predefined_roles_and_lists_only_what_custom_roles_add(
    channels: Channels, tenant: Tenant
) -> None:
    # An admin's token stays small however many permissions the catalog declares.
    admin_claims = jwt.decode(tenant.access_token, options={"verify_signature": False})
    assert admin_claims["roles"] == ["admin"] and admin_claims["perms"] == [] and len(tenant.access_token) < 1000
    creator = pb.Role(display_name="Creator", permissions=["projects.projects.create", "projects.projects.list"])
    request = pb.CreateRoleRequest(parent=tenant.organization, role=creator, role_id="project-creator")
    roles(channels).CreateRole(request, metadata=tenant.metadata, timeout=10)
    member = add_user(channels, tenant, "viewer", "project-creator")
    claims = jwt.decode(member.access_token, options={"verify_signature": False})
    assert claims["perms"] == ["projects.projects.create"]  # listing comes with viewer
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    made = projects.CreateProject(
        project_pb2.CreateProjectRequest(
            parent=tenant.organization, project=project_pb2.Project(display_name="Mine", slug="by-creator")
        ),
        metadata=member.metadata,
        timeout=10,
    ).project
    got = projects.GetProject(project_pb2.GetProjectRequest(name=made.name), metadata=member.metadata, timeout=10)
    assert got.project.name == made.name
    delete = project_pb2.DeleteProjectRequest(name=made.name)
    denied = failure(lambda: projects.DeleteProject(delete, metadata=member.metadata, timeout=10))
    assert (
        denied.code == grpc.StatusCode.PERMISSION_DENIED and denied.metadata["permission"] == "projects.projects.delete"
    )


def test_assign_and_unassign_roles_and_keep_the_last_admin(
    channels: Channels, tenant: Tenant, other_tenant: Tenant
) -> None:
    member = add_user(channels, tenant)
    manager = f"{tenant.organization}/roles/manager"
    granted = (
        roles(channels)
        .AssignRole(pb.AssignRoleRequest(user=member.user, role=manager), metadata=tenant.metadata, timeout=10)
        .user
    )
    assert set(granted.roles) == {"viewer", "manager"}
    again = (
        roles(channels)
        .AssignRole(pb.AssignRoleRequest(user=member.user, role=manager), metadata=tenant.metadata, timeout=10)
        .user
    )
    assert list(again.roles) == list(granted.roles)
    taken = (
        roles(channels)
        .UnassignRole(pb.UnassignRoleRequest(user=member.user, role=manager), metadata=tenant.metadata, timeout=10)
        .user
    )
    assert list(taken.roles) == ["viewer"]
    last_admin = pb.UnassignRoleRequest(user=tenant.user, role=f"{tenant.organization}/roles/admin")
    f = failure(lambda: roles(channels).UnassignRole(last_admin, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.FAILED_PRECONDITION and f.reason == "LAST_ADMIN"
    # Another organization's user or role is not found, and nothing changes.
    theirs = pb.AssignRoleRequest(user=other_tenant.user, role=f"{other_tenant.organization}/roles/viewer")
    assert (
        failure(lambda: roles(channels).AssignRole(theirs, metadata=tenant.metadata, timeout=10)).code
        == grpc.StatusCode.NOT_FOUND
    )
    unknown = pb.AssignRoleRequest(user=member.user, role=f"{tenant.organization}/roles/no-such-role")
    assert (
        failure(lambda: roles(channels).AssignRole(unknown, metadata=tenant.metadata, timeout=10)).code
        == grpc.StatusCode.NOT_FOUND
    )


def _every_rpc() -> list[tuple[str, str, str]]:
    return [
        (s.full_name.split(".")[1], f"/{s.full_name}/{m.name}", m.input_type.full_name)
        for s in catalog.services()
        for m in s.methods
        if catalog.authorization(f"/{s.full_name}/{m.name}").permission
    ]


@pytest.mark.parametrize("role", ["viewer", "developer", "manager", "admin"])
def test_each_role_is_enforced_on_every_rpc_of_every_service(channels: Channels, tenant: Tenant, role: str) -> None:
    """Table-driven over the catalog: an RPC outside the role's permissions is PERMISSION_DENIED before
    anything else is looked at; one inside it gets past authorization (to whatever the empty request earns)."""
    member = add_user(channels, tenant, role) if role != "admin" else tenant
    listed = roles(channels).GetRole(
        pb.GetRoleRequest(name=f"{tenant.organization}/roles/{role}"), metadata=tenant.metadata, timeout=10
    )
    allowed = set(listed.role.permissions)
    assert catalog.operator_permissions() and not allowed & catalog.operator_permissions()  # never a tenant's
    symbols = symbol_database.Default()
    assert {backend for backend, _, _ in _every_rpc()} == set(SERVICES)
    for backend, method, request_type in _every_rpc():
        permission = catalog.authorization(method).permission
        request = symbols.GetSymbol(request_type)()
        call = channels.direct(backend).unary_unary(method, request_serializer=lambda m: m.SerializeToString())
        try:
            call(request, metadata=member.metadata, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
        if permission in allowed:
            assert code != grpc.StatusCode.PERMISSION_DENIED, (role, method)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (role, method, code)


def test_nobody_grants_or_edits_beyond_their_own_permissions(channels: Channels, tenant: Tenant) -> None:
    manager = add_user(channels, tenant, "manager")
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    make_admin = pb.AssignRoleRequest(user=manager.user, role=f"{tenant.organization}/roles/admin")
    f = failure(lambda: roles(channels).AssignRole(make_admin, metadata=manager.metadata, timeout=10))
    assert f.code == grpc.StatusCode.PERMISSION_DENIED and f.reason == "DELEGATION_DENIED"
    admin_user = user_pb2.CreateUserRequest(
        parent=tenant.organization,
        user=user_pb2.User(email="boss@example.test", username="boss"),
        password="correct-horse-42",
        roles=["admin"],
    )
    assert (
        failure(lambda: users.CreateUser(admin_user, metadata=manager.metadata, timeout=30)).reason
        == "DELEGATION_DENIED"
    )
    takeover = user_pb2.UpdateUserRequest(
        user=user_pb2.User(name=tenant.user, email="mine@example.test"), update_mask=FieldMask(paths=["email"])
    )
    assert failure(lambda: users.UpdateUser(takeover, metadata=manager.metadata, timeout=10)).code == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    for call in (
        lambda: users.DeactivateUser(
            user_pb2.DeactivateUserRequest(name=tenant.user), metadata=manager.metadata, timeout=10
        ),
        lambda: users.DeleteUser(user_pb2.DeleteUserRequest(name=tenant.user), metadata=manager.metadata, timeout=10),
    ):
        assert failure(call).reason == "DELEGATION_DENIED"
    # A manager does manage those below: a developer is made and promoted to manager.
    developer = add_user(channels, manager, "developer")
    promoted = pb.AssignRoleRequest(user=developer.user, role=f"{tenant.organization}/roles/manager")
    assert "manager" in roles(channels).AssignRole(promoted, metadata=manager.metadata, timeout=10).user.roles


def test_the_last_admin_can_be_neither_deleted_nor_deactivated(channels: Channels, tenant: Tenant) -> None:
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    for call in (
        lambda: users.DeactivateUser(
            user_pb2.DeactivateUserRequest(name=tenant.user), metadata=tenant.metadata, timeout=10
        ),
        lambda: users.DeleteUser(user_pb2.DeleteUserRequest(name=tenant.user), metadata=tenant.metadata, timeout=10),
    ):
        f = failure(call)
        assert f.code == grpc.StatusCode.FAILED_PRECONDITION and f.reason == "LAST_ADMIN"
    second = add_user(channels, tenant, "admin")
    users.DeactivateUser(user_pb2.DeactivateUserRequest(name=second.user), metadata=tenant.metadata, timeout=10)


def test_admins_leaving_at_once_do_not_deadlock(channels: Channels, tenant: Tenant) -> None:
    """Two other admins deleted at the same moment both go, the first admin staying: each delete holds its
    own user's row, and checking for another admin by locking theirs deadlocked one in five."""
    users = user_pb2_grpc.UserServiceStub(channels.direct("identity"))

    def outcome(method: str, user: str) -> str:
        """ "OK", or the reason the call was refused."""
        request = getattr(user_pb2, f"{method}Request")(name=user)
        try:
            getattr(users, method)(request, metadata=tenant.metadata, timeout=30)
        except grpc.RpcError as exc:
            return decode(exc).reason
        return "OK"

    def delete(user: str) -> str:
        return outcome("DeleteUser", user)

    for _ in range(10):
        pair = [add_user(channels, tenant, "admin").user for _ in range(2)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            assert list(pool.map(delete, pair)) == ["OK", "OK"]

    # A delete and a deactivation of one admin at once: one after the other, neither undone by a deadlock.
    for _ in range(10):
        admin = add_user(channels, tenant, "admin").user
        with ThreadPoolExecutor(max_workers=2) as pool:
            deleted, deactivated = pool.submit(delete, admin), pool.submit(outcome, "DeactivateUser", admin)
            assert deleted.result() == "OK" and deactivated.result() in ("OK", "RESOURCE_NOT_FOUND")


def test_a_role_editor_cannot_give_a_role_more_than_it_holds(channels: Channels, tenant: Tenant) -> None:
    """Else editing a role one holds would be a way to every permission."""
    perms = ["identity.roles.get", "identity.roles.list", "identity.roles.create", "identity.roles.update"]
    perms.append("identity.roles.delete")
    editor_role = create_role(channels, tenant, "editor", perms)
    powerful = create_role(channels, tenant, "auditor", ["identity.audit.list"])
    editor = add_user(channels, tenant, "editor")
    tenant_catalog = sorted(set(catalog.permissions()) - catalog.operator_permissions())
    everything = pb.Role(name=editor_role.name, permissions=tenant_catalog, etag=editor_role.etag)
    for call in (
        lambda: roles(channels).UpdateRole(
            pb.UpdateRoleRequest(role=everything, update_mask=FieldMask(paths=["permissions"])),
            metadata=editor.metadata,
            timeout=10,
        ),
        lambda: create_role(channels, editor, "mine", ["identity.audit.list"]),
        # Taking powers away from a role is within one's own permissions too.
        lambda: roles(channels).DeleteRole(pb.DeleteRoleRequest(name=powerful.name), metadata=editor.metadata),
    ):
        f = failure(call)
        assert f.code == grpc.StatusCode.PERMISSION_DENIED and f.reason == "DELEGATION_DENIED"
    kept = roles(channels).ListRoles(pb.ListRolesRequest(parent=tenant.organization), metadata=tenant.metadata).roles
    assert {r.name: list(r.permissions) for r in kept if not r.predefined} == {
        powerful.name: ["identity.audit.list"],
        editor_role.name: sorted(perms),
    }
    # Within its own permissions the editor does edit.
    narrower = pb.Role(name=editor_role.name, permissions=perms[:2], etag=editor_role.etag)
    mask = FieldMask(paths=["permissions"])
    edited = roles(channels).UpdateRole(pb.UpdateRoleRequest(role=narrower, update_mask=mask), metadata=editor.metadata)
    assert list(edited.role.permissions) == sorted(perms[:2])


def test_a_role_deleted_while_being_assigned_is_held_by_nobody(channels: Channels, tenant: Tenant) -> None:
    users = [add_user(channels, tenant, "viewer") for _ in range(4)]
    for round_ in range(6):
        created = create_role(channels, tenant, f"temp-{round_}", ["projects.projects.get"])
        assign, delete = roles(channels).AssignRole, roles(channels).DeleteRole
        requests: list[tuple[Any, Any]] = [
            (assign, pb.AssignRoleRequest(user=u.user, role=created.name)) for u in users
        ]
        requests.insert(2, (delete, pb.DeleteRoleRequest(name=created.name)))
        with ThreadPoolExecutor(len(requests)) as pool:
            for future in [pool.submit(call, r, metadata=tenant.metadata, timeout=10) for call, r in requests]:
                try:
                    future.result()
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.NOT_FOUND  # assigned after the delete: no such role
        stub = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
        got = [stub.GetUser(user_pb2.GetUserRequest(name=u.user), metadata=tenant.metadata, timeout=10) for u in users]
        held = [g.user.roles for g in got]
        assert all(f"temp-{round_}" not in r for r in held), held


def test_a_role_deleted_while_a_user_is_created_with_it_is_held_by_nobody(channels: Channels) -> None:
    """Else a role created later under the same id would give that user its permissions, unasked."""
    founder = sign_up(channels.direct("identity"))
    stub = user_pb2_grpc.UserServiceStub(channels.direct("identity"))
    for round_ in range(12):
        created = create_role(channels, founder, f"temp-{round_}", ["projects.projects.get"])
        invite = user_pb2.CreateUserRequest(  # no password: no argon2id to spread the two calls apart
            parent=founder.organization,
            user=user_pb2.User(email=f"u{round_}@{founder.slug}.test", username=f"u{round_}"),
            roles=[f"temp-{round_}"],
        )
        with ThreadPoolExecutor(2) as pool:
            made = pool.submit(stub.CreateUser, invite, metadata=founder.metadata, timeout=30)
            pool.submit(roles(channels).DeleteRole, pb.DeleteRoleRequest(name=created.name), metadata=founder.metadata)
        try:
            user = made.result().user
        except grpc.RpcError as exc:  # created after the delete: no such role
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            continue
        now = stub.GetUser(user_pb2.GetUserRequest(name=user.name), metadata=founder.metadata, timeout=10).user
        assert f"temp-{round_}" not in now.roles


def test_a_retried_create_role_returns_the_first_answer(channels: Channels, tenant: Tenant) -> None:
    """The answer was lost; the retry must not be told its own role_id is taken."""
    role = pb.Role(display_name="Auditors", permissions=["identity.audit.list"])
    request = pb.CreateRoleRequest(
        parent=tenant.organization, role_id="auditors", role=role, request_id=str(uuid.uuid4())
    )
    first = roles(channels).CreateRole(request, metadata=tenant.metadata, timeout=10)
    assert roles(channels).CreateRole(request, metadata=tenant.metadata, timeout=10) == first
    # Without the key, or with another, the id is taken; and a refused create keeps no answer under
    # its key: once the id is free, the same request creates.
    for request_id in ("", str(uuid.uuid4())):
        request.request_id = request_id
        f = failure(lambda: roles(channels).CreateRole(request, metadata=tenant.metadata, timeout=10))
        assert f.code == grpc.StatusCode.ALREADY_EXISTS
    roles(channels).DeleteRole(pb.DeleteRoleRequest(name=first.role.name), metadata=tenant.metadata, timeout=10)
    again = roles(channels).CreateRole(request, metadata=tenant.metadata, timeout=10)
    assert again.role.name == first.role.name and again.role.etag != first.role.etag
