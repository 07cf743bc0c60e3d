"""The HishamOS API as a whole: every generated module, for reflection and Envoy's routes."""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor

import hishamos
from hishamos.api.v1 import authorization_pb2


@cache
def services() -> tuple[ServiceDescriptor, ...]:
    """Every gRPC service of the API, imported so its descriptors are in the default pool."""
    found: list[ServiceDescriptor] = []
    for root in map(Path, hishamos.__path__):
        for path in sorted(root.rglob("*_pb2.py")):
            module = ".".join(("hishamos", *path.relative_to(root).with_suffix("").parts))
            found.extend(importlib.import_module(module).DESCRIPTOR.services_by_name.values())
    return tuple(sorted(found, key=lambda s: s.full_name))


class ReflectionPool:
    """The default descriptor pool, also finding the file of a method name (`Service.Method`),
    which the pure-upb pool does not, so that `grpcurl describe pkg.Service.Method` works."""

    def __init__(self) -> None:
        self._pool = descriptor_pool.Default()

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            return self._pool.FindMethodByName(symbol).containing_service.file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def authorization(method: str) -> authorization_pb2.Authorization:
    """How `/pkg.Service/Method` is authorized, from its `(hishamos.api.v1.authorization)` option.

    An RPC without the option cannot be served: the server refuses to start rather than guess.
    """
    services()  # every descriptor loaded
    name = method.strip("/").replace("/", ".")
    options = descriptor_pool.Default().FindMethodByName(name).GetOptions()
    declared: authorization_pb2.Authorization = options.Extensions[authorization_pb2.authorization]
    if not declared.public and not declared.permission:
        raise SystemExit(f"{method} declares no (hishamos.api.v1.authorization) option")
    if declared.operator and (declared.public or not declared.permission):
        raise SystemExit(f"{method}: an operator method names its permission and is never public")
    return declared


@cache
def permissions() -> list[str]:
    """The permission catalog: every permission some RPC of the API requires."""
    found = {
        authorization(f"/{service.full_name}/{method.name}").permission
        for service in services()
        for method in service.methods
    }
    return sorted(found - {""})


@cache
def operator_permissions() -> frozenset[str]:
    """The permissions of operator methods (`operator: true`): held by platform operators only,
    never by a tenant's role, API key or service token."""
    declared = [authorization(f"/{s.full_name}/{m.name}") for s in services() for m in s.methods]
    operators = frozenset(d.permission for d in declared if d.operator)
    if shared := operators & {d.permission for d in declared if not d.operator}:
        raise SystemExit(f"operator permissions also guard tenant methods: {', '.join(sorted(shared))}")
    return operators
