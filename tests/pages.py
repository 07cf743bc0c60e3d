"""Walking a list to its end, as a client does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message


def every_page(
    method: Callable[..., Any], request: Message, field: str, metadata: tuple[tuple[str, str], ...]
) -> list[Any]:
    """Every item of the list `request` asks `method` for, page by page (each page's token in the next request)."""
    items: list[Any] = []
    while True:
        reply = method(request, metadata=metadata, timeout=10)
        items += getattr(reply, field)
        if not reply.next_page_token:
            return items
        following = type(request)()
        following.CopyFrom(request)
        following.page_token = reply.next_page_token  # type: ignore[attr-defined]
        request = following
