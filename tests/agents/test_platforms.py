from __future__ import annotations

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from hishamos.agents.v1 import platform_pb2 as pb
from hishamos.agents.v1 import platform_pb2_grpc
from hishamos_devstack.stack import Stack
from tests.conftest import Channels, Tenant
from tests.db import superuser
from tests.errors import failure
from tests.standard import Case, StandardMethodsContract

SECRET = "sk-live-abcdefghijklmnopqrstuvwxyz0123"

PLATFORMS = Case(
    service="agents",
    pb=pb,
    stub=platform_pb2_grpc.PlatformServiceStub,
    kind="Platform",
    field="platform",
    plural="platforms",
    valid=lambda i: pb.Platform(
        display_name=f"OpenAI {i}",
        provider=pb.Platform.PROVIDER_OPENAI,
        default_model="gpt-4o-mini",
        base_url="https://api.openai.test/v1",
        api_key=SECRET,
        priority=i,
        input_price_per_million=0.15,
        output_price_per_million=0.6,
    ),
    invalid=lambda: pb.Platform(
        display_name="",
        default_model="",
        base_url="file:///etc/passwd",
        priority=5000,
        rate_limit_per_minute=-1,
        input_price_per_million=float("nan"),
    ),
    invalid_fields={
        "platform.display_name",
        "platform.provider",
        "platform.default_model",
        "platform.base_url",
        "platform.priority",
        "platform.rate_limit_per_minute",
        "platform.input_price_per_million",
    },
    update=("default_model", "gpt-4.1"),
    unique_field="display_name",
    filter_true=lambda p: f"priority = {p.priority} AND provider = PROVIDER_OPENAI",
)


class TestPlatformStandardMethods(StandardMethodsContract):
    case = PLATFORMS


def test_api_key_is_sealed_and_only_its_hint_returned(stack: Stack, channels: Channels, tenant: Tenant) -> None:
    api = platform_pb2_grpc.PlatformServiceStub(channels.direct("agents"))
    created = api.CreatePlatform(
        pb.CreatePlatformRequest(parent=tenant.organization, platform=PLATFORMS.valid(0)),
        metadata=tenant.metadata,
        timeout=10,
    ).platform
    assert created.api_key == "" and created.api_key_hint == "sk-…0123"
    assert created.enabled, "a platform is enabled unless the request says otherwise"
    with superuser(stack, "agents") as conn:
        rows = conn.execute("select * from platforms").fetchall()
    assert (
        rows
        and SECRET not in str(rows)
        and SECRET.encode() not in b"".join(bytes(v) for row in rows for v in row if isinstance(v, bytes | memoryview))
    )
    rotated = pb.Platform(name=created.name, api_key="sk-new-key-0000000009")
    updated = api.UpdatePlatform(
        pb.UpdatePlatformRequest(platform=rotated, update_mask=FieldMask(paths=["api_key"])),
        metadata=tenant.metadata,
        timeout=10,
    ).platform
    assert updated.api_key_hint == "sk-…0009" and updated.display_name == created.display_name


