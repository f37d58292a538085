"""A JSON Schema for configuration files, generated from the section classes.

Editors that read JSON Schema for TOML (taplo / Even Better TOML, with a
``#:schema ./velithon-config.schema.json`` first line) then complete keys and flag
typos as you type. The schema comes from the same attrs classes the loader structures
into, so it cannot drift from what ``velithon config check`` accepts; a test keeps the
committed copy (``docs/velithon-config.schema.json``) equal to this output.

The schema checks shapes (keys, types, choices); rules that involve several keys
(weights matching targets, a ``hash`` strategy needing ``hash_on``) are only checked by
the loader.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

import attrs

from .._http11.llhttp import PARSER_CHOICES
from .._lb.outlier import OutlierConfig
from .._lb.router import NONE_HEALTHY_POLICIES
from .._lb.strategies import STRATEGY_NAMES
from ..server._config import CERT_REQS_NAMES
from ._sections import (
    AdminSection,
    GatewayConfig,
    LoggingSection,
    ProxySection,
    RouteSection,
    ServerSection,
    TLSSection,
)

__all__ = ["FIELD_DOCS", "LOG_LEVELS", "config_schema", "field_doc", "schema_text"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

#: one sentence per key; a key shared by several sections means the same in each
FIELD_DOCS: dict[str, str] = {
    # [server]
    "host": "Address to listen on; --host wins.",
    "port": "Port to listen on (0: any free port); --port wins.",
    "workers": "Processes accepting from one socket; --workers wins.",
    "backlog": "Listen queue length.",
    "reuse_port": "Set SO_REUSEPORT on the listening socket.",
    "root_path": "ASGI root_path given to the app.",
    "max_body_size": "Largest request body in bytes; larger bodies get 413.",
    "max_header_size": "Largest request head in bytes.",
    "max_headers": "Most header fields in one request.",
    "max_uri_length": "Longest request target in bytes.",
    "max_chunk_header_size": "Longest chunk-size line of a chunked body, in bytes.",
    "strict_obs_fold": "Refuse obsolete header line folding.",
    "header_timeout": "Seconds to receive a request head.",
    "keepalive_timeout": "Idle seconds before a keep-alive connection is closed.",
    "body_timeout": "Longest wait in seconds for the next piece of a request body.",
    "send_timeout": "Longest wait in seconds for a client to take response bytes.",
    "graceful_timeout": "Seconds in-flight requests get at shutdown, and on a reload for "
                        "removed targets and replaced routes.",
    "lifespan_timeout": "Seconds the app's start-up and shutdown may take.",
    "limit_concurrency": "Most open connections; at the limit the server stops accepting.",
    "http": "HTTP/1.1 parser: auto, httptools or h11; --http wins.",
    "ws_max_message_size": "Largest WebSocket message in bytes.",
    "gc_threshold": "Once started, collect young objects every N allocations, with the "
                    "start-up heap frozen out of the collector (0: Python's defaults; "
                    "at most 2147483647); --gc-threshold wins.",
    "tls": "Serve https and wss: [server.tls] (default: plain HTTP).",
    "certfile": "PEM file: the certificate, then its intermediates (and the key, when "
                "keyfile is not given).",
    "keyfile": "PEM file with the private key.",
    "keyfile_password": "Password of an encrypted private key.",
    "ca_certs": "PEM file of the CAs whose client certificates are accepted.",
    "cert_reqs": "Client certificates: \"none\", \"optional\" or \"required\", as a "
                 "string (\"0\", \"1\", \"2\" and \"cert_required\", ... work too).",
    "handshake_timeout": "Seconds a new connection has to finish its TLS handshake.",
    "redirect_port": "Also listen for plain HTTP on this port (not the https one) and "
                     "redirect to https.",
    "hsts_max_age": "Strict-Transport-Security max-age on https responses, in seconds.",
    "hsts_include_subdomains": "Add includeSubDomains to the Strict-Transport-Security header.",
    # [admin]
    "enabled": "Serve the admin surface.",
    "path": "The path template the route matches, e.g. /api/{path:path}.",
    "token": "Bearer token that enables mutations (drain, ...); absent: read-only.",
    # [logging]
    "level": "Log level: critical, error, warning, info or debug; --log-level wins.",
    "access_log": "One log line per request; --access-log wins.",
    # [[routes]] and [[proxies]]
    "targets": "Backend URLs (http:// or https://), or sources that follow DNS or a file "
               "(dns+srv://, dns://, file://; see discovery.md).",
    "methods": "HTTP methods the route accepts (default: all).",
    "name": "The route field of its log lines (default gateway_<path>, proxy_<path_prefix>); "
            "identifies a route across reloads.",
    "strip_path": "Drop the template's static prefix before forwarding.",
    "preserve_host": "Forward the client's Host header instead of the target's.",
    "timeout_ms": "Overall deadline of one request across its tries, in ms.",
    "max_retries": "Retries on another target after a failed try.",
    "load_balancing_strategy": "How a target is picked.",
    "weights": "One integer weight per target (the weighted strategy needs them).",
    "health_check_path": "Path probed on every target; health checks are on when set.",
    "health_check_interval": "Seconds between health probes.",
    "health_check_timeout": "Seconds a probe may take.",
    "healthy_threshold": "Passing probes before an unhealthy target is healthy again.",
    "unhealthy_threshold": "Failing probes before a target is unhealthy.",
    "headers_to_add": "Request headers set on every forwarded request.",
    "headers_to_remove": "Request headers removed before forwarding.",
    "path_rewrite": "Upstream path template filled from the route's parameters.",
    "max_failures": "Gateway failures in a row that open a target's breaker.",
    "recovery_timeout_ms": "How long a breaker stays open before a trial, in ms.",
    "none_healthy": "With no healthy target: fail (503) or panic (use any).",
    "outlier_detection": "Passive ejection of failing targets.",
    "retry_on_statuses": "Upstream statuses that are retried.",
    "retry_non_idempotent": "Also retry POST, PATCH, ... (their body must be replayable).",
    "per_try_timeout_ms": "Deadline of a single try, in ms (default: none).",
    "hash_on": "Key of the hash strategy: header:<name>, cookie:<name> or client_ip.",
    "trusted_proxies": "Addresses or networks whose X-Forwarded-For is believed.",
    "xff_num_trusted_hops": "Trust this many X-Forwarded-For hops instead.",
    "include_in_schema": "List the route in the app's OpenAPI output.",
    "max_requests_per_target": "Most requests in flight to one target (default: no cap).",
    "panic_threshold": "Below this percentage of routable targets, use them all.",
    "failure_statuses": "Upstream statuses that count as gateway failures.",
    "client_body_timeout_ms": "Longest wait for the client's request body, in ms.",
    "buffer_chunked_uploads": "Buffer chunked uploads up to this many bytes so they "
                              "can be retried (0: never).",
    "request_id_header": "Header carrying the request ID to the target and back to the "
                         "client; \"\" turns request IDs off.",
    "upstream_target_header": "Response header naming the target that answered "
                              "(default: none).",
    "dns_nameservers": "DNS servers for dns+srv:// and dns:// targets, e.g. 127.0.0.1:8600 "
                       "(default: the system's).",
    "dns_refresh": "Seconds between DNS lookups (default: the records' TTL, within 1-300 s).",
    "dns_timeout": "Seconds one DNS lookup may take.",
    "file_refresh": "Seconds between polls of a file:// target list.",
    # [[proxies]] only
    "strip_request_headers": "Request headers removed before forwarding.",
    "strip_response_headers": "Response headers removed before relaying.",
    "add_request_headers": "Request headers set on every forwarded request.",
    "add_response_headers": "Response headers set on every relayed response.",
    "path_prefix": "Requests under this prefix are forwarded (empty: all); "
                   "identifies the proxy across reloads.",
    "upstream_path_prefix": "Replaces path_prefix in the forwarded path.",
    "enable_health_checks": "Probe health_check_path on every target.",
    # [outlier_detection]
    "consecutive_5xx": "Plain 5xx answers in a row that eject a target (0: off).",
    "consecutive_gateway_failure": "Gateway failures in a row that eject a target (0: off).",
    "base_ejection_time": "Seconds of the first ejection (then times the ejection count).",
    "max_ejection_time": "Longest ejection, in seconds.",
    "max_ejection_percent": "Most targets out at once, in percent.",
    "interval": "Seconds between ejection sweeps.",
}

#: where a key means something else in one section
_SECTION_DOCS: dict[tuple[type, str], str] = {
    (AdminSection, "path"): "Where the admin surface is mounted.",
    (OutlierConfig, "enabled"): "Eject failing targets at all.",
    (ProxySection, "health_check_path"): "Path probed on every target (see "
                                         "enable_health_checks).",
}


def field_doc(cls: type, name: str) -> str:
    """The one-sentence description of key ``name`` of section ``cls``."""
    return _SECTION_DOCS.get((cls, name)) or FIELD_DOCS[name]

_CHOICES: dict[str, tuple[str, ...]] = {
    "load_balancing_strategy": STRATEGY_NAMES,
    "none_healthy": NONE_HEALTHY_POLICIES,
    "level": LOG_LEVELS,
    "http": PARSER_CHOICES,
    "cert_reqs": CERT_REQS_NAMES,  # what the loader accepts (TLSConfig converts them)
}

_TITLES = {
    ServerSection: "[server]",
    TLSSection: "[server.tls]",
    AdminSection: "[admin]",
    LoggingSection: "[logging]",
    RouteSection: "[[routes]]",
    ProxySection: "[[proxies]]",
    OutlierConfig: "outlier_detection",
}


def _json_default(value: object) -> object:
    if isinstance(value, tuple):
        return [_json_default(v) for v in value]
    if attrs.has(type(value)):
        return None
    return value


def _type_schema(tp: Any, name: str) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        assert len(members) == 1, tp
        return _type_schema(members[0], name)
    if origin is tuple:
        return {"type": "array", "items": _type_schema(typing.get_args(tp)[0], name)}
    if origin is dict:
        return {"type": "object",
                "additionalProperties": _type_schema(typing.get_args(tp)[1], name)}
    if attrs.has(tp):
        return _class_schema(tp)
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}[tp]
    schema: dict[str, Any] = {"type": simple}
    if name in _CHOICES:
        schema["enum"] = list(_CHOICES[name])
    return schema


def _class_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        schema = _type_schema(hints[field.name], field.name)
        if attrs.has(hints[field.name]) or field.name in ("routes", "proxies"):
            pass  # the nested table's own title and keys say it
        else:
            schema = {"description": field_doc(cls, field.name), **schema}
        if field.default is attrs.NOTHING:
            required.append(field.name)
        else:
            default = _json_default(field.default)
            if default is not None:
                schema["default"] = default
        properties[field.name] = schema
    result: dict[str, Any] = {"type": "object"}
    if cls in _TITLES:
        result["title"] = _TITLES[cls]
    result["properties"] = properties
    if required:
        result["required"] = required
    result["additionalProperties"] = False
    return result


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a gateway configuration file."""
    schema = _class_schema(GatewayConfig)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "velithon gateway configuration",
        "description": "velithon gateway -c FILE; see docs/config.md.",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def schema_text() -> str:
    """The schema as ``velithon config schema`` prints it (and as committed)."""
    return json.dumps(config_schema(), indent=2) + "\n"
