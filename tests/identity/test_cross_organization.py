"""No identity RPC reaches into another organization: its names are NOT_FOUND and nothing changes."""

from __future__ import annotations

import grpc

from hishamos.identity.v1 import (
    api_key_pb2,
    api_key_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    role_pb2,
    role_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)
from tests.conftest import Channels, Tenant
from tests.errors import failure


def test_identity_rpcs_do_not_cross_organizations(channels: Channels, tenant: Tenant, other_tenant: Tenant) -> None:
    identity = channels.direct("identity")
    roles, keys = role_pb2_grpc.RoleServiceStub(identity), api_key_pb2_grpc.ApiKeyServiceStub(identity)
    sessions, users = session_pb2_grpc.SessionServiceStub(identity), user_pb2_grpc.UserServiceStub(identity)
    audit = audit_pb2_grpc.AuditServiceStub(identity)
    their_role = roles.CreateRole(
        role_pb2.CreateRoleRequest(
            parent=other_tenant.organization,
            role_id="qa",
            role=role_pb2.Role(display_name="QA", permissions=["projects.projects.list"]),
        ),
        metadata=other_tenant.metadata,
        timeout=10,
    ).role
    their_key = keys.CreateApiKey(
        api_key_pb2.CreateApiKeyRequest(
            parent=other_tenant.organization,
            api_key=api_key_pb2.ApiKey(display_name="k", scopes=["projects.projects.list"]),
        ),
        metadata=other_tenant.metadata,
        timeout=10,
    ).api_key
    their_sessions = sessions.ListSessions(
        session_pb2.ListSessionsRequest(parent=other_tenant.user), metadata=other_tenant.metadata, timeout=10
    ).sessions
    renamed = role_pb2.Role(name=their_role.name, display_name="Hijacked")
    attempts = {
        "GetRole": lambda: roles.GetRole(
            role_pb2.GetRoleRequest(name=their_role.name), metadata=tenant.metadata, timeout=10
        ),
        "UpdateRole": lambda: roles.UpdateRole(
            role_pb2.UpdateRoleRequest(role=renamed), metadata=tenant.metadata, timeout=10
        ),
        "DeleteRole": lambda: roles.DeleteRole(
            role_pb2.DeleteRoleRequest(name=their_role.name), metadata=tenant.metadata, timeout=10
        ),
        "ListRoles": lambda: roles.ListRoles(
            role_pb2.ListRolesRequest(parent=other_tenant.organization), metadata=tenant.metadata, timeout=10
        ),
        "GetApiKey": lambda: keys.GetApiKey(
            api_key_pb2.GetApiKeyRequest(name=their_key.name), metadata=tenant.metadata, timeout=10
        ),
        "ListApiKeys": lambda: keys.ListApiKeys(
            api_key_pb2.ListApiKeysRequest(parent=other_tenant.organization), metadata=tenant.metadata, timeout=10
        ),
        "ListSessions": lambda: sessions.ListSessions(
            session_pb2.ListSessionsRequest(parent=other_tenant.user), metadata=tenant.metadata, timeout=10
        ),
        "RevokeSession": lambda: sessions.RevokeSession(
            session_pb2.RevokeSessionRequest(name=their_sessions[0].name), metadata=tenant.metadata, timeout=10
        ),
        "DeactivateUser": lambda: users.DeactivateUser(
            user_pb2.DeactivateUserRequest(name=other_tenant.user), metadata=tenant.metadata, timeout=10
        ),
        "ListAuditEvents": lambda: audit.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(parent=other_tenant.organization), metadata=tenant.metadata, timeout=10
        ),
    }
    for method, attempt in attempts.items():
        assert failure(attempt).code == grpc.StatusCode.NOT_FOUND, method
    assert (
        roles.GetRole(role_pb2.GetRoleRequest(name=their_role.name), metadata=other_tenant.metadata, timeout=10).role
        == their_role
    )
    assert (
        keys.GetApiKey(
            api_key_pb2.GetApiKeyRequest(name=their_key.name), metadata=other_tenant.metadata, timeout=10
        ).api_key.revoke_time.seconds
        == 0
    )
    still = sessions.ListSessions(
        session_pb2.ListSessionsRequest(parent=other_tenant.user), metadata=other_tenant.metadata, timeout=10
    )
    assert [s.name for s in still.sessions] == [s.name for s in their_sessions]
    them = users.GetUser(
        user_pb2.GetUserRequest(name=other_tenant.user), metadata=other_tenant.metadata, timeout=10
    ).user
    assert them.state == user_pb2.User.STATE_ACTIVE