def test_unknown_provider_value_is_rejected(channels: Channels, tenant: Tenant) -> None:
    api = platform_pb2_grpc.PlatformServiceStub(channels.direct("agents"))
    platform = PLATFORMS.valid(0)
    platform.provider = 99  # type: ignore[assignment]
    request = pb.CreatePlatformRequest(parent=tenant.organization, platform=platform)
    f = failure(lambda: api.CreatePlatform(request, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"platform.provider"}


def test_odd_values_are_field_violations_and_answers_match_reads(channels: Channels, tenant: Tenant) -> None:
    api = platform_pb2_grpc.PlatformServiceStub(channels.direct("agents"))

    def create(i: int, **fields: object) -> pb.Platform:
        platform = PLATFORMS.valid(i)
        for key, value in fields.items():
            setattr(platform, key, value)
        request = pb.CreatePlatformRequest(parent=tenant.organization, platform=platform)
        return api.CreatePlatform(request, metadata=tenant.metadata, timeout=10).platform

    refused = [
        ("platform.input_price_per_million", {"input_price_per_million": 1e22}),
        ("platform.output_price_per_million", {"output_price_per_million": -1e300}),
        ("platform.base_url", {"base_url": "https://bob:secret@proxy.test/v1"}),
        ("platform.base_url", {"base_url": "https://proxy.test/v1?key=AIzaSECRET"}),
        ("platform.base_url", {"base_url": "https://proxy.test/v1\x00x"}),
        ("platform.api_key", {"api_key": "\x00\x00abcdefghijklmnopq"}),
        ("platform.api_key", {"api_key": "sk-abcdefghijklmnop\r\nX-Evil: 1"}),  # a header of its own
        # No HTTP header holds these: each call to the provider would fail, not this one.
        ("platform.api_key", {"api_key": "sk-abcdefghijklmnop\x85q"}),
        ("platform.api_key", {"api_key": "sk-abcdefghijklmnop\u2028q"}),
        ("platform.api_key", {"api_key": "sk-ключ-abcdefghijklmnop"}),
        ("platform.api_key", {"api_key": "sk-abcdefghij klmnop"}),
        ("platform.base_url", {"base_url": "https://api.test:99999/v1"}),
        ("platform.base_url", {"base_url": "https://:443/v1"}),
        ("platform.base_url", {"base_url": "https://exa mple.com/v1"}),
    ]
    for i, (field, fields) in enumerate(refused, start=100):
        f = failure(lambda i=i, fields=fields: create(i, **fields))
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {field}, (fields, f)
    # A short key is shown as nothing of it.
    assert create(200, api_key="abc").api_key_hint == "…"
    # -0.0 is stored as 0: the answer says what a read will.
    made = create(201, input_price_per_million=-0.0)
    got = api.GetPlatform(pb.GetPlatformRequest(name=made.name), metadata=tenant.metadata, timeout=10).platform
    assert made == got and str(made.input_price_per_million) == "0.0"
    # `enabled` named but unset is its default, true (AIP-134).
    off = create(202, enabled=False)
    mask = FieldMask(paths=["enabled"])
    named = pb.UpdatePlatformRequest(platform=pb.Platform(name=off.name), update_mask=mask)
    reset = api.UpdatePlatform(named, metadata=tenant.metadata, timeout=10).platform
    assert not off.enabled and reset.enabled


def test_a_stored_key_is_neither_cleared_by_a_full_update_nor_sent_elsewhere_unseen(
    channels: Channels, tenant: Tenant
) -> None:
    api = platform_pb2_grpc.PlatformServiceStub(channels.direct("agents"))
    request = pb.CreatePlatformRequest(parent=tenant.organization, platform=PLATFORMS.valid(300))
    made = api.CreatePlatform(request, metadata=tenant.metadata, timeout=10).platform
    # Read, edit, write back with `*`: the key, which no read shows, stays.
    edited = pb.Platform()
    edited.CopyFrom(made)
    edited.priority = 7
    everything = FieldMask(paths=["*"])
    kept = api.UpdatePlatform(
        pb.UpdatePlatformRequest(platform=edited, update_mask=everything), metadata=tenant.metadata
    )
    assert kept.platform.priority == 7 and kept.platform.api_key_hint == made.api_key_hint
    # A blank key (a form's empty field) is no key sent: `*` keeps the stored one.
    edited.CopyFrom(kept.platform)
    edited.api_key = "   "
    blank = api.UpdatePlatform(
        pb.UpdatePlatformRequest(platform=edited, update_mask=everything), metadata=tenant.metadata
    )
    assert blank.platform.api_key_hint == made.api_key_hint
    # So does an update without a mask, which takes the fields set: a blank key is not one of them.
    unmasked = pb.Platform(name=made.name, api_key="   ", priority=8)
    kept = api.UpdatePlatform(pb.UpdatePlatformRequest(platform=unmasked), metadata=tenant.metadata, timeout=10)
    assert kept.platform.priority == 8 and kept.platform.api_key_hint == made.api_key_hint
    # Pointing the platform elsewhere needs the key sent again.
    moved = pb.Platform(name=made.name, base_url="http://169.254.169.254/latest")
    mask = FieldMask(paths=["base_url"])
    move = pb.UpdatePlatformRequest(platform=moved, update_mask=mask)
    f = failure(lambda: api.UpdatePlatform(move, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and set(f.violations) == {"platform.api_key"}
    moved.api_key = "sk-proxy-key-000000042"
    both = pb.UpdatePlatformRequest(platform=moved, update_mask=FieldMask(paths=["base_url", "api_key"]))
    assert api.UpdatePlatform(both, metadata=tenant.metadata, timeout=10).platform.api_key_hint == "sk-…0042"
