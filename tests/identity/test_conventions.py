"""Identity's methods against the AIPs' conventions and the proto's own comments: etags move with every
visible change, immutable fields, request ids, required fields and names as in every other method."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from hishamos.identity.v1 import (
    api_key_pb2,
    audit_pb2,
    audit_pb2_grpc,
    auth_pb2,
    organization_pb2,
    role_pb2,
    user_pb2,
)
from hishamos_identity import totp
from tests.conftest import PASSWORD, Channels, Mailbox, Tenant, add_user
from tests.errors import failure
from tests.identity.stubs import MAILED_TOKEN, auth, keys, orgs, roles, users


def get_user(channels: Channels, tenant: Tenant, name: str) -> user_pb2.User:
    return users(channels).GetUser(user_pb2.GetUserRequest(name=name), metadata=tenant.metadata, timeout=10).user


# --- etags must change with every change visible in the resource (AIP-154) ---------------------------------


def test_disable_totp_changes_the_users_etag(channels: Channels, tenant: Tenant) -> None:
    member = add_user(channels, tenant, "developer")
    api = users(channels)
    enrolled = api.EnrollTotp(user_pb2.EnrollTotpRequest(name=member.user), metadata=member.metadata, timeout=10)
    secret = base64.b32decode(enrolled.secret + "=" * (-len(enrolled.secret) % 8))
    confirm = user_pb2.ConfirmTotpRequest(
        name=member.user, code=totp.code_at(secret, totp.current_step()), password=PASSWORD
    )
    api.ConfirmTotp(confirm, metadata=member.metadata, timeout=30)
    before = get_user(channels, tenant, member.user)
    assert before.totp_enabled
    api.DisableTotp(
        user_pb2.DisableTotpRequest(name=member.user, password=PASSWORD), metadata=member.metadata, timeout=30
    )
    after = get_user(channels, tenant, member.user)
    assert not after.totp_enabled  # a visible field changed ...
    assert after.etag != before.etag, "totp_enabled changed but the etag did not (AIP-154)"
    # ... so an update made with the etag read before must be refused
    stale = user_pb2.User(name=member.user, etag=before.etag, full_name="decided on stale data")
    request = user_pb2.UpdateUserRequest(user=stale, update_mask=FieldMask(paths=["full_name"]))
    f = failure(lambda: api.UpdateUser(request, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.ABORTED


def test_deleting_a_role_changes_its_holders_etag(channels: Channels, tenant: Tenant) -> None:
    role = role_pb2.Role(display_name="Readers", permissions=["identity.users.get"])
    made = (
        roles(channels)
        .CreateRole(
            role_pb2.CreateRoleRequest(parent=tenant.organization, role=role, role_id="readers"),
            metadata=tenant.metadata,
            timeout=10,
        )
        .role
    )
    member = add_user(channels, tenant, "viewer")
    roles(channels).AssignRole(
        role_pb2.AssignRoleRequest(user=member.user, role=made.name), metadata=tenant.metadata, timeout=10
    )
    before = get_user(channels, tenant, member.user)
    assert "readers" in before.roles
    # DeleteRole takes an etag too (AIP-135): one read before the role changed deletes nothing.
    edited = role_pb2.Role(name=made.name, display_name="Readers and more")
    update = role_pb2.UpdateRoleRequest(role=edited, update_mask=FieldMask(paths=["display_name"]))
    roles(channels).UpdateRole(update, metadata=tenant.metadata, timeout=10)
    stale = role_pb2.DeleteRoleRequest(name=made.name, etag=made.etag)
    f = failure(lambda: roles(channels).DeleteRole(stale, metadata=tenant.metadata, timeout=10))
    assert f.code == grpc.StatusCode.ABORTED and "readers" in get_user(channels, tenant, member.user).roles
    roles(channels).DeleteRole(role_pb2.DeleteRoleRequest(name=made.name), metadata=tenant.metadata, timeout=10)
    after = get_user(channels, tenant, member.user)
    assert "readers" not in after.roles  # the user's roles changed ...
    assert after.etag != before.etag, "the user's roles changed but the etag did not (AIP-154)"
    assert after.update_time != before.update_time, "the user's roles changed but update_time did not"


def test_accepting_an_invitation_changes_the_users_etag(channels: Channels, mailbox: Mailbox, tenant: Tenant) -> None:
    email = f"inv-{uuid.uuid4().hex[:8]}@{tenant.slug}.test"
    invite = user_pb2.CreateUserRequest(
        parent=tenant.organization, user=user_pb2.User(email=email, username=f"inv-{uuid.uuid4().hex[:8]}")
    )
    invited = users(channels).CreateUser(invite, metadata=tenant.metadata, timeout=30).user
    token = MAILED_TOKEN.search(mailbox.wait_for(email).get_content())
    assert token
    before = get_user(channels, tenant, invited.name)
    assert not before.email_verified
    auth(channels).ResetPassword(
        auth_pb2.ResetPasswordRequest(token=token[0], new_password="my-own-choice-77"), timeout=30
    )
    after = get_user(channels, tenant, invited.name)
    assert after.email_verified  # a visible field changed ...
    assert after.etag != before.etag, "email_verified changed but the etag did not (AIP-154)"


def test_change_password_moves_update_time_and_etag_together(channels: Channels, tenant: Tenant) -> None:
    member = add_user(channels, tenant, "developer")
    before = get_user(channels, tenant, member.user)
    users(channels).ChangePassword(
        user_pb2.ChangePasswordRequest(name=member.user, current_password=PASSWORD, new_password="another-pass-99"),
        metadata=member.metadata,
        timeout=30,
    )
    after = get_user(channels, tenant, member.user)
    assert after.update_time != before.update_time  # the resource says it changed ...
    assert after.etag != before.etag, "update_time moved but the etag did not (AIP-154)"


# --- IMMUTABLE fields (AIP-203): ignored when unchanged, INVALID_ARGUMENT when a change is asked ----------


def test_update_organization_refuses_a_changed_immutable_slug(channels: Channels, tenant: Tenant) -> None:
    org = (
        orgs(channels)
        .GetOrganization(
            organization_pb2.GetOrganizationRequest(name=tenant.organization), metadata=tenant.metadata, timeout=10
        )
        .organization
    )
    changed = organization_pb2.Organization()
    changed.CopyFrom(org)
    changed.slug = "a-new-slug-" + uuid.uuid4().hex[:6]
    changed.display_name = "Renamed"
    request = organization_pb2.UpdateOrganizationRequest(organization=changed)  # no mask: every field set
    try:
        reply = orgs(channels).UpdateOrganization(request, metadata=tenant.metadata, timeout=10).organization
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        return
    raise AssertionError(f"a change of the immutable slug was silently dropped (slug stayed {reply.slug!r})")


def test_update_organization_accepts_an_unchanged_immutable_slug_in_the_mask(
    channels: Channels, tenant: Tenant
) -> None:
    change = organization_pb2.Organization(name=tenant.organization, slug=tenant.slug, display_name="Same slug")
    request = organization_pb2.UpdateOrganizationRequest(
        organization=change, update_mask=FieldMask(paths=["display_name", "slug"])
    )
    reply = orgs(channels).UpdateOrganization(request, metadata=tenant.metadata, timeout=10).organization
    assert reply.display_name == "Same slug" and reply.slug == tenant.slug


def _key(channels: Channels, tenant: Tenant, expires: datetime) -> api_key_pb2.ApiKey:
    stamp = Timestamp()
    stamp.FromDatetime(expires)
    key = api_key_pb2.ApiKey(display_name="ci", scopes=["identity.users.get"], expire_time=stamp)
    return (
        keys(channels)
        .CreateApiKey(
            api_key_pb2.CreateApiKeyRequest(parent=tenant.organization, api_key=key),
            metadata=tenant.metadata,
            timeout=10,
        )
        .api_key
    )


def test_update_api_key_refuses_a_changed_immutable_expiry(channels: Channels, tenant: Tenant) -> None:
    key = _key(channels, tenant, datetime.now(UTC).replace(microsecond=0) + timedelta(days=1))
    changed = api_key_pb2.ApiKey()
    changed.CopyFrom(key)
    changed.display_name = "renamed"
    changed.expire_time.seconds += 365 * 86400
    request = api_key_pb2.UpdateApiKeyRequest(api_key=changed)  # no mask: every field set
    try:
        reply = keys(channels).UpdateApiKey(request, metadata=tenant.metadata, timeout=10).api_key
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        return
    raise AssertionError(f"a change of the immutable expire_time was silently dropped ({reply.expire_time})")


def test_update_api_key_accepts_an_unchanged_immutable_expiry_in_the_mask(channels: Channels, tenant: Tenant) -> None:
    key = _key(channels, tenant, datetime.now(UTC).replace(microsecond=0) + timedelta(days=1))
    change = api_key_pb2.ApiKey(name=key.name, display_name="renamed", expire_time=key.expire_time)
    request = api_key_pb2.UpdateApiKeyRequest(
        api_key=change, update_mask=FieldMask(paths=["display_name", "expire_time"])
    )
    reply = keys(channels).UpdateApiKey(request, metadata=tenant.metadata, timeout=10).api_key
    assert reply.display_name == "renamed" and reply.expire_time == key.expire_time


# --- resource names (AIP-122/193): malformed is INVALID_ARGUMENT, as for every other collection --------------


def test_role_name_with_a_malformed_organization_is_invalid_argument(channels: Channels, tenant: Tenant) -> None:
    # Every other identity name with a non-UUID id is INVALID_ARGUMENT (ResourcePath.parse).
    user = failure(
        lambda: users(channels).GetUser(
            user_pb2.GetUserRequest(name="organizations/not-a-uuid/users/x"), metadata=tenant.metadata, timeout=10
        )
    )
    assert user.code == grpc.StatusCode.INVALID_ARGUMENT
    f = failure(
        lambda: roles(channels).GetRole(
            role_pb2.GetRoleRequest(name="organizations/not-a-uuid/roles/admin"), metadata=tenant.metadata, timeout=10
        )
    )
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "name" in f.violations, (f.code, f.reason)


def test_role_name_spelling_the_own_organization_like_other_names_is_found(channels: Channels, tenant: Tenant) -> None:
    # GetUser accepts the organization's UUID in any spelling uuid.UUID reads; GetRole does not.
    org_id = tenant.organization.split("/")[1]
    user = get_user(channels, tenant, f"organizations/{org_id.upper()}/users/{tenant.user.split('/')[-1]}")
    assert user.name == tenant.user
    request = role_pb2.GetRoleRequest(name=f"organizations/{org_id.upper()}/roles/admin")
    reply = roles(channels).GetRole(request, metadata=tenant.metadata, timeout=10)
    assert reply.role.name.endswith("/roles/admin")


# --- request_id (AIP-155): a retry is recognised whatever the spelling the kit treats as the same -----------


def test_sign_up_retry_with_the_request_id_upper_cased_returns_the_first_result(channels: Channels) -> None:
    slug = f"org-{uuid.uuid4().hex[:12]}"
    request_id = str(uuid.uuid4())
    request = auth_pb2.SignUpRequest(
        organization_slug=slug,
        organization_display_name="Retry Co",
        email=f"admin@{slug}.test",
        username="admin",
        password=PASSWORD,
        request_id=request_id,
    )
    first = auth(channels).SignUp(request, timeout=30)
    request.request_id = request_id.upper()  # resources.request_key: "still the same request"
    again = auth(channels).SignUp(request, timeout=30)
    assert again.organization.name == first.organization.name


# --- REQUIRED request fields (AIP-203): missing is INVALID_ARGUMENT naming each field ----------------------


def test_missing_required_refresh_token_is_invalid_argument(channels: Channels) -> None:
    for call in (
        lambda: auth(channels).RefreshToken(auth_pb2.RefreshTokenRequest(), timeout=10),
        lambda: auth(channels).Logout(auth_pb2.LogoutRequest(), timeout=10),
    ):
        f = failure(call)
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "refresh_token" in f.violations, (f.code, f.reason)


def test_missing_required_api_key_is_invalid_argument(channels: Channels) -> None:
    f = failure(lambda: keys(channels).AuthenticateApiKey(api_key_pb2.AuthenticateApiKeyRequest(), timeout=10))
    assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "key" in f.violations, (f.code, f.reason)


def test_every_missing_required_field_is_reported_at_once(channels: Channels, tenant: Tenant) -> None:
    f = failure(lambda: auth(channels).ResetPassword(auth_pb2.ResetPasswordRequest(), timeout=10))
    assert {"token", "new_password"} <= set(f.violations), f.violations
    f = failure(lambda: roles(channels).AssignRole(role_pb2.AssignRoleRequest(), metadata=tenant.metadata, timeout=10))
    assert {"user", "role"} <= set(f.violations), f.violations


# --- proto comments ----------------------------------------------------------------------------------------


def test_granting_a_role_already_held_changes_nothing_not_even_the_audit_log(
    channels: Channels, tenant: Tenant
) -> None:
    """role.proto: "Granting a role already held changes nothing", the audit log included."""

    member = add_user(channels, tenant, "viewer")
    audit = audit_pb2_grpc.AuditServiceStub(channels.direct("identity"))
    listed = audit_pb2.ListAuditEventsRequest(
        parent=tenant.organization, filter=f'action = "role.assigned" AND target = "{member.user}"'
    )

    def grants() -> int:
        return len(audit.ListAuditEvents(listed, metadata=tenant.metadata, timeout=10).audit_events)

    before_user = get_user(channels, tenant, member.user)
    before = grants()
    viewer = f"{tenant.organization}/roles/viewer"
    roles(channels).AssignRole(
        role_pb2.AssignRoleRequest(user=member.user, role=viewer), metadata=tenant.metadata, timeout=10
    )
    assert get_user(channels, tenant, member.user).etag == before_user.etag  # nothing changed on the user ...
    assert grants() == before, "a grant that changed nothing was audited as role.assigned"


def test_api_key_owner_filter_with_another_organizations_name_matches_nothing(
    channels: Channels, tenant: Tenant, other_tenant: Tenant
) -> None:
    _key(channels, tenant, datetime.now(UTC) + timedelta(days=1))
    user_id = tenant.user.split("/")[-1]
    foreign = f'owner = "{other_tenant.organization}/users/{user_id}"'
    request = api_key_pb2.ListApiKeysRequest(parent=tenant.organization, filter=foreign)
    try:
        found = keys(channels).ListApiKeys(request, metadata=tenant.metadata, timeout=10).api_keys
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        return
    assert not found, f"owner filter naming another organization's user matched {len(found)} keys of this one"


def test_a_request_id_another_user_used_does_not_hand_over_their_api_key(channels: Channels, tenant: Tenant) -> None:
    """AIP-155: a request_id makes a *retry* return the first result; another user sending the same id
    is another request, and must not be handed the first user's key."""
    request_id = str(uuid.uuid4())
    key = api_key_pb2.ApiKey(display_name="admin's", scopes=["identity.users.get"])
    first = keys(channels).CreateApiKey(
        api_key_pb2.CreateApiKeyRequest(parent=tenant.organization, api_key=key, request_id=request_id),
        metadata=tenant.metadata,
        timeout=10,
    )
    member = add_user(channels, tenant, "developer")
    mine = api_key_pb2.ApiKey(display_name="member's", scopes=["identity.users.list"])
    second = keys(channels).CreateApiKey(
        api_key_pb2.CreateApiKeyRequest(parent=tenant.organization, api_key=mine, request_id=request_id),
        metadata=member.metadata,
        timeout=10,
    )
    assert first.api_key.owner == tenant.user
    assert second.api_key.owner == member.user, f"member was handed {second.api_key.owner}'s key"
