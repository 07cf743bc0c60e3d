"""Mailed single-use tokens: password reset and email verification."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos.identity.v1 import auth_pb2 as pb
from hishamos_identity import audit, users
from hishamos_identity.mail import Mailer
from hishamos_identity.models import EmailToken, Job, Organization, User
from hishamos_identity.passwords import Passwords, check_strength
from hishamos_identity.settings import IdentitySettings
from hishamos_identity.signin import SLUG_SETTING
from hishamos_kit import jobs, validate
from hishamos_kit.auth import Principal
from hishamos_kit.db import TENANT_SETTING, Database, set_local
from hishamos_kit.errors import Aborted, InvalidArgument, Violations
from hishamos_kit.logs import request_id_var
from hishamos_kit.retention import Rule

TOKEN = re.compile(r"^hose_(?P<org>[0-9a-f]{32})_(?P<secret>[A-Za-z0-9_-]{43})\Z")
RESET, VERIFY, INVITE = EmailToken.RESET, EmailToken.VERIFY, EmailToken.INVITE
RESET_JOB = "password_reset"
RESET_WINDOW_SECONDS = 60
LIFETIME = {RESET: timedelta(hours=1), VERIFY: timedelta(days=1), INVITE: timedelta(days=7)}
# An expired token is refused as an unknown one is, with the same answer: it need not be kept.
RETENTION = Rule("email_tokens", "expires_at < now() - interval '1 day'")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _issue(session: AsyncSession, user: User, purpose: str) -> tuple[str, datetime]:
    """A new token for `user`, and when it expires (its mail is not sent after then)."""
    token = f"hose_{user.organization_id.hex}_{secrets.token_urlsafe(32)}"
    expires = datetime.now(UTC) + LIFETIME[purpose]
    session.add(
        EmailToken(
            organization_id=user.organization_id,
            user_id=user.id,
            purpose=purpose,
            token_hash=_hash(token),
            expires_at=expires,
        )
    )
    return token, expires


def _bad_token() -> InvalidArgument:
    return InvalidArgument({"token": "is not valid, has expired or was used; ask for a new one"}, "TOKEN_INVALID")


class Recovery:
    def __init__(self, db: Database, passwords: Passwords, mailer: Mailer, settings: IdentitySettings) -> None:
        self.db = db
        self.passwords = passwords
        self.mailer = mailer
        self.url = settings.public_url.rstrip("/")
        self._resetting: set[str] = set()  # hashes of the tokens a reset is using now

    async def request_reset(self, request: pb.RequestPasswordResetRequest) -> None:
        """Queue the reset and answer: whether the address has an account is looked up by the job,
        so the answer and its timing are the same either way (at most one job written)."""
        v = Violations()
        v.check(bool(request.organization_slug), "organization_slug", "is required")
        address = validate.email(v, "email", request.email, required=True)  # a typo is told, not mailed to nobody
        v.raise_if_any()
        payload = {
            "organization_slug": request.organization_slug,
            "email": address,
            "request_id": request_id_var.get(),
        }
        # One reset an address per window, however often it is asked for: a flood at one address
        # queues one job and sends one mail. The key says nothing of whether the address has an account.
        window = int(time.time() // RESET_WINDOW_SECONDS)
        key = hashlib.sha256(f"{payload['organization_slug']}\n{payload['email']}\n{window}".encode()).hexdigest()
        async with self.db.unscoped() as session:  # whose it is, if anyone's, the job finds out: the slug's turn
            await jobs.enqueue(session, Job, RESET_JOB, payload, tenant=request.organization_slug[:100], key=key)

    async def send_reset(self, job_id: uuid.UUID, payload: dict[str, Any]) -> None:
        """The reset job: a token mailed to the address, when it is a live user's in that organization."""
        request_id_var.set(payload["request_id"])
        async with self.db.unscoped() as session:
            if await self.mailer.sent_by(session, str(job_id)):  # run again after it committed: one token, one mail
                return
            await set_local(session, SLUG_SETTING, payload["organization_slug"])
            org = await session.scalar(select(Organization).where(Organization.slug == payload["organization_slug"]))
            if org is None or org.is_deleted:
                return
            await set_local(session, TENANT_SETTING, str(org.id))
            # Held until the token is stored: an email change or delete that comes between then spends it.
            found = select(User).where(User.email == payload["email"], User.is_deleted.is_(False))
            user = await session.scalar(found.with_for_update(read=True))
            if user is None:
                return
            token, until = _issue(session, user, RESET)
            audit.record(session, org.id, "password.reset_requested", target=users.user_name(user))
            body = (
                f"Someone asked to reset your HishamOS password for {org.display_name}.\n\n"
                f"Reset token (valid for an hour, once): {token}\n"
                f"Use it with AuthService/ResetPassword, or open {self.url}/reset-password?token={token}\n\n"
                "If it was not you, ignore this message; your password stays as it is.\n"
            )
            await self.mailer.enqueue(
                session, org.id, user.email, "Reset your HishamOS password", body, key=str(job_id), until=until
            )

    async def invite(self, session: AsyncSession, user: User, organization: str, inviter: str) -> None:
        """Mail an invited user (created without a password) a token to choose one, in the caller's
        transaction: the user and the invitation exist together or not at all."""
        token, until = _issue(session, user, INVITE)
        body = (
            f"{inviter} invited you to {organization} on HishamOS, as {user.username}.\n\n"
            f"Invitation token (valid for a week, once): {token}\n"
            f"Choose your password with AuthService/ResetPassword, or open {self.url}/accept-invitation?token={token}\n"
        )
        await self.mailer.enqueue(
            session,
            user.organization_id,
            user.email,
            f"You are invited to {organization} on HishamOS",
            body,
            until=until,
        )

    def _organization(self, token: str) -> uuid.UUID:
        match = TOKEN.match(token)
        if match is None:
            raise _bad_token()
        return uuid.UUID(match["org"])

    async def _consume(
        self, session: AsyncSession, token: str, purposes: tuple[str, ...], *, spend: bool = True
    ) -> tuple[uuid.UUID, str]:
        """The token's user and purpose, spent in the caller's transaction (so it is spent exactly when
        what it was for is done); `spend=False` only looks."""
        live = (
            EmailToken.token_hash == _hash(token),
            EmailToken.purpose.in_(purposes),
            EmailToken.used_at.is_(None),
            EmailToken.expires_at > func.now(),
        )
        columns = (EmailToken.user_id, EmailToken.purpose)
        query = update(EmailToken).where(*live).values(used_at=func.now()).returning(*columns)
        found = (await session.execute(query if spend else select(*columns).where(*live))).one_or_none()
        if found is None:
            raise _bad_token()
        return found[0], found[1]

    async def reset(self, request: pb.ResetPasswordRequest) -> None:
        v = Violations()
        v.check(bool(request.token), "token", "is required")
        check_strength(v, "new_password", request.new_password)
        v.raise_if_any()
        organization_id = self._organization(request.token)
        async with self.db.tenant(organization_id) as session:  # no hashing for a token that is no good
            await self._consume(session, request.token, EmailToken.SETS_PASSWORD, spend=False)
        # One hash a token at a time here: parallel calls with one good token would each queue an
        # argon2id hash on the pool sign-ins share before any of them spent it.
        digest = _hash(request.token)
        if digest in self._resetting:
            raise Aborted("this token is in use by another request; retry shortly", "TOKEN_IN_USE")
        self._resetting.add(digest)
        try:
            await self._set_password(organization_id, request)
        finally:
            self._resetting.discard(digest)

    async def _set_password(self, organization_id: uuid.UUID, request: pb.ResetPasswordRequest) -> None:
        new_hash = await self.passwords.hash(request.new_password)
        async with self.db.tenant(organization_id) as session:  # spent with the password it sets, or not at all
            # The user's row first, as a delete holds it before it spends the user's tokens.
            user_id, _ = await self._consume(session, request.token, EmailToken.SETS_PASSWORD, spend=False)
            await session.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))
            user_id, purpose = await self._consume(session, request.token, EmailToken.SETS_PASSWORD)
            accepted = purpose == INVITE  # the invitation reached this address: it is verified too
            changed = await session.execute(
                update(User)
                .where(User.id == user_id, User.is_deleted.is_(False))
                .values(
                    users.edited(
                        password_hash=new_hash,
                        failed_logins=0,
                        lockouts=0,  # the owner proved it is them: a later lockout starts from a minute again
                        locked_until=None,
                        **({"email_verified": True} if accepted else {}),
                    )
                )
            )
            if not changed.rowcount:  # type: ignore[attr-defined]
                raise InvalidArgument({"token": "belongs to a user who no longer exists"}, "TOKEN_INVALID")
            await users.password_set(session, user_id)
            target = users.PATH.format(organization_id, user_id)
            audit.record(
                session, organization_id, "invitation.accepted" if accepted else "password.reset", target=target
            )

    async def send_verification(self, principal: Principal, name: str) -> None:
        user_id = users.own_user(principal, name)
        # One mail a user per window, as for resets: the address is the caller's to set, so asking again and
        # again would make the platform mail whatever address it likes, as often as it likes.
        key = f"verify:{user_id}:{int(time.time() // RESET_WINDOW_SECONDS)}"
        async with self.db.tenant(principal.organization_id) as session:
            # Locked: an email change committed first is the address mailed; one that waits spends the token.
            user = await users.live_user(session, user_id, name, lock=True)
            if await self.mailer.sent_by(session, key):
                return
            token, until = _issue(session, user, VERIFY)
            audit.record(session, user.organization_id, "email.verification_sent", principal.subject, name)
            body = (
                "Confirm that this address is yours for HishamOS.\n\n"
                f"Verification token (valid for a day, once): {token}\n"
                f"Use it with AuthService/VerifyEmail, or open {self.url}/verify-email?token={token}\n"
            )
            await self.mailer.enqueue(
                session, user.organization_id, user.email, "Verify your email address", body, key=key, until=until
            )

    async def verify(self, request: pb.VerifyEmailRequest) -> users.UserMessage:
        organization_id = self._organization(request.token)
        async with self.db.tenant(organization_id) as session:
            user_id, _ = await self._consume(session, request.token, (VERIFY,))
            user = await session.get(User, user_id)
            if user is None or user.is_deleted:
                raise InvalidArgument({"token": "belongs to a user who no longer exists"}, "TOKEN_INVALID")
            user.email_verified = True
            await session.flush()
            audit.record(session, organization_id, "email.verified", target=users.user_name(user))
            return users.to_message(user)
