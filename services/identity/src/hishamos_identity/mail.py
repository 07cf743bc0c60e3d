"""Outgoing mail: SMTP when a server is configured, otherwise .eml files in an outbox directory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from hishamos_identity.settings import IdentitySettings
from hishamos_kit.errors import Unavailable

log = logging.getLogger("hishamos.mail")


class Mailer:
    def __init__(self, settings: IdentitySettings) -> None:
        self._settings = settings
        self._pending: set[asyncio.Task[None]] = set()

    async def send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self._settings.mail_from
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        s = self._settings
        if s.smtp_host:
            try:
                await aiosmtplib.send(message, hostname=s.smtp_host, port=s.smtp_port, timeout=10)
            except (aiosmtplib.SMTPException, OSError) as exc:
                log.warning("mail not sent", extra={"fields": {"error_type": type(exc).__name__}})
                raise Unavailable("mail could not be sent; try again later", "MAIL_UNAVAILABLE") from None
        elif s.mail_outbox_dir:
            await asyncio.to_thread(_write, Path(s.mail_outbox_dir), bytes(message))
        else:
            raise Unavailable(
                "no mail transport: set HISHAMOS_IDENTITY_SMTP_HOST or _MAIL_OUTBOX_DIR", "MAIL_UNCONFIGURED"
            )

    def send_later(self, to: str, subject: str, body: str) -> None:
        """Send without making the caller wait, so the answer's timing tells nothing."""

        async def deliver() -> None:
            with contextlib.suppress(Unavailable):  # logged by send; the requester may ask again
                await self.send(to, subject, body)

        task = asyncio.get_running_loop().create_task(deliver())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


def _write(outbox: Path, message: bytes) -> None:
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / f"{uuid.uuid4()}.eml").write_bytes(message)
