"""The identity gRPC API: thin handlers over accounts, organizations and keys."""

from __future__ import annotations

import json

from grpc.aio import ServicerContext as Context

from hishamos.identity.v1 import auth_pb2, auth_pb2_grpc, organization_pb2, organization_pb2_grpc
from hishamos_identity import organizations
from hishamos_identity.accounts import Accounts
from hishamos_identity.keys import KeyStore
from hishamos_identity.passwords import Passwords
from hishamos_identity.settings import IdentitySettings
from hishamos_identity.tokens import TokenIssuer
from hishamos_kit.auth import current_principal
from hishamos_kit.crypto import Sealer, load_key
from hishamos_kit.db import Database
from hishamos_kit.server import Service

AUTH = "hishamos.identity.v1.AuthService"


class AuthService(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, accounts: Accounts, keys: KeyStore) -> None:
        self.accounts = accounts
        self.keys = keys

    async def SignUp(self, request: auth_pb2.SignUpRequest, context: Context) -> auth_pb2.SignUpResponse:
        return await self.accounts.sign_up(request)

    async def Login(self, request: auth_pb2.LoginRequest, context: Context) -> auth_pb2.LoginResponse:
        return await self.accounts.login(request)

    async def GetJwks(self, request: auth_pb2.GetJwksRequest, context: Context) -> auth_pb2.GetJwksResponse:
        document = await self.keys.jwks_json()
        return auth_pb2.GetJwksResponse(
            jwks_json=document, keys=[auth_pb2.Jwk(**k) for k in json.loads(document)["keys"]]
        )


class OrganizationService(organization_pb2_grpc.OrganizationServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def GetOrganization(
        self, request: organization_pb2.GetOrganizationRequest, context: Context
    ) -> organization_pb2.GetOrganizationResponse:
        org = await organizations.get(self.db, current_principal(), request.name)
        return organization_pb2.GetOrganizationResponse(organization=org)

    async def UpdateOrganization(
        self, request: organization_pb2.UpdateOrganizationRequest, context: Context
    ) -> organization_pb2.UpdateOrganizationResponse:
        org = await organizations.update(self.db, current_principal(), request.organization, request.update_mask)
        return organization_pb2.UpdateOrganizationResponse(organization=org)


class Identity:
    """Builds identity's servicers and the key store its own token verification uses."""

    def __init__(self, settings: IdentitySettings) -> None:
        self.settings = settings
        self.sealer = Sealer(load_key(settings.key_encryption_key, "HISHAMOS_IDENTITY_KEY_ENCRYPTION_KEY"))
        self.key_store: KeyStore | None = None

    def keys(self, db: Database) -> KeyStore:
        self.key_store = KeyStore(db, self.sealer)
        return self.key_store

    async def build(self, db: Database) -> list[Service]:
        assert self.key_store is not None
        await self.key_store.ensure_active()
        s = self.settings
        passwords = Passwords(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism)
        accounts = Accounts(db, passwords, TokenIssuer(self.key_store, s))
        return [
            Service(
                AUTH,
                AuthService(accounts, self.key_store),
                auth_pb2_grpc.add_AuthServiceServicer_to_server,
            ),
            Service(
                "hishamos.identity.v1.OrganizationService",
                OrganizationService(db),
                organization_pb2_grpc.add_OrganizationServiceServicer_to_server,
            ),
        ]
