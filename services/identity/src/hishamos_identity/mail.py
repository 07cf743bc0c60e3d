"""Outgoing mail: SMTP when a server is configured, otherwise .eml files in an outbox directory.

A message is a job (hishamos_kit.jobs) written in the transaction that issues what it carries, so
a reset token and the mail that delivers it exist together or not at all, and a mail server that
is down only delays it. Its body is sealed in the queue: it may hold a token, and no token is
stored in plaintext.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hishamos_identity.models import Job
from hishamos_identity.settings import IdentitySettings
from hishamos_kit import jobs
from hishamos_kit.crypto import Sealer

log = logging.getLogger("hishamos.mail")

KIND = "mail"


class Mailer:
    def __init__(self, settings: IdentitySettings, sealer: Sealer) -> None:
        # Refused at start: otherwise every invitation and reset would be accepted, then fail for hours.
        if not settings.smtp_host and not settings.mail_outbox_dir:
            raise SystemExit(
                "identity sends mail (invitations, password resets): set HISHAMOS_IDENTITY_SMTP_HOST, or "
                "HISHAMOS_IDENTITY_MAIL_OUTBOX_DIR to write each mail to a file there"
            )
        self._settings = settings
        self._sealer = sealer

    async def enqueue(
        self,
        session: AsyncSession,
        organization_id: uuid.UUID,
        to: str,
        subject: str,
        body: str,
        key: str = "",
        until: datetime | None = None,
    ) -> None:
        """Send once the caller's transaction commits; the caller never waits for the mail server,
        and an organization's mail takes turns with the others'. With a `key`, once per key (a job
        that mails, run again); with `until`, not after then (the token it carries has expired: the
        mail would only mislead)."""
        # A subject is one line: a line break in what it quotes (an organization's name, say) would
        # make every delivery fail, and is no way to add a header.
        subject = " ".join(subject.split())
        sealed = self._sealer.seal(body.encode(), _context(to, subject))
        payload = {"to": to, "subject": subject, "body": base64.b64encode(sealed).decode()}
        if until is not None:
            payload["until"] = until.isoformat()
        await jobs.enqueue(session, Job, KIND, payload, tenant=str(organization_id), key=key)

    async def sent_by(self, session: AsyncSession, key: str) -> bool:
        """Whether the mail enqueued under `key` exists: the job that wrote it, run again after a
        crash, has nothing left to do."""
        found = await session.scalar(select(Job.id).where(Job.kind == KIND, Job.key == key))
        return found is not None

    async def deliver(self, job_id: uuid.UUID, payload: dict[str, Any]) -> None:
        """The job handler. A failure raises, and the queue retries later."""
        if "until" in payload and datetime.fromisoformat(payload["until"]) <= datetime.now(UTC):
            log.warning("mail dropped unsent: what it carries has expired", extra={"fields": {"job": str(job_id)}})
            return
        s = self._settings
        message = EmailMessage()
        message["From"] = s.mail_from
        message["To"] = payload["to"]
        message["Subject"] = payload["subject"]
        message["Message-ID"] = f"<{job_id}@hishamos>"  # the same on a repeat, so a receiver can tell
        body = self._sealer.open(base64.b64decode(payload["body"]), _context(payload["to"], payload["subject"]))
        if s.smtp_host:
            message.set_content(body.decode())  # 7-bit safe for any relay; mail clients decode it
            await aiosmtplib.send(message, hostname=s.smtp_host, port=s.smtp_port, timeout=10)
        else:
            # Read as a file by a person: plain UTF-8, where quoted-printable would cut a token in two.
            message.set_content(body.decode(), cte="8bit")
            await asyncio.to_thread(_write, Path(s.mail_outbox_dir) / f"{job_id}.eml", bytes(message))


def _context(to: str, subject: str) -> str:
    return f"mail\0{to}\0{subject}"


def _write(path: Path, message: bytes) -> None:
    """Readable by the stack's own user only: a mail carries live reset and invitation tokens."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
        file.write(message)
