"""The gRPC server every service runs: interceptor chain, health, reflection, metrics, graceful stop."""

from __future__ import annotations

import asyncio
import collections
import functools
import gc
import logging
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg
import sqlalchemy.exc
import uvloop
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from sqlalchemy.orm.exc import StaleDataError

from hishamos_kit import api, listing, logs, wire
from hishamos_kit.auth import (
    ApiKeys,
    Authenticator,
    JwksClient,
    KeySource,
    Standing,
    TokenVerifier,
    is_operator,
    principal_var,
)
from hishamos_kit.crypto import load_key
from hishamos_kit.db import Database
from hishamos_kit.errors import Aborted, ApiError, InvalidArgument, PermissionDenied, Unavailable, internal_status
from hishamos_kit.logs import request_id_var
from hishamos_kit.metrics import RpcMetrics, serve_metrics
from hishamos_kit.outbound import inbound_deadline
from hishamos_kit.retention import Retention, Rule
from hishamos_kit.schema import Schema, wait_until_current
from hishamos_kit.settings import ServiceSettings

log = logging.getLogger("hishamos.server")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")
access_log = logging.getLogger("hishamos.access")

Register = Callable[[Any, Any], None]  # a generated add_*Servicer_to_server


@dataclass
class Service:
    """One gRPC service a process serves: its name, servicer and generated registration function."""

    full_name: str
    servicer: Any
    register: Register


@dataclass
class Background:
    """Work a process does beside serving (a job worker): started with the server, told to stop by
    the event when the server drains, and awaited before the process ends."""

    name: str
    run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class SlowCalls:
    """Admits a method's slow call to the access log at most once a `period`; the line it
    admits counts the slow calls of that method left out since the last one."""

    def __init__(self, period: float = 1.0) -> None:
        self._period = period
        self._next: dict[str, float] = {}
        self._left_out: collections.Counter[str] = collections.Counter()

    def admit(self, method: str) -> dict[str, int] | None:
        """The fields to add to the line logging this call, or None to leave it out."""
        now = time.monotonic()
        if now < self._next.get(method, 0.0):
            self._left_out[method] += 1
            return None
        self._next[method] = now + self._period
        return {"slow_calls_left_out": self._left_out.pop(method, 0)}


