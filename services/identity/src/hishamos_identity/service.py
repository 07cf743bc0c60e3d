"""The identity gRPC API: thin handlers over accounts, sessions, users, roles, organizations and audit."""

from __future__ import annotations

import json

from cryptography.exceptions import InvalidTag
from grpc.aio import ServicerContext as Context

from hishamos.identity.v1 import (
    api_key_pb2,
    api_key_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    organization_pb2,
    organization_pb2_grpc,
    role_pb2,
    role_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)
from hishamos_identity import audit, organizations
from hishamos_identity.accounts import Accounts
from hishamos_identity.api_keys import ApiKeys
from hishamos_identity.keys import KeyStore
from hishamos_identity.mail import KIND as MAIL
from hishamos_identity.mail import Mailer
from hishamos_identity.models import Job
from hishamos_identity.operators import OperatorTokens
from hishamos_identity.passwords import Passwords
from hishamos_identity.recovery import RESET_JOB, Recovery
from hishamos_identity.roles import Roles
from hishamos_identity.service_tokens import ServiceTokens
from hishamos_identity.sessions import Sessions
from hishamos_identity.settings import IdentitySettings
from hishamos_identity.tokens import TokenIssuer
from hishamos_identity.users import Users
from hishamos_kit import api
from hishamos_kit.auth import current_principal
from hishamos_kit.crypto import Sealer, load_key
from hishamos_kit.db import Database
from hishamos_kit.jobs import Worker
from hishamos_kit.listing import sorted_page
from hishamos_kit.server import Background, Service


def _metadata(context: Context) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


class AuthService(auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        accounts: Accounts,
        issuer: TokenIssuer,
        keys: KeyStore,
        recovery: Recovery,
        services: ServiceTokens,
        operators: OperatorTokens,
    ) -> None:
        self.accounts = accounts
        self.issuer = issuer
        self.keys = keys
        self.recovery = recovery
        self.services = services
        self.operators = operators

    async def IssueServiceToken(
        self, request: auth_pb2.IssueServiceTokenRequest, context: Context
    ) -> auth_pb2.IssueServiceTokenResponse:
        return await self.services.issue(request, _metadata(context))

    async def IssueOperatorToken(
        self, request: auth_pb2.IssueOperatorTokenRequest, context: Context
    ) -> auth_pb2.IssueOperatorTokenResponse:
        return await self.operators.issue(_metadata(context))

    async def RequestPasswordReset(
        self, request: auth_pb2.RequestPasswordResetRequest, context: Context
    ) -> auth_pb2.RequestPasswordResetResponse:
        await self.recovery.request_reset(request)
        return auth_pb2.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: auth_pb2.ResetPasswordRequest, context: Context
    ) -> auth_pb2.ResetPasswordResponse:
        await self.recovery.reset(request)
        return auth_pb2.ResetPasswordResponse()

    async def VerifyEmail(self, request: auth_pb2.VerifyEmailRequest, context: Context) -> auth_pb2.VerifyEmailResponse:
        return auth_pb2.VerifyEmailResponse(user=await self.recovery.verify(request))

    async def SignUp(self, request: auth_pb2.SignUpRequest, context: Context) -> auth_pb2.SignUpResponse:
        return await self.accounts.sign_up(request)

    async def Login(self, request: auth_pb2.LoginRequest, context: Context) -> auth_pb2.LoginResponse:
        return await self.accounts.login(request)

    async def RefreshToken(
        self, request: auth_pb2.RefreshTokenRequest, context: Context
    ) -> auth_pb2.RefreshTokenResponse:
        return auth_pb2.RefreshTokenResponse(tokens=await self.issuer.refresh(request.refresh_token))

    async def Logout(self, request: auth_pb2.LogoutRequest, context: Context) -> auth_pb2.LogoutResponse:
        await self.issuer.logout(request.refresh_token)
        return auth_pb2.LogoutResponse()

    async def RotateSigningKey(
        self, request: auth_pb2.RotateSigningKeyRequest, context: Context
    ) -> auth_pb2.RotateSigningKeyResponse:
        active, published = await self.keys.rotate(current_principal().subject, request.retire_previous)
        return auth_pb2.RotateSigningKeyResponse(active_kid=active, published_kids=published)

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

    async def SuspendOrganization(
        self, request: organization_pb2.SuspendOrganizationRequest, context: Context
    ) -> organization_pb2.SuspendOrganizationResponse:
        org = await organizations.set_state(
            self.db, current_principal(), request.name, request.reason, request.etag, "suspended"
        )
        return organization_pb2.SuspendOrganizationResponse(organization=org)

    async def ReactivateOrganization(
        self, request: organization_pb2.ReactivateOrganizationRequest, context: Context
    ) -> organization_pb2.ReactivateOrganizationResponse:
        org = await organizations.set_state(
            self.db, current_principal(), request.name, request.reason, request.etag, "active"
        )
        return organization_pb2.ReactivateOrganizationResponse(organization=org)

    async def SetOrganizationQuotas(
        self, request: organization_pb2.SetOrganizationQuotasRequest, context: Context
    ) -> organization_pb2.SetOrganizationQuotasResponse:
        org = await organizations.set_quotas(self.db, current_principal(), request)
        return organization_pb2.SetOrganizationQuotasResponse(organization=org)


