"""Service principals: background work acts inside one organization with the few permissions it needs."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from hishamos.identity.v1 import auth_pb2 as pb
from hishamos_identity.keys import KeyStore
from hishamos_identity.models import Organization
from hishamos_identity.settings import IdentitySettings
from hishamos_identity.tokens import credential_holder, sign
from hishamos_kit import api, resources
from hishamos_kit.db import Database
from hishamos_kit.errors import InvalidArgument, NotFound, Violations

# The only identity permissions a service may hold: it looks users and quotas up, never manages them.
IDENTITY_READS = frozenset({"identity.users.get", "identity.users.list", "identity.organizations.get"})


class ServiceTokens:
    def __init__(self, db: Database, keys: KeyStore, settings: IdentitySettings) -> None:
        self._db = db
        self._keys = keys
        self._settings = settings

    async def issue(
        self, request: pb.IssueServiceTokenRequest, metadata: Mapping[str, str]
    ) -> pb.IssueServiceTokenResponse:
        service = credential_holder(
            metadata, "x-service-credential", self._settings.service_credentials, "SERVICE_CREDENTIAL_INVALID"
        )
        v = Violations()
        try:
            (organization_id,) = resources.ORGANIZATION.parse(request.organization, "organization")
        except InvalidArgument:  # reported with the other violations
            v.add("organization", "must be `organizations/{organization}`")
            organization_id = uuid.UUID(int=0)
        catalog = set(api.permissions())
        v.check(bool(request.permissions), "permissions", "must name at least one permission")
        for i, permission in enumerate(request.permissions):
            if permission not in catalog or (permission.startswith("identity.") and permission not in IDENTITY_READS):
                v.add(f"permissions[{i}]", f"`{permission}` cannot be granted to a service")
        v.raise_if_any()
        async with self._db.tenant(organization_id) as session:
            org = await session.get(Organization, organization_id)
            if org is None or org.is_deleted or org.state != "active":
                raise NotFound(request.organization)
        lifetime = self._settings.service_token_seconds
        permissions = sorted(set(request.permissions))
        token = await sign(self._keys, self._settings, f"services/{service}", organization_id, permissions, lifetime)
        return pb.IssueServiceTokenResponse(access_token=token, expires_in=lifetime)
