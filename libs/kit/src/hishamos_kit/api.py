"""The HishamOS API as a whole: every generated module, for reflection and Envoy's routes."""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from google.protobuf.descriptor import ServiceDescriptor

import hishamos


@cache
def services() -> tuple[ServiceDescriptor, ...]:
    """Every gRPC service of the API, imported so its descriptors are in the default pool."""
    found: list[ServiceDescriptor] = []
    for root in map(Path, hishamos.__path__):
        for path in sorted(root.rglob("*_pb2.py")):
            module = ".".join(("hishamos", *path.relative_to(root).with_suffix("").parts))
            found.extend(importlib.import_module(module).DESCRIPTOR.services_by_name.values())
    return tuple(sorted(found, key=lambda s: s.full_name))