class UserService(user_pb2_grpc.UserServiceServicer):
    def __init__(self, users: Users, recovery: Recovery) -> None:
        self.users = users
        self.recovery = recovery

    async def SendEmailVerification(
        self, request: user_pb2.SendEmailVerificationRequest, context: Context
    ) -> user_pb2.SendEmailVerificationResponse:
        await self.recovery.send_verification(current_principal(), request.name)
        return user_pb2.SendEmailVerificationResponse()

    async def CreateUser(self, request: user_pb2.CreateUserRequest, context: Context) -> user_pb2.CreateUserResponse:
        return user_pb2.CreateUserResponse(user=await self.users.create_user(current_principal(), request))

    async def GetUser(self, request: user_pb2.GetUserRequest, context: Context) -> user_pb2.GetUserResponse:
        return user_pb2.GetUserResponse(user=await self.users.get(current_principal(), request.name))

    async def ListUsers(self, request: user_pb2.ListUsersRequest, context: Context) -> user_pb2.ListUsersResponse:
        found, token = await self.users.list(current_principal(), request)
        return user_pb2.ListUsersResponse(users=found, next_page_token=token)

    async def UpdateUser(self, request: user_pb2.UpdateUserRequest, context: Context) -> user_pb2.UpdateUserResponse:
        return user_pb2.UpdateUserResponse(user=await self.users.update_user(current_principal(), request))

    async def UpdateProfile(
        self, request: user_pb2.UpdateProfileRequest, context: Context
    ) -> user_pb2.UpdateProfileResponse:
        return user_pb2.UpdateProfileResponse(user=await self.users.update_profile(current_principal(), request))

    async def DeleteUser(self, request: user_pb2.DeleteUserRequest, context: Context) -> user_pb2.DeleteUserResponse:
        return user_pb2.DeleteUserResponse(
            user=await self.users.delete(current_principal(), request.name, request.etag)
        )

    async def UndeleteUser(
        self, request: user_pb2.UndeleteUserRequest, context: Context
    ) -> user_pb2.UndeleteUserResponse:
        user = await self.users.undelete(current_principal(), request.name, request.etag)
        return user_pb2.UndeleteUserResponse(user=user)

    async def DeactivateUser(
        self, request: user_pb2.DeactivateUserRequest, context: Context
    ) -> user_pb2.DeactivateUserResponse:
        user = await self.users.set_state(current_principal(), request.name, request.etag, "deactivated")
        return user_pb2.DeactivateUserResponse(user=user)

    async def ActivateUser(
        self, request: user_pb2.ActivateUserRequest, context: Context
    ) -> user_pb2.ActivateUserResponse:
        user = await self.users.set_state(current_principal(), request.name, request.etag, "active")
        return user_pb2.ActivateUserResponse(user=user)

    async def UnlockUser(self, request: user_pb2.UnlockUserRequest, context: Context) -> user_pb2.UnlockUserResponse:
        return user_pb2.UnlockUserResponse(user=await self.users.unlock(current_principal(), request.name))

    async def EnrollTotp(self, request: user_pb2.EnrollTotpRequest, context: Context) -> user_pb2.EnrollTotpResponse:
        return await self.users.enroll_totp(current_principal(), request.name)

    async def ConfirmTotp(self, request: user_pb2.ConfirmTotpRequest, context: Context) -> user_pb2.ConfirmTotpResponse:
        codes = await self.users.confirm_totp(current_principal(), request)
        return user_pb2.ConfirmTotpResponse(recovery_codes=codes)

    async def DisableTotp(self, request: user_pb2.DisableTotpRequest, context: Context) -> user_pb2.DisableTotpResponse:
        await self.users.disable_totp(current_principal(), request)
        return user_pb2.DisableTotpResponse()

    async def RegenerateRecoveryCodes(
        self, request: user_pb2.RegenerateRecoveryCodesRequest, context: Context
    ) -> user_pb2.RegenerateRecoveryCodesResponse:
        codes = await self.users.regenerate_recovery_codes(current_principal(), request)
        return user_pb2.RegenerateRecoveryCodesResponse(recovery_codes=codes)

    async def ChangePassword(
        self, request: user_pb2.ChangePasswordRequest, context: Context
    ) -> user_pb2.ChangePasswordResponse:
        await self.users.change_password(current_principal(), request)
        return user_pb2.ChangePasswordResponse()


