"""The ceiling: a bare grpc.aio server that answers every unary call with a fixed payload."""

from __future__ import annotations

import sys

import grpc
import uvloop

METHOD = "/bench.Echo/Echo"


async def serve(port: int, payload_size: int) -> None:
    payload = b"x" * payload_size

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return payload

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(echo)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
