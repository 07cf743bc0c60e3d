"""Identity, as projects asks it: which users exist, and how many projects an organization may have."""

from __future__ import annotations

import uuid

import grpc

from hishamos.identity.v1 import organization_pb2, organization_pb2_grpc, user_pb2, user_pb2_grpc
from hishamos_kit import outbound
from hishamos_kit.errors import Unavailable, Violations
from hishamos_kit.outbound import ServiceTokens
from hishamos_projects.common import USER

PERMISSIONS = ("identity.users.get", "identity.organizations.get")


_current: Directory | None = None


def install(directory: Directory) -> None:
    global _current
    _current = directory


def current() -> Directory:
    """The process's Directory, installed by `build` at start-up."""
    assert _current is not None, "hishamos_projects.directory.install() runs at start-up"
    return _current


class Directory:
    def __init__(self, identity_target: str, credential: str) -> None:
        self._channel = outbound.channel(identity_target)
        self._tokens = ServiceTokens(self._channel, credential, PERMISSIONS)
        self._users = user_pb2_grpc.UserServiceStub(self._channel)
        self._orgs = organization_pb2_grpc.OrganizationServiceStub(self._channel)

    async def check_user(self, violations: Violations, field: str, name: str) -> None:
        """A user reference must name a live, active user of the organization: asked every time, since a
        user deactivated a moment ago must not join a team or manage a project (no process remembers a yes)."""
        if not name or field in violations.items:
            return
        organization_id, _ = USER.parse(name, field)
        request = user_pb2.GetUserRequest(name=name)
        found = await self._tokens.find(organization_id, self._users.GetUser, request, "identity")
        user = found.user if found else None
        if user is None or user.HasField("delete_time") or user.state != user_pb2.User.STATE_ACTIVE:
            violations.add(field, "names no active user of this organization")

    async def max_projects(self, organization_id: uuid.UUID) -> int:
        name = f"organizations/{organization_id}"
        try:
            request = organization_pb2.GetOrganizationRequest(name=name)
            reply = await self._tokens.call(organization_id, self._orgs.GetOrganization, request)
        except grpc.aio.AioRpcError as exc:
            raise Unavailable("identity is unreachable; retry shortly", "IDENTITY_UNAVAILABLE") from exc
        return int(reply.organization.max_projects)

    async def close(self) -> None:
        await self._channel.close()
