"""The login floor: a bare grpc.aio server that does only what no sign-in can skip, the argon2id check on
identity's own pool (against its decoy hash: a wrong password costs what a right one does), and answers
with a reply of a login's size. It shows how much of the login ceiling gRPC and the hash leave: beyond it,
a login's cost is identity's own (its chassis, two database round trips, the tokens)."""

from __future__ import annotations

import sys

import grpc
import uvloop

from bench.echo import serve_bare
from hishamos.identity.v1 import auth_pb2
from hishamos_identity.passwords import Passwords
from hishamos_identity.settings import IdentitySettings

METHOD = "/bench.LoginFloor/Login"


async def serve(port: int, reply_size: int) -> None:
    s = IdentitySettings()
    passwords = Passwords(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism, s.argon2_threads)
    reply = b"x" * reply_size

    async def login(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await passwords.verify(None, auth_pb2.LoginRequest.FromString(request).password)
        return reply

    await serve_bare(port, METHOD, login)


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
