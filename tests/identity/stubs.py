"""Identity's stubs on the test stack's direct channel, and the shape of a mailed token."""

from __future__ import annotations

import re

from hishamos.identity.v1 import (
    api_key_pb2_grpc,
    auth_pb2_grpc,
    organization_pb2_grpc,
    role_pb2_grpc,
    user_pb2_grpc,
)
from tests.conftest import Channels

MAILED_TOKEN = re.compile(r"hose_[0-9a-f]{32}_[A-Za-z0-9_-]{43}")


def auth(channels: Channels) -> auth_pb2_grpc.AuthServiceStub:
    return auth_pb2_grpc.AuthServiceStub(channels.direct("identity"))


def users(channels: Channels) -> user_pb2_grpc.UserServiceStub:
    return user_pb2_grpc.UserServiceStub(channels.direct("identity"))


def roles(channels: Channels) -> role_pb2_grpc.RoleServiceStub:
    return role_pb2_grpc.RoleServiceStub(channels.direct("identity"))


def orgs(channels: Channels) -> organization_pb2_grpc.OrganizationServiceStub:
    return organization_pb2_grpc.OrganizationServiceStub(channels.direct("identity"))


def keys(channels: Channels) -> api_key_pb2_grpc.ApiKeyServiceStub:
    return api_key_pb2_grpc.ApiKeyServiceStub(channels.direct("identity"))
