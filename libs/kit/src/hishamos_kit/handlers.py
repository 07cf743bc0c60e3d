"""The six standard-method handlers of a resource, written once.

Every resource's handlers do the same: take the principal, call its StandardMethods, wrap the result
in the method's response message. `standard_handlers` adds them to a servicer class, so each
servicer only spells out its custom methods and the standard ones it does differently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TypeVar

from grpc.aio import ServicerContext as Context

from hishamos_kit import wire
from hishamos_kit.auth import current_principal
from hishamos_kit.standard import StandardMethods

S = TypeVar("S", bound=type)


def standard_handlers(pb: ModuleType, kind: str, field: str, plural: str) -> Callable[[S], S]:
    """Class decorator: Create/Get/List/Update/Delete/Undelete<kind> over the servicer's `methods`.

    `field` and `plural` are the message fields that carry one resource and a page of them."""
    response = {m: getattr(pb, f"{m}{kind}Response") for m in ("Create", "Get", "Update", "Delete", "Undelete")}
    list_method = "List" + "".join(word.capitalize() for word in plural.split("_"))  # work_logs → ListWorkLogs
    listed = getattr(pb, f"{list_method}Response")

    def methods(servicer: Any) -> StandardMethods[Any, Any]:
        return servicer.methods  # type: ignore[no-any-return]

    async def create(self: Any, request: Any, context: Context) -> Any:
        made = await methods(self).create(
            current_principal(), request.parent, getattr(request, field), request.request_id
        )
        return response["Create"](**{field: made})

    async def get(self: Any, request: Any, context: Context) -> Any:
        return response["Get"](**{field: await methods(self).get(current_principal(), request.name)})

    fields = listed.DESCRIPTOR.fields_by_name
    if (fields[plural].number, fields["next_page_token"].number) != (wire.RESOURCES_FIELD, wire.NEXT_PAGE_TOKEN_FIELD):
        raise TypeError(f"{listed.__name__} must hold {plural} in field 1 and next_page_token in field 2 (AIP-132)")

    def page(found: Sequence[Any], token: str) -> Any:
        return listed(**{plural: found}, next_page_token=token)

    async def list_(self: Any, request: Any, context: Context) -> Any:
        return await methods(self).list_response(current_principal(), request, page)

    async def update(self: Any, request: Any, context: Context) -> Any:
        changed = await methods(self).update(current_principal(), getattr(request, field), request.update_mask)
        return response["Update"](**{field: changed})

    async def delete(self: Any, request: Any, context: Context) -> Any:
        return response["Delete"](
            **{field: await methods(self).delete(current_principal(), request.name, request.etag)}
        )

    async def undelete(self: Any, request: Any, context: Context) -> Any:
        restored = await methods(self).undelete(current_principal(), request.name, request.etag)
        return response["Undelete"](**{field: restored})

    def decorate(cls: S) -> S:
        for verb, handler in (
            ("Create", create),
            ("Get", get),
            ("Update", update),
            ("Delete", delete),
            ("Undelete", undelete),
        ):
            if f"{verb}{kind}" not in vars(cls):  # a servicer's own version wins
                setattr(cls, f"{verb}{kind}", handler)
        if list_method not in vars(cls):
            setattr(cls, list_method, list_)
        return cls

    return decorate