@dataclass
class Chassis:
    """Cross-cutting behaviour of every RPC: request id, authentication, error mapping, access log, metrics.

    One wrapper per method instead of a stack of interceptors: each layer would add a coroutine
    frame and a metadata scan to every call.
    """

    domain: str
    authenticator: Authenticator
    slow_seconds: float = 0.25
    metrics: RpcMetrics = field(default_factory=RpcMetrics)
    slow_calls: SlowCalls = field(default_factory=SlowCalls)

    async def run(
        self,
        method: str,
        permission: str,
        operator: bool,
        call: Callable[[], Awaitable[Any]],
        context: grpc.aio.ServicerContext,
    ) -> Any:
        """`permission` is what the method requires, empty for a public method; `operator`: only
        a platform operator may call it, whatever permissions a token claims."""
        metadata: Mapping[str, str] = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        request_id = metadata.get("x-request-id", "")
        if not REQUEST_ID.match(request_id):  # the caller's id is kept only when it is a sane one
            request_id = uuid.uuid4().hex
        request_id_var.set(request_id)
        remaining = context.time_remaining()
        inbound_deadline.set(None if remaining is None else time.monotonic() + remaining)
        started = time.perf_counter()
        status = None
        code = "OK"
        try:
            if permission:
                principal = await self.authenticator.authenticate(metadata)
                # Checked before the handler runs, so a caller without it learns nothing of existence.
                if permission not in principal.permissions or (operator and not is_operator(principal)):
                    # No role of an organization can hold an operator's permission: say who can call.
                    message = (
                        f"only platform operators make this call (see IssueOperatorToken); it needs {permission}"
                        if operator
                        else f"this call needs the permission {permission}"
                    )
                    raise PermissionDenied(message, "PERMISSION_DENIED", {"permission": permission})
                principal_var.set(principal)
            return await call()
        except ApiError as exc:
            status = exc.to_status(self.domain, request_id)
            code = exc.code.name
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except StaleDataError:  # an ORM write raced another on the same row: its version had moved on
            status = Aborted("it changed concurrently; get it again and retry", "CONCURRENT_UPDATE").to_status(
                self.domain, request_id
            )
            code = "ABORTED"
        # Unreachable, or every pooled connection busy for the pool's whole timeout: either passes.
        except (psycopg.OperationalError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.TimeoutError) as exc:
            if over_limit(exc):  # the same request would fail again: not a reason to retry
                log.warning("database limit exceeded in %s", method)
                too_much = {"request": "asks more of the database than it can do at once; ask for less"}
                status = InvalidArgument(too_much, "REQUEST_TOO_COMPLEX").to_status(self.domain, request_id)
                code = "INVALID_ARGUMENT"
            elif sqlstate(exc).startswith("40"):  # a deadlock or serialization failure: undone, nothing kept
                log.warning("transaction rolled back by the database in %s", method)
                again = Aborted("it ran into a concurrent change and was undone; retry", "CONCURRENT_UPDATE")
                status = again.to_status(self.domain, request_id)
                code = "ABORTED"
            else:
                log.warning("database unavailable in %s", method)
                status = Unavailable("the database is unavailable; retry shortly", "DATABASE_UNAVAILABLE").to_status(
                    self.domain, request_id
                )
                code = "UNAVAILABLE"
        except Exception as exc:  # noqa: BLE001 - the last line: the client gets INTERNAL and a request id
            if refused_value(exc):  # a value validation let through, a NUL inside JSON say
                log.warning("database refused a value in %s", method)
                refused = {"request": "holds a value the database cannot store, such as a NUL character"}
                status = InvalidArgument(refused, "INVALID_VALUE").to_status(self.domain, request_id)
                code = "INVALID_ARGUMENT"
            else:
                frame = _innermost_frame(exc)
                log.error("unhandled error in %s at %s", method, frame, extra={"error_type": type(exc).__name__})
                status = internal_status(self.domain, request_id)
                code = "INTERNAL"
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe(method, code, elapsed)
            # Every failed call is logged at INFO, slow ones at most once a second a method (when a
            # service is overloaded every call is slow), the rest at DEBUG: metrics count them all, and
            # Envoy logs every call through the gateway.
            added: dict[str, int] | None = None  # what a line at INFO adds
            if code != "OK":
                added = {}
            elif elapsed > self.slow_seconds:
                added = self.slow_calls.admit(method)
            level = logging.DEBUG if added is None else logging.INFO
            if access_log.isEnabledFor(level):
                fields = {"method": method, "code": code, "ms": round(elapsed * 1000, 3), "peer": context.peer()}
                access_log.log(level, "rpc", extra={"fields": fields | (added or {})})
        await _abort(context, status, request_id)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        declared = api.authorization(method)
        run = functools.partial(self.run, method, declared.permission, declared.operator)
        if handler.unary_unary:
            unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                return await run(_refuse if request is UNREADABLE else lambda: unary(request, context), context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, _readable(handler.request_deserializer), wire.passthrough(handler.response_serializer)
            )
        if handler.stream_unary:
            client_stream = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                return await run(lambda: client_stream(requests, context), context)

            return grpc.stream_unary_rpc_method_handler(
                stream_unary, handler.request_deserializer, handler.response_serializer
            )
        streaming = handler.unary_stream or handler.stream_stream
        assert streaming is not None

        async def server_stream(request: Any, context: grpc.aio.ServicerContext) -> None:
            async def drain() -> None:
                async for response in streaming(request, context):
                    await context.write(response)

            await run(_refuse if request is UNREADABLE else drain, context)

        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                server_stream, _readable(handler.request_deserializer), handler.response_serializer
            )
        return grpc.stream_stream_rpc_method_handler(
            server_stream, handler.request_deserializer, handler.response_serializer
        )


# A request whose bytes are no message of its type. Left to grpc, it would answer UNKNOWN with the
# parser's own words, before authentication, without a request id or a log line.
UNREADABLE = object()


