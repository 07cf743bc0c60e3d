"""Signing up an organization and signing people in."""

from __future__ import annotations

import contextlib
import uuid
from typing import NoReturn

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.identity.v1 import auth_pb2 as pb
from hishamos_identity import audit, organizations, signin, totp, users
from hishamos_identity.models import IdempotencyKey, Organization, User
from hishamos_identity.passwords import Passwords, check_strength
from hishamos_identity.tokens import TokenIssuer
from hishamos_kit import resources, validate
from hishamos_kit.crypto import Sealer
from hishamos_kit.db import Database, violated_constraint
from hishamos_kit.errors import AlreadyExists, InvalidArgument, PermissionDenied, Unauthenticated, Violations
from hishamos_kit.resources import ORGANIZATION

# Sign-up ids derive from the request id, so a retried sign-up lands in the same organization.
SIGNUP_NAMESPACE = uuid.UUID("0b8f5f1e-3c57-4d0b-9a34-5a3b1c1f7e21")
UNIQUE_FIELDS = {
    "uq_organizations_slug": "organization_slug",
    "uq_users_organization_id_email": "email",
    "uq_users_organization_id_username": "username",
}
BAD_CREDENTIALS = "wrong organization, login or password"
MAX_FAILURES = signin.MAX_FAILURES


def _check_signup(request: pb.SignUpRequest) -> Violations:
    v = Violations()
    validate.slug(v, "organization_slug", request.organization_slug, min_length=3)
    validate.text(v, "organization_display_name", request.organization_display_name, required=True)
    validate.email(v, "email", request.email, required=True)
    users.check_username(v, "username", request.username)
    check_strength(v, "password", request.password)
    validate.text(v, "full_name", request.full_name)
    try:
        resources.request_key(request.request_id)
    except InvalidArgument:
        v.add("request_id", "must be a UUID")
    return v


