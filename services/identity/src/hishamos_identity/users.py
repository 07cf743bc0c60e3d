"""Users as the API shows them."""

from __future__ import annotations

from hishamos.identity.v1 import user_pb2
from hishamos_identity.models import User
from hishamos_identity.tokens import user_name
from hishamos_kit.resources import etag, timestamp


def to_message(user: User) -> user_pb2.User:
    return user_pb2.User(
        name=user_name(user),
        email=user.email,
        username=user.username,
        full_name=user.full_name,
        roles=list(user.roles),
        last_login_time=timestamp(user.last_login_at),
        create_time=timestamp(user.created_at),
        update_time=timestamp(user.updated_at),
        etag=etag(user),
    )
