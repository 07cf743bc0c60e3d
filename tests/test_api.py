"""The API's own rules, checked over every RPC: each declares who may call it."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from hishamos_kit import api
from hishamos_kit.errors import InvalidArgument
from hishamos_kit.listing import Field, make_token, parse_filter, read_token
from hishamos_projects.projects import ProjectType

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
        "IssueOperatorToken",
    )
    signing_in = {f"AuthService.{m}" for m in credentials}
    assert public == signing_in | {"ApiKeyService.AuthenticateApiKey"}


def test_every_list_method_pages() -> None:
    """AIP-158: a List answering everything at once cannot start paging later without breaking its clients."""
    lists = [m for s in api.services() for m in s.methods if m.name.startswith("List")]
    assert len(lists) >= 15
    for method in lists:
        asked = {f.name for f in method.input_type.fields}
        answered = {f.name for f in method.output_type.fields}
        assert {"page_size", "page_token"} <= asked and "next_page_token" in answered, method.full_name


def test_hostile_list_parameters_are_invalid_argument_not_internal() -> None:
    """Filters and page tokens come from clients: every malformed one must be refused cleanly."""

    spec = ProjectType.list_spec
    for text in ("NOT " * 500 + 'slug = "a"', "(" * 100 + 'slug = "a"' + ")" * 100, "x" * 5000):
        with pytest.raises(InvalidArgument):
            parse_filter(text, spec.filter_fields)
    keys = [(spec.order_fields["display_name"], False), (spec.order_fields["create_time"], False)]
    keys.append((Field(spec.id_column), False))
    good = ["a", "2026-01-01T00:00:00+00:00", "00000000-0000-0000-0000-000000000000"]
    assert read_token(make_token(good, "fp"), "fp", keys)[0] == "a"
    forged = base64.urlsafe_b64encode(json.dumps({"k": good, "f": "fp"}).encode()).decode()
    wrong_types: list[list[Any]] = [
        [5, good[1], good[2]],
        [good[0], good[1], "x"],
        [{"a": 1}, good[1], good[2]],
        good[:2],
    ]
    for token in (forged, "garbage!", "", make_token(good, "other list"), *(make_token(v, "fp") for v in wrong_types)):
        with pytest.raises(InvalidArgument):
            read_token(token, "fp", keys)


def test_filters_read_every_aip_160_negation_and_refuse_times_beyond_the_calendar() -> None:
    fields = ProjectType.list_spec.filter_fields

    def sql(text: str) -> str:
        condition = parse_filter(text, fields)
        assert condition is not None
        return str(condition.compile(compile_kwargs={"literal_binds": True}))

    negated = sql('NOT slug = "a"')
    assert sql('-slug = "a"') == sql('- slug = "a"') == sql('-(slug = "a")') == negated != sql('slug = "a"')
    assert "NOT" not in sql("slug = -slug")  # a value that looks like a negated field is a value
    # An offset that carries an instant past year 1 or 9999 is a bad filter, not a server error.
    for instant in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        with pytest.raises(InvalidArgument):
            parse_filter(f'create_time > "{instant}"', fields)