class RoleService(role_pb2_grpc.RoleServiceServicer):
    def __init__(self, roles: Roles) -> None:
        self.roles = roles

    async def ListPermissions(
        self, request: role_pb2.ListPermissionsRequest, context: Context
    ) -> role_pb2.ListPermissionsResponse:
        page = sorted_page(api.permissions(), "permissions", page_size=request.page_size, page_token=request.page_token)
        return role_pb2.ListPermissionsResponse(permissions=page.rows, next_page_token=page.next_page_token)

    async def GetRole(self, request: role_pb2.GetRoleRequest, context: Context) -> role_pb2.GetRoleResponse:
        return role_pb2.GetRoleResponse(role=await self.roles.get(current_principal(), request.name))

    async def ListRoles(self, request: role_pb2.ListRolesRequest, context: Context) -> role_pb2.ListRolesResponse:
        return await self.roles.list(current_principal(), request)

    async def CreateRole(self, request: role_pb2.CreateRoleRequest, context: Context) -> role_pb2.CreateRoleResponse:
        return await self.roles.create(current_principal(), request)

    async def UpdateRole(self, request: role_pb2.UpdateRoleRequest, context: Context) -> role_pb2.UpdateRoleResponse:
        return role_pb2.UpdateRoleResponse(
            role=await self.roles.update(current_principal(), request.role, request.update_mask)
        )

    async def DeleteRole(self, request: role_pb2.DeleteRoleRequest, context: Context) -> role_pb2.DeleteRoleResponse:
        await self.roles.delete(current_principal(), request.name, request.etag)
        return role_pb2.DeleteRoleResponse()

    async def AssignRole(self, request: role_pb2.AssignRoleRequest, context: Context) -> role_pb2.AssignRoleResponse:
        user = await self.roles.assign(current_principal(), request.user, request.role, grant=True)
        return role_pb2.AssignRoleResponse(user=user)

    async def UnassignRole(
        self, request: role_pb2.UnassignRoleRequest, context: Context
    ) -> role_pb2.UnassignRoleResponse:
        user = await self.roles.assign(current_principal(), request.user, request.role, grant=False)
        return role_pb2.UnassignRoleResponse(user=user)


class SessionService(session_pb2_grpc.SessionServiceServicer):
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    async def ListSessions(
        self, request: session_pb2.ListSessionsRequest, context: Context
    ) -> session_pb2.ListSessionsResponse:
        return await self.sessions.list(current_principal(), request)

    async def RevokeSession(
        self, request: session_pb2.RevokeSessionRequest, context: Context
    ) -> session_pb2.RevokeSessionResponse:
        await self.sessions.revoke(current_principal(), request.name)
        return session_pb2.RevokeSessionResponse()


class AuditService(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: Context
    ) -> audit_pb2.ListAuditEventsResponse:
        return await audit.list_events(self.db, current_principal(), request)


