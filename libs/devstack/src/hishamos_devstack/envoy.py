"""Envoy's configuration, rendered from one function so the local stack, tests and deploy/ agree."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hishamos_kit import api

SERVICES = ("identity", "agents", "projects", "knowledge")
BACKEND_HEADER = "x-hishamos-backend"  # picks the backend for health and reflection, which every service serves
LOGIN_PATH = "/hishamos.identity.v1.AuthService/Login"
TYPES = "type.googleapis.com/envoy.extensions"


@dataclass
class EnvoyConfig:
    backends: dict[str, tuple[str, int]]
    descriptor_path: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 9901
    dns: bool = False  # resolve backend hosts by DNS (Kubernetes, compose) instead of static IPs
    login_per_second: int = 20
    extra: dict[str, Any] = field(default_factory=dict)


def api_services() -> dict[str, list[str]]:
    """gRPC services by backend: `hishamos.<backend>.v1.XService` is served by <backend>."""
    grouped: dict[str, list[str]] = {name: [] for name in SERVICES}
    for service in api.services():
        grouped[service.full_name.split(".")[1]].append(service.full_name)
    return grouped


def _cluster(name: str, host: str, port: int, dns: bool) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STRICT_DNS" if dns else "STATIC",
        "connect_timeout": "2s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{TYPES}.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 1000}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}
            ],
        },
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "5s",
                "no_traffic_interval": "5s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {"service_name": api_services()[name][0]},
            }
        ],
        # A backend that is restarting must not turn every call into UNAVAILABLE before the first check.
        "ignore_health_on_host_removal": True,
    }


def _route(prefix: str | None, cluster: str, *, regex: str | None = None, retry: bool = False) -> dict[str, Any]:
    match: dict[str, Any] = {"safe_regex": {"regex": regex}} if regex else {"prefix": prefix}
    route: dict[str, Any] = {
        "cluster": cluster,
        "timeout": "0s",  # no cap: the client's grpc-timeout decides (streams may be long)
        "max_stream_duration": {"grpc_timeout_header_max": "0s"},
    }
    if retry:
        route["retry_policy"] = {"retry_on": "unavailable,reset,connect-failure", "num_retries": 2}
    return {"match": {**match, "grpc": {}}, "route": route}


def render(cfg: EnvoyConfig) -> dict[str, Any]:
    routes: list[dict[str, Any]] = []
    login = _route(LOGIN_PATH, "identity")
    login["match"] = {"path": LOGIN_PATH, "grpc": {}}
    login["typed_per_filter_config"] = {
        "envoy.filters.http.local_ratelimit": {
            "@type": f"{TYPES}.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "login_rate_limit",
            "token_bucket": {
                "max_tokens": cfg.login_per_second * 2,
                "tokens_per_fill": cfg.login_per_second,
                "fill_interval": "1s",
            },
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        }
    }
    routes.append(login)
    # Health and reflection exist on every backend: the header picks one, identity answers otherwise.
    for prefix in ("/grpc.health.v1.Health/", "/grpc.reflection."):
        for service in SERVICES:
            route = _route(prefix, service, retry=True)
            route["match"]["headers"] = [{"name": BACKEND_HEADER, "string_match": {"exact": service}}]
            routes.append(route)
        routes.append(_route(prefix, "identity", retry=True))
    for service in SERVICES:
        # Reads are safe to retry when the backend was unavailable; writes are not retried here.
        routes.append(_route(None, service, regex=rf"^/hishamos\.{service}\.v1\.\w+/(Get|List)\w*$", retry=True))
        routes.append(_route(f"/hishamos.{service}.", service))

    access_log = {
        # The file logger buffers and writes from Envoy's flush thread, off the request path.
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": f"{TYPES}.access_loggers.file.v3.FileAccessLog",
            "path": "/dev/stdout",
            "log_format": {
                "json_format": {
                    "time": "%START_TIME%",
                    "method": "%REQ(:METHOD)%",
                    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
                    "grpc_status": "%GRPC_STATUS%",
                    "http_status": "%RESPONSE_CODE%",
                    "flags": "%RESPONSE_FLAGS%",
                    "duration_ms": "%DURATION%",
                    "upstream": "%UPSTREAM_CLUSTER%",
                    "request_id": "%REQ(X-REQUEST-ID)%",
                    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                }
            },
        },
    }
    connection_manager = {
        "@type": f"{TYPES}.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "api",
        "codec_type": "AUTO",
        "generate_request_id": True,
        "access_log": [access_log],
        "http2_protocol_options": {"max_concurrent_streams": 1000},
        "stream_idle_timeout": "0s",
        "route_config": {
            "name": "api",
            "virtual_hosts": [{"name": "api", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.grpc_web",
                "typed_config": {"@type": f"{TYPES}.filters.http.grpc_web.v3.GrpcWeb"},
            },
            {
                "name": "envoy.filters.http.grpc_json_transcoder",
                "typed_config": {
                    "@type": f"{TYPES}.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
                    "proto_descriptor": cfg.descriptor_path,
                    "services": [s.full_name for s in api.services()],
                    "print_options": {"add_whitespace": False, "always_print_primitive_fields": True},
                    "convert_grpc_status": True,
                    "auto_mapping": False,
                },
            },
            {
                "name": "envoy.filters.http.local_ratelimit",
                "typed_config": {
                    "@type": f"{TYPES}.filters.http.local_ratelimit.v3.LocalRateLimit",
                    "stat_prefix": "local_rate_limit",
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": f"{TYPES}.filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": cfg.admin_host, "port_value": cfg.admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "api",
                    "address": {"socket_address": {"address": cfg.listen_host, "port_value": cfg.listen_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": connection_manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [_cluster(name, host, port, cfg.dns) for name, (host, port) in cfg.backends.items()],
        },
    }
