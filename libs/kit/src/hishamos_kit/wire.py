"""Responses sent as protobuf bytes encoded earlier.

A Python service spends more CPU building a page of fifty messages than the database spends finding
them, so a List may answer from a cache of encoded resources: the page is those entries joined, and
the chassis sends an `Encoded` response as it is instead of serializing a message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# AIP-132: a List response holds the page of resources in field 1 and the next page token in field 2.
RESOURCES_FIELD = 1
NEXT_PAGE_TOKEN_FIELD = 2


class Encoded:
    """A response message already in protobuf wire format (gRPC sends exactly `bytes`, no subclass)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def length_delimited(number: int, data: bytes) -> bytes:
    """`data` as field `number` of a message (a string, bytes or message field): tag, length, data."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def list_response(entries: Iterable[bytes], next_page_token: str) -> Encoded:
    """A List response from resources encoded as `length_delimited(RESOURCES_FIELD, …)` entries."""
    token = length_delimited(NEXT_PAGE_TOKEN_FIELD, next_page_token.encode()) if next_page_token else b""
    return Encoded(b"".join((*entries, token)))


def passthrough(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes]:
    """A handler's response serializer that sends an `Encoded` response unchanged."""

    def serialize(response: Any) -> bytes:
        if type(response) is Encoded:
            return response.data
        return serializer(response) if serializer else response  # type: ignore[no-any-return]

    return serialize


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
