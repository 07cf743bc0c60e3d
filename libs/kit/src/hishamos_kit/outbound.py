"""Calls to other services: a service's own short-lived tokens, and the metadata every call carries."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

import grpc

from hishamos.identity.v1 import auth_pb2, auth_pb2_grpc
from hishamos_kit.errors import Unavailable
from hishamos_kit.logs import request_id_var

Metadata = tuple[tuple[str, str], ...]


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
                    request, metadata=(("x-service-credential", self._credential),), timeout=5
                )
            except grpc.aio.AioRpcError as exc:
                raise Unavailable("identity is unreachable; retry shortly", "IDENTITY_UNAVAILABLE") from exc
            token, renew_at = reply.access_token, time.monotonic() + max(reply.expires_in - 60, 1)
            self._tokens[organization_id] = (token, renew_at)
        return (("authorization", f"Bearer {token}"), ("x-request-id", request_id_var.get()))
