"""Users: profiles, the organization's max_users quota, activation, and a user's own password."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import any_, func, inspect, literal, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from hishamos.identity.v1 import user_pb2 as pb
from hishamos_identity import audit, signin, totp
from hishamos_identity.grants import check_delegation, check_outranks, unknown_roles
from hishamos_identity.models import LIVE_REFRESH_TOKEN, EmailToken, IdempotencyKey, Organization, RefreshToken, User
from hishamos_identity.passwords import Passwords, check_strength
from hishamos_kit import resources, validate
from hishamos_kit.auth import Principal, current_principal
from hishamos_kit.crypto import Sealer
from hishamos_kit.db import Database, violated_constraint
from hishamos_kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Violations,
)
from hishamos_kit.listing import Field, ListSpec, parse_time
from hishamos_kit.resources import ResourcePath
from hishamos_kit.standard import ResourceType, StandardMethods, base_fields

if TYPE_CHECKING:
    from hishamos_identity.recovery import Recovery

UserMessage = pb.User
PATH = ResourcePath("organizations/{organization}/users/{user}")
WRONG_PASSWORD = "WRONG_PASSWORD"
USERNAME = re.compile(r"^[A-Za-z0-9._-]{3,64}\Z")
STATES = validate.EnumCodes(pb.User.State.items(), "STATE_")
UNIQUE = {"uq_users_organization_id_email": "user.email", "uq_users_organization_id_username": "user.username"}


def user_name(user: User) -> str:
    return PATH.format(user.organization_id, user.id)


def user_id_of(principal: Principal) -> uuid.UUID | None:
    """The user a caller acts as, with a token or a key; None for services and operators."""
    if not principal.subject.startswith("organizations/"):
        return None
    return PATH.parse(principal.subject, "sub")[1]


def edited(**values: object) -> dict[str, object]:
    """Values for a bulk UPDATE of users that changes what a User shows: its etag and update time move
    as an ORM write's would, so an etag read before no longer matches."""
    return {**values, "version": User.version + 1, "updated_at": func.now()}


def to_message(user: User) -> pb.User:
    return pb.User(
        name=user_name(user),
        email=user.email,
        username=user.username,
        full_name=user.full_name,
        first_name=user.first_name,
        last_name=user.last_name,
        avatar_uri=user.avatar_uri,
        bio=user.bio,
        time_zone=user.time_zone,
        roles=list(user.roles),
        state=STATES.value(user.state),
        totp_enabled=user.totp_enabled,
        email_verified=user.email_verified,
        last_login_time=resources.timestamp(user.last_login_at),
        **base_fields(user),
    )


def check_username(v: Violations, field: str, value: str) -> str:
    if not USERNAME.match(value):
        v.add(field, "must be 3-64 letters, digits, `.`, `_` or `-`")
    return value