class Accounts:
    def __init__(self, db: Database, passwords: Passwords, issuer: TokenIssuer, sealer: Sealer) -> None:
        self.db = db
        self.passwords = passwords
        self.issuer = issuer
        self.sealer = sealer

    async def sign_up(self, request: pb.SignUpRequest) -> pb.SignUpResponse:
        _check_signup(request).raise_if_any()
        password_hash = await self.passwords.hash(request.password)
        # A retry derives the same organization, so it finds its first answer; the same request_id with
        # another slug or email derives another one, never that answer (another tenant's).
        signed_up = (
            f"{resources.request_key(request.request_id)}\0{request.organization_slug}\0{request.email.strip().lower()}"
        )
        organization_id = uuid.uuid5(SIGNUP_NAMESPACE, signed_up) if request.request_id else uuid.uuid4()

        async def create(session: AsyncSession) -> pb.SignUpResponse:
            org = Organization(
                id=organization_id,
                slug=request.organization_slug,
                display_name=request.organization_display_name.strip(),
            )
            user = User(
                organization_id=organization_id,
                email=request.email.strip().lower(),
                username=request.username,
                full_name=request.full_name.strip(),
                password_hash=password_hash,
                roles=["admin"],
            )
            session.add(org)
            await self._flush(session)
            session.add(user)
            await self._flush(session)
            audit.record(
                session, organization_id, "organization.created", users.user_name(user), ORGANIZATION.format(org.id)
            )
            return pb.SignUpResponse(
                organization=organizations.to_message(org),
                user=users.to_message(user),
                tokens=await self.issuer.pair(session, user),
            )

        def without_tokens(response: pb.SignUpResponse) -> pb.SignUpResponse:
            kept = pb.SignUpResponse()
            kept.CopyFrom(response)
            kept.ClearField("tokens")
            return kept

        async with self.db.tenant(organization_id) as session:
            response = await resources.once(
                session,
                IdempotencyKey,
                organization_id,
                "SignUp",
                request.request_id,
                pb.SignUpResponse,
                lambda: create(session),
                stored=without_tokens,
            )
        if response.HasField("tokens"):
            return response
        # A retry, whose first answer was perhaps lost: its tokens were never stored, so the same
        # credentials sign the admin in again, as Login would, when they still can.
        again = pb.LoginRequest(
            organization_slug=request.organization_slug, login=request.email, password=request.password
        )
        with contextlib.suppress(Unauthenticated, PermissionDenied):
            response.tokens.CopyFrom((await self.login(again)).tokens)
        return response

    @staticmethod
    async def _flush(session: AsyncSession) -> None:
        try:
            await session.flush()
        except IntegrityError as exc:
            field = UNIQUE_FIELDS.get(violated_constraint(exc) or "")
            if field is None:
                raise
            raise AlreadyExists(f"{field} is already taken", "ALREADY_EXISTS", {"field": field}) from None

    async def login(self, request: pb.LoginRequest) -> pb.LoginResponse:
        v = Violations()
        v.check(bool(request.organization_slug), "organization_slug", "is required")
        v.check(bool(request.login), "login", "is required (email or username)")
        v.check(bool(request.password), "password", "is required")
        v.raise_if_any()
        found = await signin.find(self.db, request.organization_slug, request.login.strip())
        org, user = found.organization, found.user
        # The hash is checked outside any transaction (it takes tens of milliseconds by design), and
        # checked even when there is no user or the account is locked, so every failure takes as long.
        stored = user.password_hash if user is not None and not found.locked else None
        verified = await self.passwords.verify(stored, request.password)
        if org is None or user is None:
            if org is not None:
                await signin.unknown(self.db, org.id)
            raise Unauthenticated(BAD_CREDENTIALS, "INVALID_CREDENTIALS")
        if not verified:
            await self._failed(user)
        # An answer other than a session tells the caller the password was right: parallel guesses may
        # have locked the account while argon2 ran, and then the right password must look wrong too.
        not_a_session = org.state != "active" or user.state != "active" or user.totp_enabled
        if not_a_session and not await signin.still_checked(self.db, user):
            await self._failed(user)
        if org.state != "active":
            await self._refused(user, "organization_suspended")
            raise PermissionDenied("the organization is suspended", "ORGANIZATION_SUSPENDED")
        if user.state != "active":
            await self._refused(user, "user_deactivated")
            raise PermissionDenied("this user is deactivated; ask an admin", "USER_DEACTIVATED")
        if user.totp_enabled:
            await self._second_factor(user, request.totp_code)
        rehash = None
        if self.passwords.needs_rehash(user.password_hash):
            rehash = await self.passwords.hash(request.password)
        refresh, row = self.issuer.new_refresh_token(user)
        try:
            signed = await signin.succeeded(self.db, user, rehash, row)
        except PermissionDenied:  # suspended while argon2 ran
            await self._refused(user, "organization_suspended")
            raise
        if signed is None:  # locked by parallel guesses, or changed, while argon2 ran
            await self._failed(user)
        user.last_login_at, user.roles = signed.last_login, signed.roles
        access = await self.issuer.access_token(user, signed.custom_permissions, row["family_id"])
        return pb.LoginResponse(user=users.to_message(user), tokens=self.issuer.token_pair(access, refresh))

    async def _refused(self, user: User, reason: str) -> None:
        """The right password, refused all the same: audited (it counts no attempt)."""
        async with self.db.tenant(user.organization_id) as session:
            audit.record(session, user.organization_id, "login.refused", target=users.user_name(user), reason=reason)

    async def _second_factor(self, user: User, code: str) -> None:
        """The password was right; now the TOTP or recovery code, which counts against the same attempts."""
        if not code:
            # The answer tells the caller the password was right: on record, for the user and their admins.
            async with self.db.tenant(user.organization_id) as session:
                audit.record(
                    session, user.organization_id, "login.second_factor_required", target=users.user_name(user)
                )
            raise Unauthenticated("this user signs in with a TOTP code too: send totp_code", "TOTP_REQUIRED")
        assert user.totp_secret_sealed is not None
        secret = self.sealer.open(user.totp_secret_sealed, totp.sealing_context(user.id))
        async with self.db.tenant(user.organization_id) as session:
            accepted = await totp.accept(session, user, secret, code)
            if accepted and totp.matching_step(secret, code) is None:  # a recovery code, now spent
                # Its owner sees it go: one they did not use means someone holds their recovery codes.
                audit.record(session, user.organization_id, "totp.recovery_code_used", target=users.user_name(user))
        if not accepted:
            if not await signin.failed(self.db, user, "totp"):  # locked meanwhile: the code's answer would tell
                raise Unauthenticated(BAD_CREDENTIALS, "INVALID_CREDENTIALS")
            raise Unauthenticated("wrong or already used code", "INVALID_TOTP")

    async def _failed(self, user: User) -> NoReturn:
        """Count the failure (unless the account is locked) and refuse the sign-in; a locked account
        answers as a wrong password does."""
        await signin.failed(self.db, user)
        raise Unauthenticated(BAD_CREDENTIALS, "INVALID_CREDENTIALS")
