"""A bounded map of bytes, least recently used out first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

ENTRY_OVERHEAD = 200  # bytes a key and its slot take beyond the value, roughly


class LruBytes:
    """Byte values by key, holding at most `max_bytes` (values plus a rough overhead per entry).

    Meant for values derived from immutable keys (a row's id and version), so it never needs
    invalidating: an entry whose key is no longer asked for simply ages out.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> bytes | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def get_all(self, keys: list[Hashable]) -> list[bytes] | None:
        """The values of all `keys`, or None when one is missing (one call for a page of them)."""
        entries = self._entries
        values = []
        for key in keys:
            value = entries.get(key)
            if value is None:
                return None
            entries.move_to_end(key)
            values.append(value)
        return values

    def put(self, key: Hashable, value: bytes) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= len(old) + ENTRY_OVERHEAD
        self._entries[key] = value
        self.size += len(value) + ENTRY_OVERHEAD
        while self.size > self.max_bytes and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self.size -= len(evicted) + ENTRY_OVERHEAD
