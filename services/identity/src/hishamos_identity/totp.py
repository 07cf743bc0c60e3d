"""Two-factor sign-in: TOTP (RFC 6238: HMAC-SHA1, 30-second steps, six digits, ±1 step) and recovery codes.

A code is accepted at most once: accepting it moves the user's last used step forward in a single
conditional UPDATE, so of several concurrent submissions of one code exactly one wins.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time
import uuid
from urllib.parse import quote

from sqlalchemy import any_, func, literal, update
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos_identity.models import User

STEP_SECONDS = 30
DIGITS = 6
ISSUER = "HishamOS"


def new_secret() -> bytes:
    return secrets.token_bytes(20)


def base32(secret: bytes) -> str:
    return base64.b32encode(secret).decode().rstrip("=")


def provisioning_uri(secret: bytes, account: str) -> str:
    label = quote(f"{ISSUER}:{account}", safe=":@")
    return f"otpauth://totp/{label}?secret={base32(secret)}&issuer={ISSUER}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}"


def code_at(secret: bytes, step: int) -> str:
    digest = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**DIGITS).zfill(DIGITS)


def current_step(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // STEP_SECONDS)


def matching_step(secret: bytes, code: str, now: float | None = None) -> int | None:
    """The step (now, or one either side for clock drift) whose code this is. Spaces do not count:
    authenticator apps show a code as `123 456`, and people type it so."""
    code = "".join(code.split())
    step = current_step(now)
    for candidate in (step - 1, step, step + 1):
        if hmac.compare_digest(code_at(secret, candidate).encode(), code.encode()):
            return candidate
    return None


def recovery_codes() -> tuple[list[str], list[str]]:
    """Ten new codes to show once, and their hashes to store."""
    codes = [f"{secrets.token_hex(4)}-{secrets.token_hex(4)}" for _ in range(10)]
    return codes, [hash_code(c) for c in codes]


def hash_code(code: str) -> str:
    """Recovery codes carry 64 random bits and are single-use: SHA-256 keeps them unreadable at rest."""
    return hashlib.sha256(code.strip().lower().encode()).hexdigest()


def sealing_context(user_id: uuid.UUID) -> str:
    return f"totp/{user_id}"


async def accept(session: AsyncSession, user: User, secret: bytes, code: str) -> bool:
    """Spend a TOTP code or a recovery code of `user`; False when it is wrong or already spent."""
    step = matching_step(secret, code)
    if step is not None:
        spent = await session.scalar(
            update(User)
            .where(User.id == user.id, User.totp_last_step < step)
            .values(totp_last_step=step)
            .returning(User.id)
            .execution_options(synchronize_session=False)
        )
        return spent is not None
    hashed = hash_code(code)
    used = await session.scalar(
        update(User)
        .where(User.id == user.id, literal(hashed) == any_(User.recovery_codes))
        .values(recovery_codes=func.array_remove(User.recovery_codes, hashed))
        .returning(User.id)
        .execution_options(synchronize_session=False)
    )
    return used is not None
