"""The API's own rules, checked over every RPC: each declares who may call it."""

from __future__ import annotations

import re

from hishamos_kit import api

PERMISSION = re.compile(r"^(?P<context>[a-z]+)\.[a-z_]+\.[a-z_]+$")


def test_every_rpc_declares_a_permission_of_its_own_context_or_is_public() -> None:
    methods = [(s, m) for s in api.services() for m in s.methods]
    assert len(methods) >= 20
    for service, method in methods:
        declared = api.authorization(f"/{service.full_name}/{method.name}")
        if declared.public:
            assert not declared.permission
            continue
        match = PERMISSION.match(declared.permission)
        assert match, f"{method.full_name}: {declared.permission!r} is not <context>.<resource>.<verb>"
        assert match["context"] == service.full_name.split(".")[1], method.full_name


def test_only_credentials_checks_are_public() -> None:
    public = {
        f"{s.name}.{m.name}"
        for s in api.services()
        for m in s.methods
        if api.authorization(f"/{s.full_name}/{m.name}").public
    }
    credentials = (
        "SignUp",
        "Login",
        "RefreshToken",
        "Logout",
        "GetJwks",
        "RequestPasswordReset",
        "ResetPassword",
        "VerifyEmail",
        "IssueServiceToken",
    )
    signing_in = {f"AuthService.{m}" for m in credentials}
    assert public == signing_in | {"ApiKeyService.AuthenticateApiKey"}