def _readable(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def read(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError:
            return UNREADABLE

    return read


async def _refuse() -> None:
    raise InvalidArgument({"request": "is not a valid message of this method's request type"}, "MALFORMED_REQUEST")


async def _abort(context: grpc.aio.ServicerContext, status: Any, request_id: str) -> None:
    rich = rpc_status.to_status(status)
    await context.abort(rich.code, rich.details, (*rich.trailing_metadata, ("x-request-id", request_id)))


# Data exceptions (SQLSTATE class 22) that mean a value as sent cannot be stored: a character the encoding
# lacks or NUL, text too long, a number out of range, text that is no value of its type. The rest of the
# class (division by zero, a bad subscript) are the server's own mistakes: INTERNAL.
REFUSED_VALUES = {"22P05", "22021", "22001", "22003", "22P02"}


def refused_value(exc: Exception) -> bool:
    error = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    # No SQLSTATE: refused before it was sent (psycopg refuses NUL in a text value).
    return isinstance(error, psycopg.DataError) and error.sqlstate in (*REFUSED_VALUES, None)


def sqlstate(exc: Exception) -> str:
    """PostgreSQL's SQLSTATE for a database error, through SQLAlchemy's wrapper or not; '' for others."""
    error = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    return (error.sqlstate or "") if isinstance(error, psycopg.Error) else ""


def over_limit(exc: Exception) -> bool:
    """A statement past one of PostgreSQL's program limits (SQLSTATE class 54: too many columns,
    arguments, a statement too complex), which psycopg files with the operational errors."""
    return sqlstate(exc).startswith("54")


def _innermost_frame(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    code = tb.tb_frame.f_code
    return f"{code.co_filename}:{tb.tb_lineno} in {code.co_name}"


class ChassisRegistrar:
    """Stands in for the server while generated `add_*Servicer_to_server` functions run, so each
    method handler is wrapped by the chassis once, at registration. (An interceptor would do
    the same work plus a dispatch coroutine on every call.) Health and reflection stay bare."""

    def __init__(self, server: grpc.aio.Server, chassis: Chassis) -> None:
        self._server = server
        self._chassis = chassis

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        """Ignored: the same methods arrive through add_registered_method_handlers."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        wrapped = {name: self._chassis.wrap(f"/{service}/{name}", h) for name, h in handlers.items()}
        # Served as generic handlers only: grpc.aio's server waits for the next call with one
        # future per registered method, and `asyncio.wait` over fifty of them cost some 60 µs of
        # the event loop per call, against a dictionary lookup by method name.
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))


async def serve(
    name: str,
    settings: ServiceSettings,
    parts: Iterable[Service | Background],
    authenticator: Authenticator,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain: NOT_SERVING (still serving for `drain_seconds`), then
    stop taking calls and finish those under way within the grace."""
    parts = list(parts)
    services = [p for p in parts if isinstance(p, Service)]
    background = [p for p in parts if isinstance(p, Background)]
    chassis = Chassis(
        domain=f"{name}.hishamos.dev",
        authenticator=authenticator,
        slow_seconds=settings.slow_call_ms / 1000,
    )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # Off: with it, a second copy of the service on the same port would bind too, and take half the calls.
            ("grpc.so_reuseport", 0),
        ],
    )
    registrar = ChassisRegistrar(server, chassis)
    for service in services:
        service.register(service.servicer, registrar)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflected = [s.full_name for s in api.services()]
    names = [*reflected, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server, pool=api.ReflectionPool())
    address = f"{settings.host}:{settings.port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:  # grpc.aio raises where grpc answers 0
        bound = 0
    if bound == 0:
        raise SystemExit(
            f"cannot listen on {address}: is another process using the port? Set HISHAMOS_{name.upper()}_PORT "
            "to another port"
        )
    serve_metrics(settings.host, settings.metrics_port, f"HISHAMOS_{name.upper()}_METRICS_PORT")
    # What startup built (modules, models, descriptors) lives as long as the process: out of the
    # collector's sight, so its collections scan only what calls allocate.
    gc.collect()
    gc.freeze()
    await server.start()
    for service_name in ["", *(s.full_name for s in services)]:
        await health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra={"address": address, "metrics_port": settings.metrics_port})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    working = [asyncio.create_task(b.run(stop), name=b.name) for b in background]
    await stop.wait()
    log.info("draining", extra={"drain_seconds": settings.drain_seconds, "grace_seconds": settings.grace_seconds})
    await health_servicer.enter_graceful_shutdown()
    await asyncio.sleep(settings.drain_seconds)  # still serving, while those routing here learn to stop
    await server.stop(settings.grace_seconds)
    await asyncio.gather(*working)
    if on_stop is not None:
        await on_stop()
    log.info("stopped")


ServicesFactory = Callable[[Database], Awaitable[Sequence[Service | Background]]]


async def run(
    name: str,
    settings: ServiceSettings,
    build: ServicesFactory,
    schema: Schema,
    keys: Callable[[Database], KeySource] | None = None,
    retained: Sequence[Rule] = (),
    standing: Callable[[Database], Standing] | None = None,
) -> None:
    """Open the database, wait for it to have `schema`, build the service's servicers, verify tokens
    against identity, and serve; `retained`: what the service's tables keep only for a while, beside
    every service's request ids; `standing`: what the service knows of a caller now (identity: its
    user's current roles)."""
    if settings.page_token_key:
        listing.use_token_key(load_key(settings.page_token_key, f"HISHAMOS_{name.upper()}_PAGE_TOKEN_KEY"))
    else:
        log.warning("no page token key: page tokens work only in this process, until it stops")
    db = Database(settings.database_url, settings.db_pool_size)
    await wait_until_current(db, schema)
    jwks = None if keys else JwksClient(settings.identity_target, settings.jwks_cache_seconds)
    key_source: KeySource = keys(db) if keys else jwks  # type: ignore[assignment]
    verifier = TokenVerifier(key_source, settings.jwt_issuer, settings.jwt_audience)
    api_keys = ApiKeys(settings.identity_target)
    try:
        parts = [
            *await build(db),
            Background("retention", Retention(db, *retained, every_seconds=settings.retention_seconds).run),
        ]
        await serve(name, settings, parts, Authenticator(verifier, api_keys, standing(db) if standing else None))
    finally:
        await api_keys.close()
        if jwks is not None:
            await jwks.close()
        await db.close()


def main(
    name: str,
    settings: ServiceSettings,
    build: ServicesFactory,
    schema: Schema,
    keys: Callable[[Database], KeySource] | None = None,
    retained: Sequence[Rule] = (),
    standing: Callable[[Database], Standing] | None = None,
) -> None:
    """Entry point of `python -m hishamos_<name>`."""
    logs.configure(name, settings.log_level)
    if not settings.database_url:
        raise SystemExit(f"HISHAMOS_{name.upper()}_DATABASE_URL is not set; `make up` sets it for the local stack")
    uvloop.run(run(name, settings, build, schema, keys, retained, standing))