class ApiKeyService(api_key_pb2_grpc.ApiKeyServiceServicer):
    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys

    async def CreateApiKey(
        self, request: api_key_pb2.CreateApiKeyRequest, context: Context
    ) -> api_key_pb2.CreateApiKeyResponse:
        return await self.keys.create(current_principal(), request.parent, request.api_key, request.request_id)

    async def GetApiKey(self, request: api_key_pb2.GetApiKeyRequest, context: Context) -> api_key_pb2.GetApiKeyResponse:
        return api_key_pb2.GetApiKeyResponse(api_key=await self.keys.get(current_principal(), request.name))

    async def ListApiKeys(
        self, request: api_key_pb2.ListApiKeysRequest, context: Context
    ) -> api_key_pb2.ListApiKeysResponse:
        return await self.keys.list(current_principal(), request)

    async def UpdateApiKey(
        self, request: api_key_pb2.UpdateApiKeyRequest, context: Context
    ) -> api_key_pb2.UpdateApiKeyResponse:
        key = await self.keys.update(current_principal(), request.api_key, request.update_mask)
        return api_key_pb2.UpdateApiKeyResponse(api_key=key)

    async def RevokeApiKey(
        self, request: api_key_pb2.RevokeApiKeyRequest, context: Context
    ) -> api_key_pb2.RevokeApiKeyResponse:
        return api_key_pb2.RevokeApiKeyResponse(
            api_key=await self.keys.revoke(current_principal(), request.name, request.etag)
        )

    async def AuthenticateApiKey(
        self, request: api_key_pb2.AuthenticateApiKeyRequest, context: Context
    ) -> api_key_pb2.AuthenticateApiKeyResponse:
        return await self.keys.authenticate(request.key, request.reserve_calls)


class Identity:
    """Builds identity's servicers and the key store its own token verification uses."""

    def __init__(self, settings: IdentitySettings) -> None:
        self.settings = settings
        self.sealer = Sealer(load_key(settings.key_encryption_key, "HISHAMOS_IDENTITY_KEY_ENCRYPTION_KEY"))
        self.key_store: KeyStore | None = None

    def keys(self, db: Database) -> KeyStore:
        s = self.settings
        self.key_store = KeyStore(db, self.sealer, s.access_token_seconds + 60, s.keys_refresh_seconds)
        return self.key_store

    async def build(self, db: Database) -> list[Service | Background]:
        assert self.key_store is not None
        try:
            await self.key_store.ensure_active()
        except InvalidTag:
            raise SystemExit(
                "HISHAMOS_IDENTITY_KEY_ENCRYPTION_KEY does not open the signing keys in the database: set the key "
                "they were sealed with"
            ) from None
        s = self.settings
        passwords = Passwords(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism, s.argon2_threads)
        issuer = TokenIssuer(db, self.key_store, s)
        mailer = Mailer(s, self.sealer)
        recovery = Recovery(db, passwords, mailer, s)
        v1 = "hishamos.identity.v1"
        return [
            Service(
                f"{v1}.AuthService",
                AuthService(
                    Accounts(db, passwords, issuer, self.sealer),
                    issuer,
                    self.key_store,
                    recovery,
                    ServiceTokens(db, self.key_store, s),
                    OperatorTokens(self.key_store, s),
                ),
                auth_pb2_grpc.add_AuthServiceServicer_to_server,
            ),
            Service(
                f"{v1}.OrganizationService",
                OrganizationService(db),
                organization_pb2_grpc.add_OrganizationServiceServicer_to_server,
            ),
            Service(
                f"{v1}.UserService",
                UserService(Users(db, passwords, self.sealer, recovery), recovery),
                user_pb2_grpc.add_UserServiceServicer_to_server,
            ),
            Service(f"{v1}.RoleService", RoleService(Roles(db)), role_pb2_grpc.add_RoleServiceServicer_to_server),
            Service(f"{v1}.AuditService", AuditService(db), audit_pb2_grpc.add_AuditServiceServicer_to_server),
            Service(
                f"{v1}.SessionService",
                SessionService(Sessions(db)),
                session_pb2_grpc.add_SessionServiceServicer_to_server,
            ),
            Service(
                f"{v1}.ApiKeyService", ApiKeyService(ApiKeys(db)), api_key_pb2_grpc.add_ApiKeyServiceServicer_to_server
            ),
            Background("jobs", Worker(db, Job, {MAIL: mailer.deliver, RESET_JOB: recovery.send_reset}).run),
        ]
