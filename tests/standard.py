"""The AIP standard-method contract, checked the same way for every tenant resource.

Each service's test module subclasses `StandardMethodsContract` with a `Case` describing its
resource: how to make a valid one, an invalid one, and a field to update.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from tests.conftest import Channels, Tenant
from tests.errors import failure


@dataclass
class Case:
    service: str  # backend, e.g. "projects"
    pb: ModuleType  # the *_pb2 module
    stub: Callable[[grpc.Channel], Any]
    kind: str  # message name, e.g. "Project"
    field: str  # request field, e.g. "project"
    plural: str  # list response field, e.g. "projects"
    valid: Callable[[int], Any]  # a valid resource; the int makes unique fields unique
    invalid: Callable[[], Any]  # a resource with bad fields
    invalid_fields: set[str]  # the field violations `invalid` must produce
    update: tuple[str, Any]  # a field path to update and its new value
    filter_true: Callable[[Any], str]  # a filter that this resource alone matches
    unique_field: str | None = None  # a field whose duplicate gives ALREADY_EXISTS
    create_fields: dict[str, Any] = dataclasses.field(default_factory=dict)  # more fields of every Create request
    preexisting: Callable[[Tenant], set[str]] = lambda tenant: set()  # what a new organization already has
    # Resources made one after another, in the order List gives them without order_by: newest first.
    default_order: Callable[[list[Any]], list[Any]] = lambda made: made[::-1]


class StandardMethodsContract:
    case: Case

    # -- helpers -----------------------------------------------------------------------------
    def api(self, channels: Channels, via_envoy: bool = False) -> Any:
        return self.case.stub(channels.envoy() if via_envoy else channels.direct(self.case.service))

    def call(self, api: Any, method: str, tenant: Tenant | None, **fields: Any) -> Any:
        request = getattr(self.case.pb, f"{method}Request")(**fields)
        metadata = tenant.metadata if tenant else ()
        return getattr(api, method)(request, metadata=metadata, timeout=10)

    def create(self, api: Any, tenant: Tenant, index: int = 0, **extra: Any) -> Any:
        c = self.case
        fields = {"parent": tenant.organization, c.field: c.valid(index), **c.create_fields, **extra}
        reply = self.call(api, f"Create{c.kind}", tenant, **fields)
        return getattr(reply, c.field)

    def list_all(self, api: Any, tenant: Tenant, **fields: Any) -> list[Any]:
        fields.setdefault("parent", tenant.organization)
        reply = self.call(api, f"List{self.case.plural.capitalize()}", tenant, **fields)
        return list(getattr(reply, self.case.plural))

    def names(self, api: Any, tenant: Tenant, **fields: Any) -> list[str]:
        """Names listed, without what the organization had before the test."""
        before = self.case.preexisting(tenant)
        return [r.name for r in self.list_all(api, tenant, **fields) if r.name not in before]

    def get(self, api: Any, tenant: Tenant, name: str) -> Any:
        return getattr(self.call(api, f"Get{self.case.kind}", tenant, name=name), self.case.field)

    # -- the contract ------------------------------------------------------------------------
    def test_create_then_get_returns_the_same_resource(self, channels: Channels, tenant: Tenant) -> None:
        api = self.api(channels)
        created = self.create(api, tenant)
        assert created.name.startswith(f"{tenant.organization}/{self.case.plural}/")
        assert created.etag and created.create_time.seconds > 0
        assert self.get(api, tenant, created.name) == created

    def test_bad_input_lists_every_violation_and_creates_nothing(self, channels: Channels, tenant: Tenant) -> None:
        api = self.api(channels)
        c = self.case
        f = failure(
            lambda: self.call(
                api, f"Create{c.kind}", tenant, parent=tenant.organization, **{c.field: c.invalid()}, **c.create_fields
            )
        )
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT
        assert set(f.violations) == c.invalid_fields
        assert f.reason == "INVALID_ARGUMENT" and f.domain == f"{c.service}.hishamos.dev"
        assert self.names(api, tenant, show_deleted=True) == []

    def test_malformed_names_are_invalid_argument(self, channels: Channels, tenant: Tenant) -> None:
        api = self.api(channels)
        for name in ("", "projects/1", f"{tenant.organization}/{self.case.plural}/not-a-uuid"):
            f = failure(lambda name=name: self.call(api, f"Get{self.case.kind}", tenant, name=name))
            assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "name" in f.violations
        f = failure(lambda: self.list_all(api, tenant, parent="organizations/nope"))
        assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "parent" in f.violations

    @pytest.mark.parametrize("credentials", [None, "Bearer not-a-jwt", "Basic abc"])
    def test_every_method_needs_valid_credentials(
        self, channels: Channels, tenant: Tenant, credentials: str | None
    ) -> None:
        api = self.api(channels)
        c = self.case
        existing = self.create(api, tenant)
        metadata = (("authorization", credentials),) if credentials else ()
        calls = {
            f"Create{c.kind}": {"parent": tenant.organization, c.field: c.valid(1), **c.create_fields},
            f"Get{c.kind}": {"name": existing.name},
            f"List{c.plural.capitalize()}": {"parent": tenant.organization},
            f"Update{c.kind}": {c.field: existing},
            f"Delete{c.kind}": {"name": existing.name},
            f"Undelete{c.kind}": {"name": existing.name},
        }
        for method, fields in calls.items():
            request = getattr(c.pb, f"{method}Request")(**fields)
            f = failure(lambda m=method, r=request: getattr(api, m)(r, metadata=metadata, timeout=10))
            assert f.code == grpc.StatusCode.UNAUTHENTICATED, method
        assert self.get(api, tenant, existing.name) == existing

    def test_another_organizations_resource_is_not_found_and_unchanged(
        self, channels: Channels, tenant: Tenant, other_tenant: Tenant
    ) -> None:
        api = self.api(channels)
        c = self.case
        theirs = self.create(api, other_tenant)
        path, value = c.update
        changed = getattr(c.pb, c.kind)()
        changed.CopyFrom(theirs)
        setattr(changed, path, value)
        attempts = {
            f"Get{c.kind}": {"name": theirs.name},
            f"Update{c.kind}": {c.field: changed, "update_mask": FieldMask(paths=[path])},
            f"Delete{c.kind}": {"name": theirs.name},
            f"Undelete{c.kind}": {"name": theirs.name},
            f"List{c.plural.capitalize()}": {"parent": other_tenant.organization},
            f"Create{c.kind}": {"parent": other_tenant.organization, c.field: c.valid(2), **c.create_fields},
        }
        for method, fields in attempts.items():
            f = failure(lambda m=method, fl=fields: self.call(api, m, tenant, **fl))
            assert f.code == grpc.StatusCode.NOT_FOUND, method
        # Same id under the caller's own organization: still nobody's resource.
        own_path = theirs.name.replace(other_tenant.organization, tenant.organization)
        assert failure(lambda: self.get(api, tenant, own_path)).code == grpc.StatusCode.NOT_FOUND
        assert self.get(api, other_tenant, theirs.name) == theirs
        assert self.names(api, other_tenant) == [theirs.name]
        assert self.names(api, tenant) == []

    def test_update_changes_only_masked_fields_and_rejects_stale_etag(self, channels: Channels, tenant: Tenant) -> None:
        api = self.api(channels)
        c = self.case
        original = self.create(api, tenant)
        path, value = c.update
        changed = getattr(c.pb, c.kind)(name=original.name, etag=original.etag)
        setattr(changed, path, value)
        updated = getattr(
            self.call(api, f"Update{c.kind}", tenant, **{c.field: changed}, update_mask=FieldMask(paths=[path])),
            c.field,
        )
        assert getattr(updated, path) == value
        assert updated.etag != original.etag
        for other in c.pb.DESCRIPTOR.message_types_by_name[c.kind].fields:
            if other.name not in (path, "etag", "update_time"):
                assert getattr(updated, other.name) == getattr(original, other.name), other.name
        # The first etag is now stale: a second writer who read before the update must not win.
        stale = failure(
            lambda: self.call(api, f"Update{c.kind}", tenant, **{c.field: changed}, update_mask=FieldMask(paths=[path]))
        )
        assert stale.code == grpc.StatusCode.ABORTED and stale.reason == "ETAG_MISMATCH"
        stale_delete = failure(
            lambda: self.call(api, f"Delete{c.kind}", tenant, name=original.name, etag=original.etag)
        )
        assert stale_delete.code == grpc.StatusCode.ABORTED
        assert self.get(api, tenant, original.name) == updated

    def test_writes_without_an_etag_apply_whatever_came_between(self, channels: Channels, tenant: Tenant) -> None:
        """AIP-154: the etag is optional; without one the last write wins, however many came between."""
        api = self.api(channels)
        c = self.case
        original = self.create(api, tenant)
        path, value = c.update

        def write(_: int) -> Any:
            changed = getattr(c.pb, c.kind)(name=original.name)
            setattr(changed, path, value)
            update = self.call(
                api, f"Update{c.kind}", tenant, **{c.field: changed}, update_mask=FieldMask(paths=[path])
            )
            return getattr(update, c.field).etag

        with ThreadPoolExecutor(max_workers=8) as pool:
            etags = list(pool.map(write, range(8)))  # any ABORTED raises here
        assert getattr(self.get(api, tenant, original.name), path) == value and original.etag not in etags

    def test_update_mask_with_unknown_or_output_only_paths_is_invalid(self, channels: Channels, tenant: Tenant) -> None:
        api = self.api(channels)
        c = self.case
        original = self.create(api, tenant)
        for path in ("no_such_field", "create_time", "name"):
            f = failure(
                lambda p=path: self.call(
                    api, f"Update{c.kind}", tenant, **{c.field: original}, update_mask=FieldMask(paths=[p])
                )
            )
            assert f.code == grpc.StatusCode.INVALID_ARGUMENT and "update_mask.paths[0]" in f.violations
        mixed = FieldMask(paths=["*", c.update[0]])
        f = failure(lambda: self.call(api, f"Update{c.kind}", tenant, **{c.field: original}, update_mask=mixed))
        assert "stands alone" in f.violations["update_mask.paths[0]"]
        assert self.get(api, tenant, original.name) == original

    def test_repeated_request_id_returns_the_first_result(self, channels: Channels, tenant: Tenant) -> None:
        api = self.api(channels)
        request_id = str(uuid.uuid4())
        first = self.create(api, tenant, 0, request_id=request_id)
        for spelling in (request_id, request_id.upper(), f"urn:uuid:{request_id}"):  # one id, however written
            assert self.create(api, tenant, 0, request_id=spelling) == first
        assert self.names(api, tenant) == [first.name]
        for malformed in ("not-a-uuid", "-" * 3000 + request_id.replace("-", "")):
            bad = failure(lambda m=malformed: self.create(api, tenant, 1, request_id=m))  # type: ignore[misc]
            assert bad.code == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in bad.violations

    def test_soft_delete_hides_until_undeleted(self, channels: Channels, tenant: Tenant) -> None:
        api = self.api(channels)
        c = self.case
        kept = self.create(api, tenant, 0)
        gone = self.create(api, tenant, 1)
        deleted = getattr(self.call(api, f"Delete{c.kind}", tenant, name=gone.name, etag=gone.etag), c.field)
        assert deleted.delete_time.seconds > 0
        assert self.names(api, tenant) == [kept.name]
        assert set(self.names(api, tenant, show_deleted=True)) == {kept.name, gone.name}
        assert self.get(api, tenant, gone.name).delete_time.seconds > 0
        for etag in ("", gone.etag):  # AIP-164: NOT_FOUND, with or without the etag it had
            again = failure(lambda e=etag: self.call(api, f"Delete{c.kind}", tenant, name=gone.name, etag=e))  # type: ignore[misc]
            assert again.code == grpc.StatusCode.NOT_FOUND
        restored = getattr(self.call(api, f"Undelete{c.kind}", tenant, name=gone.name), c.field)
        assert not restored.HasField("delete_time")
        assert set(self.names(api, tenant)) == {kept.name, gone.name}
        for etag in ("", deleted.etag):  # ALREADY_EXISTS, with or without an etag it no longer has
            live = failure(lambda e=etag: self.call(api, f"Undelete{c.kind}", tenant, name=gone.name, etag=e))  # type: ignore[misc]
            assert live.code == grpc.StatusCode.ALREADY_EXISTS

    def test_unique_field_conflict_is_already_exists(self, channels: Channels, tenant: Tenant) -> None:
        api = self.api(channels)
        first = self.create(api, tenant, 0)
        if self.case.unique_field is None:
            # Nothing is unique: the same content twice is two resources.
            second = self.create(api, tenant, 0)
            assert second.name != first.name and len(self.names(api, tenant)) == 2
            return
        f = failure(lambda: self.create(api, tenant, 0))
        assert f.code == grpc.StatusCode.ALREADY_EXISTS
        assert f.metadata["field"] == f"{self.case.field}.{self.case.unique_field}"
        assert len(self.names(api, tenant)) == 1

    @pytest.mark.parametrize("order_by", ["", "create_time", "create_time desc"])
    def test_page_tokens_walk_the_list_without_gaps_or_repeats(
        self, channels: Channels, tenant: Tenant, order_by: str
    ) -> None:
        api = self.api(channels)
        created = {self.create(api, tenant, i).name for i in range(7)}
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            c = self.case
            reply = self.call(
                api,
                f"List{c.plural.capitalize()}",
                tenant,
                parent=tenant.organization,
                page_size=3,
                page_token=token,
                order_by=order_by,
            )
            seen += [r.name for r in getattr(reply, c.plural)]
            pages += 1
            token = reply.next_page_token
            if not token:
                break
            if pages == 1:
                # A resource created mid-walk must not shift the remaining pages.
                self.create(api, tenant, 100)
        assert len(seen) == len(set(seen)) and created <= set(seen)
        assert pages >= 3

    def test_list_rejects_bad_paging_filter_and_order(self, channels: Channels, tenant: Tenant) -> None:
        api = self.api(channels)
        c = self.case
        for _ in range(3):
            self.create(api, tenant, _)
        first = self.call(api, f"List{c.plural.capitalize()}", tenant, parent=tenant.organization, page_size=1)
        cases = [
            ("page_token", {"page_token": "garbage!"}),
            ("page_token", {"page_token": first.next_page_token, "order_by": "create_time"}),  # another order
            ("page_size", {"page_size": -1}),
            ("filter", {"filter": "no_such_field = 1"}),
            ("filter", {"filter": "create_time > "}),
            ("order_by", {"order_by": "no_such_field desc"}),
            ("order_by", {"order_by": ",".join(["create_time"] * 2000)}),  # each field once
        ]
        for expected, fields in cases:
            f = failure(
                lambda fl=fields: self.call(
                    api, f"List{c.plural.capitalize()}", tenant, parent=tenant.organization, **fl
                )
            )
            assert f.code == grpc.StatusCode.INVALID_ARGUMENT and expected in f.violations, (expected, fields)

    def test_filter_selects_matching_resources(self, channels: Channels, tenant: Tenant) -> None:
        api = self.api(channels)
        resources = [self.create(api, tenant, i) for i in range(3)]
        target = resources[1]
        matched = self.list_all(api, tenant, filter=self.case.filter_true(target))
        assert [r.name for r in matched] == [target.name]
        assert self.names(api, tenant) == [r.name for r in self.case.default_order(resources)]
        # Any offset Python reads, beyond the ±15:59 PostgreSQL takes, is the same instant in UTC.
        far_east = self.names(api, tenant, filter='create_time > "2000-01-01T00:00:00+20:00"')
        assert far_east == self.names(api, tenant)
