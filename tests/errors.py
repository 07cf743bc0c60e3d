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


def failure(call: Callable[[], Any]) -> Failure:
    """Run `call`, which must fail, and decode its status details."""
    try:
        call()
    except grpc.RpcError as exc:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        request = error_details_pb2.RequestInfo()
        infos = 0
        for detail in status.details if status else ():
            if detail.Is(info.DESCRIPTOR):
                detail.Unpack(info)
                infos += 1
            elif detail.Is(bad.DESCRIPTOR):
                detail.Unpack(bad)
            elif detail.Is(request.DESCRIPTOR):
                detail.Unpack(request)
        assert status is None or infos == 1, "AIP-193: exactly one ErrorInfo"
        return Failure(
            code=exc.code(),  # type: ignore[attr-defined]
            message=exc.details() or "",  # type: ignore[attr-defined]
            reason=info.reason,
            domain=info.domain,
            metadata=dict(info.metadata),
            violations={v.field: v.description for v in bad.field_violations},
            request_id=request.request_id,
        )
    raise AssertionError("the call succeeded but was expected to fail")
