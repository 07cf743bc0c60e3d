"""One real stack per test session: embedded PostgreSQL, the four services and Envoy on free ports."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

import grpc
import pytest
from aiosmtpd.controller import Controller

from hishamos.identity.v1 import auth_pb2, auth_pb2_grpc
from hishamos_devstack.stack import Ports, Stack, free_port


class Mailbox:
    """A real SMTP server on loopback (aiosmtpd) that keeps what identity sends."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[EmailMessage] = []
        self.refusing = False  # answer as a mail server that is having trouble does
        self.refused = 0

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        if self.refusing:
            self.refused += 1
            return "451 4.3.0 try again later"
        self.messages.append(message_from_bytes(envelope.content, _class=EmailMessage, policy=default))  # type: ignore[arg-type]
        return "250 OK"

    def wait_for(self, to: str, timeout: float = 10.0) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                if message["To"] == to:
                    self.messages.remove(message)
                    return message
            time.sleep(0.05)
        raise AssertionError(f"no mail to {to}")


@pytest.fixture(scope="session")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox(free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    yield box
    controller.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox) -> Iterator[Stack]:
    # Identity mails through the loopback SMTP server, as it would through a real one.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HISHAMOS_IDENTITY_SMTP_HOST", "127.0.0.1")
        env.setenv("HISHAMOS_IDENTITY_SMTP_PORT", str(mailbox.port))
        # Key rotation shows within seconds rather than the production minutes.
        env.setenv("HISHAMOS_IDENTITY_KEYS_REFRESH_SECONDS", "1")
        for service in ("IDENTITY", "AGENTS", "PROJECTS", "KNOWLEDGE"):
            env.setenv(f"HISHAMOS_{service}_JWKS_CACHE_SECONDS", "2")
            env.setenv(f"HISHAMOS_{service}_RETENTION_SECONDS", "2")  # each service's own passes show in tests
        with Stack(tmp_path_factory.mktemp("stack"), Ports.free(), progress=lambda _: None) as running:
            yield running


@dataclass
class Channels:
    stack: Stack
    opened: list[grpc.Channel]

    def direct(self, service: str) -> grpc.Channel:
        return self._open(f"127.0.0.1:{self.stack.ports.services[service]}")

    def envoy(self) -> grpc.Channel:
        return self._open(f"127.0.0.1:{self.stack.ports.envoy}")

    def _open(self, target: str) -> grpc.Channel:
        channel = grpc.insecure_channel(target)
        self.opened.append(channel)
        return channel


@pytest.fixture(scope="session")
def channels(stack: Stack) -> Iterator[Channels]:
    opened: list[grpc.Channel] = []
    yield Channels(stack, opened)
    for channel in opened:
        channel.close()


@dataclass
class Tenant:
    """An organization signed up for one test, with its admin's credentials."""

    organization: str  # organizations/{id}
    slug: str
    user: str
    username: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.access_token}"),)


PASSWORD = "correct-horse-42"


def sign_up(channel: grpc.Channel, slug: str | None = None) -> Tenant:
    slug = slug or f"org-{uuid.uuid4().hex[:12]}"
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    reply = stub.SignUp(
        auth_pb2.SignUpRequest(
            organization_slug=slug,
            organization_display_name=f"Org {slug}",
            email=f"admin@{slug}.test",
            username="admin",
            password=PASSWORD,
            full_name="Ada Admin",
        ),
        timeout=30,
    )
    return Tenant(
        organization=reply.organization.name,
        slug=slug,
        user=reply.user.name,
        username="admin",
        password=PASSWORD,
        access_token=reply.tokens.access_token,
        refresh_token=reply.tokens.refresh_token,
    )


def add_user(channels: Channels, admin: Tenant, *roles: str, username: str | None = None) -> Tenant:
    """A new user of `admin`'s organization holding `roles`, signed in."""
    from hishamos.identity.v1 import user_pb2, user_pb2_grpc

    username = username or f"user-{uuid.uuid4().hex[:8]}"
    created = (
        user_pb2_grpc.UserServiceStub(channels.direct("identity"))
        .CreateUser(
            user_pb2.CreateUserRequest(
                parent=admin.organization,
                user=user_pb2.User(email=f"{username}@{admin.slug}.test", username=username),
                password=PASSWORD,
                roles=list(roles),
            ),
            metadata=admin.metadata,
            timeout=30,
        )
        .user
    )
    tokens = (
        auth_pb2_grpc.AuthServiceStub(channels.direct("identity"))
        .Login(auth_pb2.LoginRequest(organization_slug=admin.slug, login=username, password=PASSWORD), timeout=30)
        .tokens
    )
    return Tenant(
        admin.organization, admin.slug, created.name, username, PASSWORD, tokens.access_token, tokens.refresh_token
    )


@pytest.fixture
def tenant(channels: Channels) -> Tenant:
    return sign_up(channels.direct("identity"))


@pytest.fixture
def other_tenant(channels: Channels) -> Tenant:
    return sign_up(channels.direct("identity"))


@dataclass
class Operator:
    """A platform operator's token (AuthService.IssueOperatorToken)."""

    access_token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.access_token}"),)


def operator_credential(stack: Stack) -> tuple[tuple[str, str], ...]:
    """The local stack's operator credential, as `make up` configures it from secrets.json."""
    return (("x-operator-credential", f"operator:{stack.secrets['operator']}"),)


@pytest.fixture
def operator(channels: Channels) -> Operator:
    reply = auth_pb2_grpc.AuthServiceStub(channels.direct("identity")).IssueOperatorToken(
        auth_pb2.IssueOperatorTokenRequest(), metadata=operator_credential(channels.stack), timeout=10
    )
    return Operator(reply.access_token)


def set_quotas(channels: Channels, operator: Operator, organization: str, **quotas: int) -> Any:
    """Set an organization's quotas as an operator; returns the organization."""
    from hishamos.identity.v1 import organization_pb2, organization_pb2_grpc

    request = organization_pb2.SetOrganizationQuotasRequest(name=organization, **quotas)  # type: ignore[arg-type]
    stub = organization_pb2_grpc.OrganizationServiceStub(channels.direct("identity"))
    return stub.SetOrganizationQuotas(request, metadata=operator.metadata, timeout=10).organization
