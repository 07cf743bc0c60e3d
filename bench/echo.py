"""The ceiling: a bare grpc.aio server that answers every unary call with a fixed payload."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import grpc
import uvloop

METHOD = "/bench.Echo/Echo"


async def serve_bare(
    port: int, method: str, handler: Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]
) -> None:
    """`handler` as `method` (bytes in, bytes out) on a grpc.aio server with nothing else in the way."""
    _, service, name = method.split("/")
    rpc = grpc.unary_unary_rpc_method_handler(handler)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {name: rpc}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def serve(port: int, payload_size: int) -> None:
    payload = b"x" * payload_size

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return payload

    await serve_bare(port, METHOD, echo)


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
