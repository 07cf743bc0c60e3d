"""Signing up, signing in, and the keys that make every service trust a token."""

from __future__ import annotations

import json
import time
import uuid

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hishamos.identity.v1 import auth_pb2, organization_pb2, session_pb2, session_pb2_grpc
from hishamos.projects.v1 import project_pb2, project_pb2_grpc
from hishamos_devstack.stack import Stack
from hishamos_kit.auth import public_key_from_jwk
from hishamos_kit.crypto import Sealer, load_key
from tests.conftest import PASSWORD, Channels, Tenant, sign_up
from tests.db import superuser
from tests.errors import failure
from tests.identity.stubs import auth


def login(channels: Channels, slug: str, login: str, password: str) -> auth_pb2.LoginResponse:
    request = auth_pb2.LoginRequest(organization_slug=slug, login=login, password=password)
    return auth(channels).Login(request, timeout=30)


def test_sign_up_creates_an_admin_whose_token_works_in_other_services(channels: Channels, tenant: Tenant) -> None:
    projects = project_pb2_grpc.ProjectServiceStub(channels.direct("projects"))
    reply = projects.ListProjects(
        project_pb2.ListProjectsRequest(parent=tenant.organization), metadata=tenant.metadata, timeout=10
    )
    assert list(reply.projects) == []
    claims = jwt.decode(tenant.access_token, options={"verify_signature": False})
    assert claims["sub"] == tenant.user and claims["roles"] == ["admin"]
    assert f"organizations/{claims['org']}" == tenant.organization


def test_sign_up_rejects_bad_input_and_creates_nothing(channels: Channels) -> None:
    slug = f"org-{uuid.uuid4().hex[:10]}"
    bad = auth_pb2.SignUpRequest(
        organization_slug="No Spaces!",
        organization_display_name="",
        email="not-an-email",
        username="a",
        password="short",
        request_id="nope",
    )
    f = failure(lambda: auth(channels).SignUp(bad, timeout=30))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(f.violations) == {
        "organization_slug",
        "organization_display_name",
        "email",
        "username",
        "password",
        "request_id",
    }
    for weak in ("abcdefghijkl", "123456789012", "aaaaaaaaaa1!"):
        request = auth_pb2.SignUpRequest(
            organization_slug=slug, organization_display_name="X", email="a@b.test", username="abc", password=weak
        )
        assert set(failure(lambda r=request: auth(channels).SignUp(r, timeout=30)).violations) == {"password"}
    # Nothing was created: the slug is still free.
    sign_up(channels.direct("identity"), slug)


def test_taken_slug_is_already_exists(channels: Channels, tenant: Tenant) -> None:
    f = failure(lambda: sign_up(channels.direct("identity"), tenant.slug))
    assert f.code == grpc.StatusCode.ALREADY_EXISTS and f.metadata["field"] == "organization_slug"


def test_retried_sign_up_returns_the_first_organization_signed_in_afresh(channels: Channels) -> None:
    slug = f"org-{uuid.uuid4().hex[:10]}"
    request = auth_pb2.SignUpRequest(
        organization_slug=slug,
        organization_display_name="Retry Inc",
        email="first@retry.test",
        username="first",
        password=PASSWORD,
        request_id=str(uuid.uuid4()),
    )
    first = auth(channels).SignUp(request, timeout=30)
    again = auth(channels).SignUp(request, timeout=30)  # as a client whose first answer was lost
    assert again.organization == first.organization and again.user == first.user
    assert first.tokens.access_token and again.tokens.refresh_token not in ("", first.tokens.refresh_token)
    sessions = session_pb2_grpc.SessionServiceStub(channels.direct("identity"))
    metadata = (("authorization", f"Bearer {again.tokens.access_token}"),)
    listed = sessions.ListSessions(
        session_pb2.ListSessionsRequest(parent=first.user.name), metadata=metadata, timeout=10
    )
    assert len(listed.sessions) == 2
    # Credentials that no longer sign in get the first answer without tokens.
    changed = auth_pb2.SignUpRequest()
    changed.CopyFrom(request)
    changed.password = "not-the-password-9"
    assert not auth(channels).SignUp(changed, timeout=30).HasField("tokens")
    assert login(channels, slug, "first", PASSWORD).user.name == first.user.name
    # The same request_id with another organization is another sign-up, never the first one's answer.
    other_slug = f"other-{uuid.uuid4().hex[:8]}"
    other = auth_pb2.SignUpRequest()
    other.CopyFrom(request)
    other.organization_slug, other.email = other_slug, "someone@else.test"
    theirs = auth(channels).SignUp(other, timeout=30)
    assert theirs.organization.name != first.organization.name and theirs.organization.slug == other_slug
    assert theirs.user.email == "someone@else.test" and theirs.tokens.access_token


