"""Calls to other services: a service's own short-lived tokens, and the metadata every call carries."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import grpc

from hishamos.identity.v1 import auth_pb2, auth_pb2_grpc
from hishamos_kit.errors import PermissionDenied, Unavailable
from hishamos_kit.logs import request_id_var

Metadata = tuple[tuple[str, str], ...]
R = TypeVar("R")
MOST_SECONDS = 5.0  # the longest any call to another service may take

# When the call being served must be answered (time.monotonic()), if its caller set a deadline.
inbound_deadline: ContextVar[float | None] = ContextVar("inbound_deadline", default=None)


def channel(target: str) -> grpc.aio.Channel:
    """A channel to another service that spreads its calls over every address the name resolves to (in
    Kubernetes, a headless Service's ready pods), not only the first."""
    return grpc.aio.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")])


def traced(*pairs: tuple[str, str]) -> Metadata:
    """Metadata for a call to another service: `pairs` and the request id being served, if any."""
    request_id = request_id_var.get()
    return (*pairs, ("x-request-id", request_id)) if request_id else pairs


def timeout() -> float:
    """Seconds an outbound call may take: what is left of the inbound call's deadline, at most
    MOST_SECONDS, so a call on behalf of a caller who has given up stops too."""
    deadline = inbound_deadline.get()
    if deadline is None:
        return MOST_SECONDS
    return max(min(MOST_SECONDS, deadline - time.monotonic()), 0.001)


class ServiceTokens:
    """Tokens from identity's IssueServiceToken for this service, one per organization, reused
    until a minute before they expire. No user's token is kept or forwarded."""

    def __init__(self, channel: grpc.aio.Channel, credential: str, permissions: Sequence[str]) -> None:
        self._auth = auth_pb2_grpc.AuthServiceStub(channel)
        self._credential = credential
        self._permissions = list(permissions)
        self._tokens: dict[uuid.UUID, tuple[str, float]] = {}

    async def metadata(self, organization_id: uuid.UUID) -> Metadata:
        """Credentials and the current request id, for a call made on behalf of `organization_id`."""
        token, renew_at = self._tokens.get(organization_id, ("", 0.0))
        if time.monotonic() >= renew_at:
            request = auth_pb2.IssueServiceTokenRequest(
                organization=f"organizations/{organization_id}", permissions=self._permissions
            )
            try:
                reply = await self._auth.IssueServiceToken(
                    request, metadata=traced(("x-service-credential", self._credential)), timeout=timeout()
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:  # identity acts for no suspended or closed organization
                    raise PermissionDenied(
                        "the organization is suspended or closed; ask a platform operator", "ORGANIZATION_SUSPENDED"
                    ) from None
                raise Unavailable("identity is unreachable; retry shortly", "IDENTITY_UNAVAILABLE") from exc
            token, renew_at = reply.access_token, time.monotonic() + max(reply.expires_in - 60, 1)
            self._tokens[organization_id] = (token, renew_at)
        return traced(("authorization", f"Bearer {token}"))

    async def call(self, organization_id: uuid.UUID, method: Callable[..., Awaitable[R]], request: Any) -> R:
        """`method(request)` on behalf of `organization_id`. A token that identity no longer accepts
        (its signing key was retired early, after a leak) is dropped, and a new one asked for, once."""
        try:
            return await method(request, metadata=await self.metadata(organization_id), timeout=timeout())
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                raise
        self._tokens.pop(organization_id, None)
        return await method(request, metadata=await self.metadata(organization_id), timeout=timeout())

    async def find(
        self, organization_id: uuid.UUID, method: Callable[..., Awaitable[R]], request: Any, service: str
    ) -> R | None:
        """`method(request)`, a Get on `service` on behalf of `organization_id`: None when it answers
        NOT_FOUND, UNAVAILABLE for the caller when it cannot answer."""
        try:
            return await self.call(organization_id, method, request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise Unavailable(f"{service} is unreachable; retry shortly", f"{service.upper()}_UNAVAILABLE") from exc