async def lock_sessions(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Hold the user's row until the transaction ends: a refresh, which adds a token to a session,
    and the end of sessions both take it first, so neither runs between the other's reading and
    writing (an end that waited for a refresh would not see the token it added)."""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update(key_share=True))


async def end_sessions(session: AsyncSession, user_id: uuid.UUID, *which: ColumnElement[bool]) -> int:
    """End the user's sessions that `which` picks (all of them, or one): their live refresh tokens
    stop working. How many tokens that ended."""
    await lock_sessions(session, user_id)
    ended = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, *which, LIVE_REFRESH_TOKEN)
        .values(revoked_at=func.now())
    )
    return int(ended.rowcount)  # type: ignore[attr-defined]


async def spend_email_tokens(session: AsyncSession, user_id: uuid.UUID, *purposes: str) -> None:
    """The user's mailed tokens still out (of these purposes; of every one when none are named) stop working."""
    which = [EmailToken.purpose.in_(purposes)] if purposes else []
    await session.execute(
        update(EmailToken)
        .where(EmailToken.user_id == user_id, EmailToken.used_at.is_(None), *which)
        .values(used_at=func.now())
    )


async def password_set(session: AsyncSession, user_id: uuid.UUID, *which: ColumnElement[bool]) -> None:
    """A new password ends the user's sessions (those `which` picks: all, or all but the caller's), and
    the reset and invitation tokens still out: an older token, leaked or forgotten in a mailbox, must not
    set another."""
    await end_sessions(session, user_id, *which)
    await spend_email_tokens(session, user_id, *EmailToken.SETS_PASSWORD)


def other_sessions(principal: Principal) -> list[ColumnElement[bool]]:
    """The caller's other sessions, as `end_sessions` picks them: a user who has just given their password
    (to change it, or to turn two-factor sign-in on) stays signed in where they did it, and every other
    sign-in of theirs ends, an intruder's included (OWASP ASVS 3.3.3)."""
    return [] if principal.session is None else [RefreshToken.family_id != principal.session]


def is_locked(user: User) -> bool:
    """Locked out by failed passwords, until `locked_until`."""
    return user.locked_until is not None and user.locked_until > datetime.now(UTC)


async def live_user(session: AsyncSession, user_id: uuid.UUID, name: str, *, lock: bool = False) -> User:
    """The user, unless deleted; `lock` holds the row until the transaction ends."""
    user = await session.get(User, user_id, with_for_update=lock)
    if user is None or user.is_deleted:
        raise NotFound(name)
    return user


async def lock_users(session: AsyncSession, organization_id: uuid.UUID) -> None:
    """Changes to who an organization's users are (its seats, its admins), one at a time, until commit."""
    await session.execute(
        text("select pg_advisory_xact_lock(hashtext('users:' || :org))"), {"org": str(organization_id)}
    )


async def keep_an_admin(session: AsyncSession, user: User, role_lost: str = "admin") -> None:
    """Refuse the change that would leave the organization without an active admin."""
    if role_lost != "admin" or "admin" not in user.roles:
        return
    # One such change at a time in the organization, so two at once cannot both see "another admin left".
    # A lock of its own, not the admins' rows: a change already holds its user's row, and two of them
    # waiting each for the other's deadlocked.
    await lock_users(session, user.organization_id)
    admins = await session.scalars(
        select(User.id).where(literal("admin") == any_(User.roles), User.is_deleted.is_(False), User.state == "active")
    )
    if not any(admin != user.id for admin in admins):
        raise FailedPrecondition("the organization's last admin cannot go; make another admin first", "LAST_ADMIN")


def own_user(principal: Principal, name: str, field: str = "name") -> uuid.UUID:
    """The id of the user `name`, which must be the caller: the self-service methods act on oneself only."""
    user_id = resources.own_name(principal, PATH, name, field)
    if PATH.format(principal.organization_id, user_id) != principal.subject:  # however the name spells the id
        raise PermissionDenied("this changes only the caller's own profile, password or 2FA settings", "NOT_SELF")
    return user_id


async def check_quota(session: AsyncSession, organization_id: uuid.UUID, joining: uuid.UUID | None = None) -> None:
    """max_users, checked under a per-organization lock so two creates cannot both take the last seat;
    `joining`: a user being restored, who takes a seat but is not counted yet."""
    await lock_users(session, organization_id)
    limit = await session.scalar(select(Organization.max_users).where(Organization.id == organization_id))
    live = await session.scalar(
        select(func.count()).select_from(User).where(User.is_deleted.is_(False), User.id != joining)
    )
    if limit is not None and (live or 0) >= limit:
        raise ResourceExhausted(
            f"the organization has {live} users and may have {limit}; delete a user, or ask a platform operator "
            "to raise max_users",
            "QUOTA_EXCEEDED",
            {"quota": "max_users", "limit": str(limit)},
        )


class UserType(ResourceType[User, pb.User]):
    model = User
    message = pb.User
    field = "user"
    path = PATH
    updatable = frozenset(
        {"email", "username", "full_name", "first_name", "last_name", "avatar_uri", "bio", "time_zone"}
    )
    unique = UNIQUE
    list_spec = ListSpec(
        filter_fields={
            "email": Field(User.email),
            "username": Field(User.username, text=True),
            "full_name": Field(User.full_name, text=True),
            "state": STATES.filter_field(User.state),
            "roles": Field(User.roles, array=True),
            "create_time": Field(User.created_at, parse_time),
            "last_login_time": Field(User.last_login_at, parse_time),
        },
        order_fields={
            "email": Field(User.email),
            "username": Field(User.username),
            "full_name": Field(User.full_name),
            "create_time": Field(User.created_at, parse_time),
        },
        default_order="create_time desc",
        id_column=User.id,
    )

    def to_message(self, row: User) -> pb.User:
        return to_message(row)

    def apply(self, row: User, message: pb.User, paths: list[str], violations: Violations) -> None:
        v = violations
        for path in paths:
            field = f"user.{path}"
            if path == "email":
                email = validate.email(v, field, message.email, required=True)
                if email != row.email:
                    row.email, row.email_verified = email, False  # a new address is unproven
            elif path == "username":
                row.username = check_username(v, field, message.username)
            elif path in ("full_name", "first_name", "last_name"):
                setattr(
                    row,
                    path,
                    validate.text(v, field, getattr(message, path), max_length=200 if path == "full_name" else 100),
                )
            elif path == "avatar_uri":
                row.avatar_uri = validate.http_url(v, field, message.avatar_uri)
            elif path == "bio":
                row.bio = validate.text(v, field, message.bio, max_length=2000)
            elif path == "time_zone":
                row.time_zone = validate.time_zone(v, field, message.time_zone)

    async def before_write(self, session: AsyncSession, row: User, action: str) -> None:
        principal = current_principal()
        # Read before any query: a query flushes the row and forgets what changed.
        changed = [path for path in sorted(self.updatable) if inspect(row).attrs[path].history.has_changes()]
        held: list[str] = []  # what the user's roles hold, when someone else edits them
        if action != "create" and not (action == "update" and user_name(row) == principal.subject):
            # Within the caller's own permissions, except a profile edit of oneself: that hands nothing
            # over, and a key that may do only that (identity.self.update) holds less than its owner.
            held = await check_delegation(session, principal, row.roles)
        if action in ("delete", "undelete"):  # waits for the user's own writes under way (standing.py)
            await session.execute(select(User.id).where(User.id == row.id).with_for_update())
        if action == "undelete":
            await check_quota(session, row.organization_id, joining=row.id)
        elif action == "delete":  # and an invitation still out must not bring the user back with a password
            await keep_an_admin(session, row)
            await end_sessions(session, row.id)
            await spend_email_tokens(session, row.id)
        elif "email" in changed:  # mail sent to the old address no longer proves anything
            checked = password_checked.get()
            if user_name(row) != principal.subject:
                check_outranks(principal, held)
            elif checked is None:  # its address moved since it was read
                raise InvalidArgument({"current_password": "is required to change your own email"})
            # As for the password and 2FA: the password checked before counts only if it is still the
            # password of an unlocked account, read under this write's lock.
            if checked is not None and (is_locked(row) or row.password_hash != checked.password_hash):
                raise InvalidArgument({"current_password": "does not match"}, WRONG_PASSWORD)
            await spend_email_tokens(session, row.id)
        if action != "create":
            fields = {"fields": changed} if action == "update" else {}
            audit.record(session, row.organization_id, f"user.{action}d", principal.subject, user_name(row), **fields)


# The user whose password a request gave, as `_check_password` found it (UpdateUser of one's own email).
password_checked: ContextVar[User | None] = ContextVar("password_checked", default=None)


class Users(StandardMethods[User, pb.User]):
    """Get, List, Update, Delete and Undelete come from the kit; creation takes a password or mails an
    invitation, within the quota."""

    def __init__(self, db: Database, passwords: Passwords, sealer: Sealer, recovery: Recovery) -> None:
        super().__init__(db, UserType(), IdempotencyKey)
        self.passwords = passwords
        self.sealer = sealer
        self.recovery = recovery

    async def create_user(self, principal: Principal, request: pb.CreateUserRequest) -> pb.User:
        organization_id = resources.own_parent(principal, request.parent)
        resources.request_key(request.request_id)  # a malformed one is refused before any work
        row = User(id=uuid.uuid4(), organization_id=organization_id, state="active")
        v = Violations()
        self.kind.apply(row, request.user, sorted(self.kind.updatable), v)
        if request.password:  # none: an invitation, by mail, to choose one
            check_strength(v, "password", request.password)
        v.raise_if_any()
        row.password_hash = await self.passwords.hash(request.password) if request.password else ""
        roles = list(dict.fromkeys(request.roles)) or ["viewer"]

        async def create(session: AsyncSession) -> pb.CreateUserResponse:
            await check_delegation(session, principal, roles)
            unknown = set(await unknown_roles(session, roles))
            if unknown:
                raise InvalidArgument(
                    {f"roles[{i}]": f"no role `{r}` here" for i, r in enumerate(roles) if r in unknown}
                )
            row.roles = roles
            await check_quota(session, organization_id)
            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:
                field = UNIQUE.get(violated_constraint(exc) or "")
                if field is None:
                    raise
                raise AlreadyExists(
                    f"another user has this {field.split('.')[1]}", "ALREADY_EXISTS", {"field": field}
                ) from None
            audit.record(session, organization_id, "user.created", principal.subject, user_name(row), roles=roles)
            if not request.password:  # an invitation, signed with a name people know, not a resource name
                organization = await session.get_one(Organization, organization_id)
                inviter_id = user_id_of(principal)
                inviter = await session.get(User, inviter_id) if inviter_id else None
                by = (inviter.full_name or inviter.username) if inviter else "An administrator"
                await self.recovery.invite(session, row, organization.display_name, by)
            return pb.CreateUserResponse(user=to_message(row))

        async with self.db.tenant(organization_id) as session:
            response = await resources.once(
                session,
                IdempotencyKey,
                organization_id,
                "CreateUser",
                request.request_id,
                pb.CreateUserResponse,
                lambda: create(session),
            )
        return response.user

    async def set_state(self, principal: Principal, name: str, etag: str, state: str) -> pb.User:
        user_id = resources.own_name(principal, PATH, name)
        async with self.db.tenant(principal.organization_id) as session:
            # Locked as every write locks its row (no ABORTED without an etag), and before the last-admin
            # check's organization lock, in the order a delete takes them.
            user = await live_user(session, user_id, name, lock=True)
            resources.check_etag(user, etag, name)
            await check_delegation(session, principal, user.roles)
            if state != "active":
                await keep_an_admin(session, user)
            if user.state != state:
                user.state = state
                if state != "active":
                    await end_sessions(session, user.id)
                await session.flush()
                audit.record(
                    session,
                    principal.organization_id,
                    f"user.{'activated' if state == 'active' else 'deactivated'}",
                    principal.subject,
                    user_name(user),  # as every event names the user, however the caller spelt it
                )
            return to_message(user)

    async def unlock(self, principal: Principal, name: str) -> pb.User:
        """Lift a lockout early (the admin has made sure it is the user asking), and its backoff with it."""
        user_id = resources.own_name(principal, PATH, name)
        if PATH.format(principal.organization_id, user_id) == principal.subject:
            raise PermissionDenied(
                "another admin unlocks you: the lock is against whoever guesses your password", "UNLOCK_SELF"
            )
        async with self.db.tenant(principal.organization_id) as session:
            user = await live_user(session, user_id, name, lock=True)
            await check_delegation(session, principal, user.roles)
            if is_locked(user) and user.locked_until is not None:
                until = user.locked_until.isoformat()
                user.failed_logins, user.lockouts, user.locked_until = 0, 0, None
                await session.flush()
                audit.record(
                    session,
                    principal.organization_id,
                    "user.unlocked",
                    principal.subject,
                    user_name(user),
                    was_until=until,
                )
            return to_message(user)

    async def update_profile(self, principal: Principal, request: pb.UpdateProfileRequest) -> pb.User:
        """The caller's own profile, as UpdateUser edits it: everyone may, whatever their roles."""
        own_user(principal, request.user.name, "user.name")
        edit = pb.UpdateUserRequest(
            user=request.user, update_mask=request.update_mask, current_password=request.current_password
        )
        return await self.update_user(principal, edit)

    async def update_user(self, principal: Principal, request: pb.UpdateUserRequest) -> pb.User:
        """A user moving their own email gives their password: with a token alone, a thief would move the
        address and reset the password through it, locking the owner out for good."""
        message = request.user
        paths = resources.update_paths(request.update_mask, message, self.kind.updatable, "user")
        if "email" not in paths or message.name != principal.subject:
            return await self.update(principal, message, request.update_mask)
        user_id = own_user(principal, message.name)
        async with self.db.tenant(principal.organization_id) as session:
            user = await live_user(session, user_id, message.name)
        if message.email.strip().lower() == user.email.lower():
            return await self.update(principal, message, request.update_mask)
        if not request.current_password:
            raise InvalidArgument({"current_password": "is required to change your own email"})
        await self._check_password(user, request.current_password, "current_password")
        checked = password_checked.set(user)
        try:
            return await self.update(principal, message, request.update_mask)
        finally:
            password_checked.reset(checked)

    async def _check_password(self, user: User, password: str, field: str) -> None:
        """A password checked outside sign-in counts against the same attempts and lockout, so a
        stolen access token is no way to guess it at argon2id's pace. A right one counts only if the
        change it allows confirms it (`_still_checked`)."""
        if not await self.passwords.verify(None if is_locked(user) else user.password_hash, password):
            await signin.failed(self.db, user)
            raise InvalidArgument({field: "does not match"}, WRONG_PASSWORD)

    @staticmethod
    async def _still_checked(session: AsyncSession, checked: User, name: str, field: str) -> User:
        """The user, locked, when the password `_check_password` found right still counts: the account
        is still unlocked and the password the same. Parallel guesses may lock it while argon2 runs; of
        them at most MAX_FAILURES get a true answer, the right password included, as at sign-in."""
        user = await live_user(session, checked.id, name, lock=True)
        if is_locked(user) or user.password_hash != checked.password_hash:
            raise InvalidArgument({field: "does not match"}, WRONG_PASSWORD)
        return user

    async def enroll_totp(self, principal: Principal, name: str) -> pb.EnrollTotpResponse:
        user_id = own_user(principal, name)
        secret = totp.new_secret()
        async with self.db.tenant(principal.organization_id) as session:
            user = await live_user(session, user_id, name, lock=True)
            if user.totp_enabled:
                raise FailedPrecondition("two-factor sign-in is on; disable it before enrolling again", "TOTP_ENABLED")
            user.totp_secret_sealed = self.sealer.seal(secret, totp.sealing_context(user_id))
            await session.flush()
            audit.record(session, principal.organization_id, "totp.enrollment_started", principal.subject, name)
            return pb.EnrollTotpResponse(
                secret=totp.base32(secret), provisioning_uri=totp.provisioning_uri(secret, user.email)
            )

    async def confirm_totp(self, principal: Principal, request: pb.ConfirmTotpRequest) -> list[str]:
        user_id = own_user(principal, request.name)
        v = Violations()
        v.check(bool(request.code), "code", "is required")
        v.check(bool(request.password), "password", "is required")
        v.raise_if_any()
        async with self.db.tenant(principal.organization_id) as session:
            user = await live_user(session, user_id, request.name)
        await self._check_password(user, request.password, "password")
        async with self.db.tenant(principal.organization_id) as session:
            user = await self._still_checked(session, user, request.name, "password")
            if user.totp_enabled or user.totp_secret_sealed is None:
                raise FailedPrecondition("call EnrollTotp first", "TOTP_NOT_ENROLLING")
            secret = self.sealer.open(user.totp_secret_sealed, totp.sealing_context(user_id))
            if not await totp.accept(session, user, secret, request.code):
                raise InvalidArgument({"code": "is not the app's current code"}, "INVALID_TOTP")
            codes, user.recovery_codes = totp.recovery_codes()
            user.totp_enabled = True
            await session.flush()
            # Turned on after a suspected break-in, it must evict the intruder: every other session ends, as
            # at a password change, and the next sign-in takes a code.
            await end_sessions(session, user_id, *other_sessions(principal))
            audit.record(session, principal.organization_id, "totp.enabled", principal.subject, request.name)
            return codes

    async def disable_totp(self, principal: Principal, request: pb.DisableTotpRequest) -> None:
        user_id = own_user(principal, request.name)
        if not request.password:  # not a guess: a blank one must not count toward the lockout
            raise InvalidArgument({"password": "is required"})
        async with self.db.tenant(principal.organization_id) as session:
            user = await live_user(session, user_id, request.name)
        await self._check_password(user, request.password, "password")
        async with self.db.tenant(principal.organization_id) as session:
            await self._still_checked(session, user, request.name, "password")
            await session.execute(
                update(User)
                .where(User.id == user_id)
                .values(edited(totp_enabled=False, totp_secret_sealed=None, recovery_codes=[]))
            )
            audit.record(session, principal.organization_id, "totp.disabled", principal.subject, request.name)

    async def regenerate_recovery_codes(
        self, principal: Principal, request: pb.RegenerateRecoveryCodesRequest
    ) -> list[str]:
        user_id = own_user(principal, request.name)
        v = Violations()
        v.check(bool(request.password), "password", "is required")
        v.raise_if_any()
        async with self.db.tenant(principal.organization_id) as session:
            user = await live_user(session, user_id, request.name)
        if not user.totp_enabled:
            raise FailedPrecondition("two-factor sign-in is off; ConfirmTotp gives recovery codes", "TOTP_NOT_ENABLED")
        await self._check_password(user, request.password, "password")
        codes, hashes = totp.recovery_codes()
        async with self.db.tenant(principal.organization_id) as session:
            await self._still_checked(session, user, request.name, "password")
            replaced = await session.execute(
                update(User)
                .where(User.id == user_id, User.totp_enabled.is_(True))
                .values(edited(recovery_codes=hashes))
            )
            # Two-factor sign-in may have been turned off while the password was checked.
            if not replaced.rowcount:  # type: ignore[attr-defined]
                raise FailedPrecondition("two-factor sign-in is off", "TOTP_NOT_ENABLED")
            audit.record(
                session, principal.organization_id, "totp.recovery_codes_replaced", principal.subject, request.name
            )
        return codes

    async def change_password(self, principal: Principal, request: pb.ChangePasswordRequest) -> None:
        user_id = own_user(principal, request.name)
        v = Violations()
        v.check(bool(request.current_password), "current_password", "is required")
        check_strength(v, "new_password", request.new_password)
        v.raise_if_any()
        async with self.db.tenant(principal.organization_id) as session:
            user = await live_user(session, user_id, request.name)
        await self._check_password(user, request.current_password, "current_password")
        new_hash = await self.passwords.hash(request.new_password)
        async with self.db.tenant(principal.organization_id) as session:
            await self._still_checked(session, user, request.name, "current_password")
            await session.execute(update(User).where(User.id == user_id).values(edited(password_hash=new_hash)))
            await password_set(session, user_id, *other_sessions(principal))
            audit.record(session, principal.organization_id, "password.changed", principal.subject, request.name)