def test_login_by_email_or_username_returns_working_tokens(channels: Channels, tenant: Tenant) -> None:
    by_name = login(channels, tenant.slug, "admin", PASSWORD)
    by_email = login(channels, tenant.slug, f"ADMIN@{tenant.slug}.test", PASSWORD)
    assert by_name.user.name == by_email.user.name == tenant.user
    assert by_email.user.last_login_time.seconds > 0
    assert by_name.tokens.token_type == "Bearer" and by_name.tokens.expires_in == 900
    assert by_name.tokens.refresh_token.startswith("hosr_")
    assert by_name.tokens.refresh_token != by_email.tokens.refresh_token


def test_wrong_password_unknown_user_and_unknown_org_look_the_same(channels: Channels, tenant: Tenant) -> None:
    attempts = [
        (tenant.slug, "admin", "wrong-password-1"),
        (tenant.slug, "nobody", PASSWORD),
        ("no-such-org-here", "admin", PASSWORD),
    ]
    failures = [failure(lambda a=a: login(channels, *a)) for a in attempts]
    assert {(f.code, f.message, f.reason) for f in failures} == {
        (grpc.StatusCode.UNAUTHENTICATED, "wrong organization, login or password", "INVALID_CREDENTIALS")
    }


def test_login_requires_every_field(channels: Channels) -> None:
    f = failure(lambda: login(channels, "", "", ""))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(f.violations) == {"organization_slug", "login", "password"}


def test_jwks_verifies_issued_tokens(channels: Channels, tenant: Tenant) -> None:
    jwks = auth(channels).GetJwks(auth_pb2.GetJwksRequest(), timeout=10)
    keys = {k["kid"]: k for k in json.loads(jwks.jwks_json)["keys"]}
    assert {k.kid for k in jwks.keys} == set(keys)
    kid = jwt.get_unverified_header(tenant.access_token)["kid"]
    claims = jwt.decode(
        tenant.access_token,
        public_key_from_jwk(keys[kid]),
        algorithms=["EdDSA"],
        audience="hishamos",
        issuer="hishamos-identity",
    )
    assert claims["sub"] == tenant.user


def signing_key(stack: Stack) -> tuple[str, Ed25519PrivateKey]:
    """The active key, unsealed the way identity does it (tests alone may reach into the table)."""
    with superuser(stack, "identity") as conn:
        kid, sealed = conn.execute("select kid, private_key_sealed from signing_keys where active").fetchone()  # type: ignore[misc]
    sealer = Sealer(load_key(stack.secrets["identity_key_encryption_key"], "key"))
    return kid, Ed25519PrivateKey.from_private_bytes(sealer.open(sealed, kid))


