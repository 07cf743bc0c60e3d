"""API errors (AIP-193): domain code raises these; the server turns them into a rich google.rpc.Status."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2


class ApiError(Exception):
    """An error a client can act on. `reason` is a stable UPPER_SNAKE identifier (ErrorInfo.reason)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, reason: str, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})

    def details(self) -> list[any_pb2.Any]:
        """Details beyond ErrorInfo, such as BadRequest."""
        return []

    def to_status(self, domain: str, request_id: str = "") -> status_pb2.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=domain, metadata=self.metadata)
        packed = [any_pb2.Any(), *self.details()]
        packed[0].Pack(info)
        if request_id:
            request_info = any_pb2.Any()
            request_info.Pack(error_details_pb2.RequestInfo(request_id=request_id))
            packed.append(request_info)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)


class InvalidArgument(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Mapping[str, str], reason: str = "INVALID_ARGUMENT") -> None:
        fields = ", ".join(violations)
        super().__init__(f"invalid request: check {fields}", reason)
        self.violations = dict(violations)

    def details(self) -> list[any_pb2.Any]:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
                for field, description in self.violations.items()
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        return [packed]


class NotFound(ApiError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} not found", "RESOURCE_NOT_FOUND", {"resource": name})


class AlreadyExists(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Aborted(ApiError):
    code = grpc.StatusCode.ABORTED


class FailedPrecondition(ApiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self, message: str = "missing or invalid credentials", reason: str = "UNAUTHENTICATED") -> None:
        super().__init__(message, reason)


class PermissionDenied(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self, message: str, reason: str, metadata: Mapping[str, str] | None = None, retry_delay: float | None = None
    ) -> None:
        super().__init__(message, reason, metadata)
        self.retry_delay = retry_delay

    def details(self) -> list[any_pb2.Any]:
        """A RetryInfo when waiting helps: a client backs off as long as it says."""
        if self.retry_delay is None:
            return []
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromTimedelta(timedelta(seconds=self.retry_delay))
        packed = any_pb2.Any()
        packed.Pack(info)
        return [packed]


class Unavailable(ApiError):
    code = grpc.StatusCode.UNAVAILABLE


class Violations:
    """Collects every field violation of a request, so the client learns all of them at once."""

    def __init__(self) -> None:
        self.items: dict[str, str] = {}
        self.deferred: ApiError | None = None

    def add(self, field: str, description: str) -> None:
        self.items.setdefault(field, description)

    def check(self, ok: bool, field: str, description: str) -> None:
        if not ok:
            self.add(field, description)

    def defer(self, error: ApiError) -> None:
        """An error of state (FAILED_PRECONDITION, say) found among the fields: raised only when no field is
        wrong, so a client fixing the state is not then told of bad fields it could have fixed at once."""
        self.deferred = self.deferred or error

    @property
    def failed(self) -> bool:
        """Whether anything refuses the request: a field, or a deferred error of state."""
        return bool(self.items) or self.deferred is not None

    def merge(self, other: Violations, prefix: str = "") -> None:
        """`other`'s violations as this request's, under `prefix` (`requests[2].` in a batch, say)."""
        for field, description in other.items.items():
            self.add(prefix + field, description)
        if other.deferred is not None:
            self.defer(other.deferred)

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)
        if self.deferred is not None:
            raise self.deferred


class Internal(ApiError):
    code = grpc.StatusCode.INTERNAL


def internal_status(domain: str, request_id: str) -> status_pb2.Status:
    """What a client sees for a bug: nothing but a request id to quote."""
    message = f"internal error; quote request id {request_id or '-'} to the operators"
    return Internal(message, "INTERNAL").to_status(domain, request_id)
