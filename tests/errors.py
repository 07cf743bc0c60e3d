"""Reading the rich error model (AIP-193) off a failed call, as a client would."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass
class Failure:
    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    metadata: dict[str, str]
    violations: dict[str, str]
    request_id: str
    retry_delay: float | None  # seconds, from a RetryInfo


def failure(call: Callable[[], Any]) -> Failure:
    """Run `call`, which must fail, and decode its status details."""
    try:
        call()
    except grpc.RpcError as exc:
        return decode(exc)
    raise AssertionError("the call succeeded but was expected to fail")


def decode(exc: grpc.RpcError) -> Failure:
    """A failed call's status details."""
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    request = error_details_pb2.RequestInfo()
    retry = error_details_pb2.RetryInfo()
    infos = 0
    for detail in status.details if status else ():
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
            infos += 1
        elif detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
        elif detail.Is(request.DESCRIPTOR):
            detail.Unpack(request)
        elif detail.Is(retry.DESCRIPTOR):
            detail.Unpack(retry)
    assert status is None or infos == 1, "AIP-193: exactly one ErrorInfo"
    return Failure(
        code=exc.code(),  # type: ignore[attr-defined]
        message=exc.details() or "",  # type: ignore[attr-defined]
        reason=info.reason,
        domain=info.domain,
        metadata=dict(info.metadata),
        violations={v.field: v.description for v in bad.field_violations},
        request_id=request.request_id,
        retry_delay=retry.retry_delay.ToTimedelta().total_seconds() if retry.HasField("retry_delay") else None,
    )