def forged_tokens(stack: Stack, tenant: Tenant) -> dict[str, str]:
    kid, real_key = signing_key(stack)
    now = int(time.time())
    claims = jwt.decode(tenant.access_token, options={"verify_signature": False}) | {"iat": now, "exp": now + 600}

    def sign(key: Ed25519PrivateKey = real_key, headers: dict[str, str] | None = None, **changes: object) -> str:
        return jwt.encode({**claims, **changes}, key, algorithm="EdDSA", headers={"kid": kid, **(headers or {})})

    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})  # type: ignore[arg-type]
    return {
        "alg none": unsigned,
        "signed by another key": sign(Ed25519PrivateKey.generate()),
        "expired": sign(exp=now - 60, iat=now - 1000),
        "issued in the future": sign(iat=now + 600),
        "wrong audience": sign(aud="someone-else"),
        "wrong issuer": sign(iss="evil-identity"),
        "unknown kid": sign(headers={"kid": "no-such-key"}),
        "jku header": sign(headers={"jku": "https://evil.test/jwks.json"}),
        "no organization": jwt.encode(
            {k: v for k, v in claims.items() if k != "org"}, real_key, algorithm="EdDSA", headers={"kid": kid}
        ),
        "tampered payload": sign()[:-4] + "AAAA",
    }


@pytest.mark.parametrize("service", ["identity", "agents", "projects", "knowledge"])
def test_every_service_rejects_forged_tokens(stack: Stack, channels: Channels, tenant: Tenant, service: str) -> None:
    tokens = forged_tokens(stack, tenant)
    kid, real_key = signing_key(stack)
    method = {
        "identity": "/hishamos.identity.v1.OrganizationService/GetOrganization",
        "agents": "/hishamos.agents.v1.PlatformService/ListPlatforms",
        "projects": "/hishamos.projects.v1.ProjectService/ListProjects",
        "knowledge": "/hishamos.knowledge.v1.DocumentService/ListDocuments",
    }[service]
    request = (
        organization_pb2.GetOrganizationRequest(name=tenant.organization)
        if service == "identity"
        else project_pb2.ListProjectsRequest(parent=tenant.organization)
    )
    call = channels.direct(service).unary_unary(method, request_serializer=lambda m: m.SerializeToString())
    for label, token in tokens.items():
        f = failure(lambda t=token: call(request, metadata=(("authorization", f"Bearer {t}"),), timeout=10))
        assert f.code == grpc.StatusCode.UNAUTHENTICATED, label
    # What a caller does next is in the answer: no header; a header without its scheme; a key gone.
    for metadata, reason, hint in (
        ((), "CREDENTIALS_MISSING", "send `authorization: Bearer"),
        ((("authorization", tenant.access_token),), "CREDENTIALS_MALFORMED", "`authorization: Bearer <token>`"),
        ((("authorization", f"Bearer {tokens['unknown kid']}"),), "TOKEN_INVALID", "log in or refresh"),
        ((("authorization", f"Bearer {tenant.refresh_token}"),), "TOKEN_INVALID", "AuthService/RefreshToken"),
        ((("x-api-key", tenant.access_token),), "API_KEY_INVALID", "`authorization: Bearer <token>`"),
    ):
        f = failure(lambda m=metadata: call(request, metadata=m, timeout=10))  # type: ignore[misc]
        assert (f.code, f.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason) and hint in f.message, f.message
    # The control: a correctly signed token with the same claims is accepted, even from a clock a
    # few seconds ahead.
    good = jwt.encode(
        jwt.decode(tokens["wrong audience"], options={"verify_signature": False})
        | {"aud": "hishamos", "iat": int(time.time()) + 10},
        real_key,
        algorithm="EdDSA",
        headers={"kid": kid},
    )
    call(request, metadata=(("authorization", f"Bearer {good}"),), timeout=10)


def test_no_password_or_refresh_token_is_stored_in_plain(stack: Stack, tenant: Tenant) -> None:
    with superuser(stack, "identity") as conn:
        users = conn.execute("select password_hash from users where username = 'admin'").fetchall()
        tokens = conn.execute("select token_hash from refresh_tokens").fetchall()
        dump = str(conn.execute("select u.*, r.* from users u join refresh_tokens r on r.user_id = u.id").fetchall())
    assert users and all(h.startswith("$argon2id$v=19$m=19456,t=2,p=1$") for (h,) in users)
    assert tokens and all(len(h) == 64 for (h,) in tokens)
    assert PASSWORD not in dump and tenant.refresh_token not in dump and "hosr_" not in dump
