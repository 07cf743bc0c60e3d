"""Container HEALTHCHECK: exit 0 when the service's gRPC health check answers SERVING.

The slim image has no grpc_health_probe; grpcio is already installed, so the check is a few lines of Python.
Usage: python healthcheck.py <service>   (reads HISHAMOS_<SERVICE>_PORT like the service itself)
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hishamos_kit.settings import DEFAULT_PORTS

service = sys.argv[1]
port = os.environ.get(f"HISHAMOS_{service.upper()}_PORT") or DEFAULT_PORTS[service]
try:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
except grpc.RpcError:
    sys.exit(1)
sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)
