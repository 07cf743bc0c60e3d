"""The local stack's outbox: mail a person reads as a file, tokens and all."""

from __future__ import annotations

import asyncio
import base64
import email
import os
import uuid
from email import policy
from pathlib import Path

from hishamos_identity import mail
from hishamos_identity.settings import IdentitySettings
from hishamos_kit.crypto import Sealer

TOKEN = "hose_" + "0123456789abcdef" * 2 + "_" + "Zq9" * 15  # as long as a real one: past 76 characters


def test_an_outbox_mail_shows_a_long_token_whole_and_reads_back_the_same(tmp_path: Path) -> None:
    settings = IdentitySettings(mail_outbox_dir=str(tmp_path), smtp_host="")
    sealer = Sealer(os.urandom(32))
    to, subject = "ada@example.test", "Your invitation to Café Ŧeam"
    body = f"Invitation token (valid for a week, once): {TOKEN}\nOpen https://example.test/accept?token={TOKEN}\n"
    sealed = sealer.seal(body.encode(), mail._context(to, subject))
    payload = {"to": to, "subject": subject, "body": base64.b64encode(sealed).decode()}
    job = uuid.uuid4()

    asyncio.run(mail.Mailer(settings, sealer).deliver(job, payload))

    raw = (tmp_path / f"{job}.eml").read_bytes()
    assert TOKEN.encode() in raw, "the token is on one line of the file, as a person copies it"
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert parsed.get_content() == body and parsed["subject"] == subject  # type: ignore[attr-defined]
    assert (tmp_path / f"{job}.eml").stat().st_mode & 0o077 == 0, "a mail with a live token is its owner's alone"
