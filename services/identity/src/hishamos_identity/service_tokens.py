"""Service principals: background work acts inside one organization with the few permissions it needs."""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Mapping

import jwt

from hishamos.identity.v1 import auth_pb2 as pb
from hishamos_identity.keys import KeyStore
from hishamos_identity.models import Organization
from hishamos_identity.settings import IdentitySettings
from hishamos_kit import api, resources
from hishamos_kit.db import Database
from hishamos_kit.errors import InvalidArgument, NotFound, Unauthenticated, Violations

# The only identity permissions a service may hold: it looks users and quotas up, never manages them.
IDENTITY_READS = frozenset({"identity.users.get", "identity.users.list", "identity.organizations.get"})


class ServiceTokens:
    def __init__(self, db: Database, keys: KeyStore, settings: IdentitySettings) -> None:
        self._db = db
        self._keys = keys
        self._settings = settings

    def _service(self, metadata: Mapping[str, str]) -> str:
        name, _, secret = metadata.get("x-service-credential", "").partition(":")
        expected = self._settings.service_credentials.get(name, "")
        if not expected or not hmac.compare_digest(expected.encode(), secret.encode()):
            raise Unauthenticated(
                "send a valid `x-service-credential: <service>:<secret>`", "SERVICE_CREDENTIAL_INVALID"
            )
        return name

    async def issue(
        self, request: pb.IssueServiceTokenRequest, metadata: Mapping[str, str]
    ) -> pb.IssueServiceTokenResponse:
        service = self._service(metadata)
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
        kid, private_key = await self._keys.signing_key()
        now = int(time.time())
        lifetime = self._settings.service_token_seconds
        claims = {
            "iss": self._settings.jwt_issuer,
            "aud": self._settings.jwt_audience,
            "sub": f"services/{service}",
            "org": str(organization_id),
            "roles": [],
            "perms": sorted(set(request.permissions)),
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, private_key, algorithm="EdDSA", headers={"kid": kid})
        return pb.IssueServiceTokenResponse(access_token=token, expires_in=lifetime)
