"""Header rules for forwarding, both directions. Pure functions, run once per request.

Request side:

* Hop-by-hop fields are removed (:data:`HOP_BY_HOP`, ``TE`` except ``trailers``),
  and so are fields the client nominates in ``Connection`` — but nominating
  ``Host``, ``Content-Length``, ``Transfer-Encoding`` or a forwarding header we
  generate is ignored, so a client cannot strip what we add.
* ``Content-Length``/``Transfer-Encoding`` from the client are dropped: the
  upstream pool computes framing itself.
* Names that only *look like* a sensitive field with ``_`` for ``-``
  (``X_Forwarded_For``, ``Transfer_Encoding``) are dropped: some backends fold
  ``_`` into ``-``.
* ``X-Forwarded-For/-Proto/-Host``, ``X-Real-IP`` and ``Forwarded`` are ours.
  From an untrusted peer the incoming ones are replaced (XFF is kept and
  extended in ``append`` mode, as Envoy/HAProxy do); from a trusted peer they
  are kept and extended.
* ``remove`` then ``add`` (config) apply last; ``add`` overrides.

Traceability (:class:`TraceHeaders`, both directions):

* **Request ID.** A client's ID is kept when it sent exactly one that is valid
  (1 to 200 characters, letters, digits and ``-._~:+/=``); otherwise (none, several,
  too long, other characters) a new random one replaces it. The ID goes upstream in
  place of whatever the client sent under that name, and back to the client on
  the response, replacing any the upstream returned. This is Heroku's router's
  rule; Envoy generates IDs the same way but by default distrusts the client's.
* **Upstream target.** Off by default (it names internal addresses): the
  response carries the URL of the target that answered, replacing any upstream
  header of that name.

Input header names must be lowercase bytes (as h11 and ASGI give them); output
names are lowercase too. Multi-value fields keep their order.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from .._exceptions import ConfigError
from .._http11 import FIELD_NAME, FIELD_VALUE, CheckedFields, is_checked

__all__ = [
    "FORWARDING",
    "HOP_BY_HOP",
    "NO_TRACE",
    "ForwardedConfig",
    "TraceHeaders",
    "build_request_headers",
    "build_response_headers",
    "client_ip",
    "incoming_request_id",
    "new_request_id",
    "strip_hop_by_hop",
    "validate_header_config",
]

Headers = Iterable[tuple[bytes, bytes]]
HeaderList = list[tuple[bytes, bytes]]
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

HOP_BY_HOP = frozenset({
    b"connection", b"proxy-connection", b"keep-alive", b"proxy-authenticate",
    b"proxy-authorization", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
#: The forwarding headers this module generates.
FORWARDING = frozenset({
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip", b"forwarded",
})
# A client may not nominate these in Connection (framing, routing, what we add).
_PROTECTED = frozenset({b"host", b"content-length", b"transfer-encoding"}) | FORWARDING
_LOOKALIKE_OF = HOP_BY_HOP | FORWARDING | {b"host", b"content-length"}
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

# Per-name handling in build_request_headers; anything else is copied.
_DROP, _CONNECTION, _TE, _UPGRADE, _HOST, _XFF, _PROTO, _XHOST, _REAL_IP, _FWD = range(10)
_REQUEST_KIND = {
    b"connection": _CONNECTION, b"proxy-connection": _DROP, b"keep-alive": _DROP,
    b"proxy-authenticate": _DROP, b"proxy-authorization": _DROP, b"te": _TE,
    b"trailer": _DROP, b"transfer-encoding": _DROP, b"upgrade": _UPGRADE,
    b"content-length": _DROP, b"host": _HOST, b"x-forwarded-for": _XFF,
    b"x-forwarded-proto": _PROTO, b"x-forwarded-host": _XHOST, b"x-real-ip": _REAL_IP,
    b"forwarded": _FWD,
}


def _to_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str | bytes):
        return (value,)
    return tuple(value)


def _hop_count(name: str) -> Callable[[Any, Any, Any], None]:
    def check(_inst: Any, _attr: Any, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{name} must be an integer >= 0 or None, got {value!r}")
    return check


def _check_mode(_inst: Any, _attr: Any, value: Any) -> None:
    if value not in ("append", "replace"):
        raise ConfigError(f"xff_mode must be 'append' or 'replace', got {value!r}")


@attrs.frozen
class ForwardedConfig:
    """Who we trust for forwarding headers, and which ones we emit.

    Which address is the client (X-Real-IP, logs, ``hash_on="client_ip"``):

    * a peer outside ``trusted_proxies`` is the client itself, and whatever it
      wrote in ``X-Forwarded-For``/``X-Real-IP``/``Forwarded`` is not believed;
    * from a trusted peer, with ``xff_num_trusted_hops`` unset (the default),
      ``X-Forwarded-For`` is walked from the right over addresses inside
      ``trusted_proxies``; the first one outside them is the client (nginx's
      ``real_ip_recursive``, Envoy's ``xff_trusted_cidrs``). Every entry left
      of it may have been forged by that client and is never read;
    * from a trusted peer, with ``xff_num_trusted_hops=N``, the client is the
      N-th entry from the right of the incoming ``X-Forwarded-For`` (Envoy's
      ``xff_num_trusted_hops`` with ``use_remote_address``): the peer and the
      N - 1 proxies behind it each appended one entry. ``N=0`` means the peer is
      the client. Use this when the proxies in front have addresses you cannot
      list, e.g. a cloud load balancer.

    Attributes:
        trusted_proxies: CIDRs (``"10.0.0.0/8"``, ``"127.0.0.1"``) of the proxies
            in front of us; parsed into :attr:`networks` at construction. Only a
            peer inside one of them is believed about the client; to trust every
            peer (a hop count decided by the network layout alone) list
            ``"0.0.0.0/0"`` and ``"::/0"`` explicitly.
        xff_num_trusted_hops: ``None`` for the rightmost-untrusted rule above, or
            the number of trusted proxy hops (Envoy's count; needs
            ``trusted_proxies``).
        trusted_hops: another spelling of the hop count, one that does not count
            the peer: ``trusted_hops=h`` is ``xff_num_trusted_hops=h + 1``. Give one
            of the two, not both.
        xff_mode: ``"append"`` keeps the incoming X-Forwarded-For chain and appends
            the peer; ``"replace"`` sends only the peer (unless the peer is trusted,
            then the chain is kept).
        forwarded: emit RFC 7239 ``Forwarded``.
        x_forwarded: emit ``X-Forwarded-For/-Proto/-Host`` and ``X-Real-IP``.
    """

    trusted_proxies: tuple[str, ...] = attrs.field(default=(), converter=_to_tuple)
    xff_num_trusted_hops: int | None = attrs.field(
        default=None, validator=_hop_count("xff_num_trusted_hops"))
    trusted_hops: int | None = attrs.field(default=None, validator=_hop_count("trusted_hops"),
                                           repr=False, eq=False)
    xff_mode: str = attrs.field(default="append", validator=_check_mode)
    forwarded: bool = True
    x_forwarded: bool = True
    networks: tuple[_Network, ...] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        networks = []
        for cidr in self.trusted_proxies:
            try:
                networks.append(ipaddress.ip_network(cidr))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"Invalid trusted proxy {cidr!r}: {exc}") from None
        object.__setattr__(self, "networks", tuple(networks))
        if self.trusted_hops is not None:
            if self.xff_num_trusted_hops is not None:
                raise ConfigError("Give xff_num_trusted_hops or trusted_hops, not both "
                                  "(trusted_hops=h is xff_num_trusted_hops=h + 1)")
            object.__setattr__(self, "xff_num_trusted_hops", self.trusted_hops + 1)
        elif self.xff_num_trusted_hops and not networks:
            # A hop count with nobody trusted would be silently ignored.
            raise ConfigError(
                "xff_num_trusted_hops needs trusted_proxies: the peers allowed to report "
                "the client address (use ['0.0.0.0/0', '::/0'] to trust every peer)")

    def is_trusted(self, peer_ip: str | None) -> bool:
        """True if ``peer_ip`` is inside one of :attr:`trusted_proxies`."""
        if not self.networks or not peer_ip:
            return False
        ip = _parse_ip(peer_ip)
        return ip is not None and self.covers(ip)

    def covers(self, ip: _Address) -> bool:
        """True if the parsed address ``ip`` is inside one of :attr:`networks`."""
        return any(ip in net for net in self.networks)


#: A request ID a client may choose: short, and harmless in a header, a log or a URL.
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._~:+/=-]{1,200}")
# Names a trace header cannot take: framing, routing, hop-by-hop, the forwarding headers.
_RESERVED = HOP_BY_HOP | FORWARDING | {b"host", b"content-length"}
_RESPONSE_SKIP = HOP_BY_HOP | {b"content-length"}


def _trace_name(what: str) -> Callable[[Any, Any, Any], None]:
    def check(_inst: Any, _attr: Any, value: Any) -> None:
        if value is None or value == "":
            return
        raw = _config_bytes(value) if isinstance(value, str) else None
        if raw is None or FIELD_NAME(raw) is None:
            raise ConfigError(f"{what} must be a header name (an HTTP token such as "
                              f"'X-Request-ID'), '' or None, got {value!r}")
        if raw.lower() in _RESERVED:
            raise ConfigError(f"{what} cannot be {value!r}: the gateway sets that header "
                              "itself or removes it")
    return check


@attrs.frozen
class TraceHeaders:
    """The traceability headers a facade sets: a request ID, and which target answered.

    Attributes:
        request_id: the request ID header (``"X-Request-ID"`` in the facades); ``None``
            or ``""`` turns request IDs off. See the module docstring for the rules.
        upstream_target: a response header naming the target that answered (for
            instance ``"X-Upstream-Target"``); ``None`` or ``""`` (the default) sends none.
    """

    request_id: str | None = attrs.field(default=None, validator=_trace_name("request_id_header"))
    upstream_target: str | None = attrs.field(
        default=None, validator=_trace_name("upstream_target_header"))
    #: lowercase wire names, ``None`` when off
    request_id_name: bytes | None = attrs.field(init=False, repr=False, eq=False)
    upstream_target_name: bytes | None = attrs.field(init=False, repr=False, eq=False)
    #: per-name handling of request headers, with the request ID header dropped
    request_kinds: Mapping[bytes, int] = attrs.field(init=False, repr=False, eq=False)
    #: upstream response headers never relayed (hop-by-hop, framing, the ones we set)
    response_skip: frozenset[bytes] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        rid = self.request_id.lower().encode("latin-1") if self.request_id else None
        upstream = (self.upstream_target.lower().encode("latin-1")
                    if self.upstream_target else None)
        if rid is not None and rid == upstream:
            raise ConfigError("request_id_header and upstream_target_header must differ, "
                              f"both are {self.request_id!r}")
        object.__setattr__(self, "request_id_name", rid)
        object.__setattr__(self, "upstream_target_name", upstream)
        object.__setattr__(self, "request_kinds",
                           _REQUEST_KIND if rid is None else {**_REQUEST_KIND, rid: _DROP})
        own = {name for name in (rid, upstream) if name is not None}
        object.__setattr__(self, "response_skip", _RESPONSE_SKIP | own)


#: No traceability headers (the engine's default; the facades turn request IDs on).
NO_TRACE = TraceHeaders()


def incoming_request_id(headers: Headers, name: bytes) -> bytes | None:
    """The client's request ID under ``name``: its value if it sent exactly one valid one."""
    found: bytes | None = None
    for key, value in headers:
        if key == name:
            if found is not None:
                return None  # several: none of them is the request's ID
            found = value
    if found is None or _VALID_REQUEST_ID.fullmatch(found) is None:
        return None
    return found


def new_request_id(rng: random.Random) -> bytes:
    """A new request ID: 128 random bits as 32 lowercase hex digits (nginx's ``$request_id``).

    Drawn from ``rng`` rather than the system's entropy pool: an ID must be unique,
    not unguessable. The UUID text form would cost three times as much per request
    for dashes nobody needs.
    """
    return b"%032x" % rng.getrandbits(128)


def _parse_ip(text: str | bytes) -> _Address | None:
    try:
        ip = ipaddress.ip_address(text.decode("ascii") if isinstance(text, bytes) else text)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _tokens(values: Iterable[bytes]) -> set[bytes]:
    return {t.strip().lower() for v in values for t in v.split(b",")}


def _drop_names(headers: HeaderList, names: Iterable[bytes]) -> HeaderList:
    names = set(names)
    return [h for h in headers if h[0] not in names] if names else headers


def strip_hop_by_hop(headers: Headers, *, keep_upgrade: bool = False) -> HeaderList:
    """Remove hop-by-hop fields and those nominated in ``Connection``.

    ``TE: trailers`` survives as ``te: trailers``. With ``keep_upgrade`` the
    ``Upgrade`` field and ``Connection: upgrade`` are kept (protocol upgrades).
    """
    out: HeaderList = []
    connection: list[bytes] = []
    te_trailers = False
    for name, value in headers:
        if name in HOP_BY_HOP:
            if name == b"connection":
                connection.append(value)
            elif name == b"te":
                te_trailers = te_trailers or b"trailers" in _tokens((value,))
            elif name == b"upgrade" and keep_upgrade:
                out.append((name, value))
            continue
        out.append((name, value))
    return _finish_hop(out, connection, te_trailers, keep_upgrade)


def _finish_hop(out: HeaderList, connection: list[bytes], te_trailers: bool,
                keep_upgrade: bool) -> HeaderList:
    if connection:
        nominated = _tokens(connection)
        if keep_upgrade and b"upgrade" in nominated and any(n == b"upgrade" for n, _ in out):
            out.append((b"connection", b"upgrade"))
        out = _drop_names(out, nominated - _PROTECTED - HOP_BY_HOP)
    elif keep_upgrade:
        out = [h for h in out if h[0] != b"upgrade"]  # Upgrade without Connection: upgrade
    if te_trailers:
        out.append((b"te", b"trailers"))
    return out


def client_ip(peer_ip: str | None, headers: Headers, cfg: ForwardedConfig) -> str:
    """The client address to log, rate-limit and hash on.

    The TCP peer, unless the peer is a trusted proxy: then X-Forwarded-For
    names the client, read by the rule :class:`ForwardedConfig` describes.
    ``""`` when the peer is unknown.
    """
    if not peer_ip or not cfg.is_trusted(peer_ip):
        return peer_ip or ""
    return _walk_xff(peer_ip, [v for n, v in headers if n == b"x-forwarded-for"], cfg)


def _walk_xff(peer_ip: str, lines: list[bytes], cfg: ForwardedConfig) -> str:
    """The client named by the X-Forwarded-For ``lines`` sent by the trusted ``peer_ip``.

    Several header lines form one list, in order (RFC 9110 §5.3). Each proxy
    appends the address it received the request from, so only the entries
    right of the client were written by proxies we trust; the walk therefore
    never looks further left than it must, and an entry it cannot parse ends it
    (everything left of a garbled entry is unverifiable).
    """
    chain = b",".join(line for line in (v.strip() for v in lines) if line)
    if not chain:
        return peer_ip
    hops = cfg.xff_num_trusted_hops
    if hops is not None:
        if hops == 0:
            return peer_ip
        entries = chain.rsplit(b",", hops)
        if len(entries) < hops:
            return peer_ip  # fewer proxies than declared: the chain is not what we expect
        walked = [_parse_ip(e.strip()) for e in entries[-hops:]]
        client = walked[0]
        if client is None or None in walked:
            return peer_ip
        return str(client)
    # Rightmost entry outside the trusted ranges (nginx real_ip_recursive): stop at the
    # first untrusted address; on a malformed entry keep the last good one, which a
    # trusted proxy wrote; if every entry is trusted the leftmost one is the client.
    found = peer_ip
    for entry in reversed(chain.split(b",")):
        ip = _parse_ip(entry.strip())
        if ip is None:
            break
        found = str(ip)
        if not cfg.covers(ip):
            break
    return found


# Framing is computed for every message (the upstream pool for requests, the server for
# responses); a configured value would contradict it and desynchronise the peer.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
#: Hop-by-hop fields a configuration may not add: each leg's connection is the gateway's.
#: (Proxy-Authorization and Proxy-Authenticate stay allowed: credentials for a proxy
#: in front of the targets are a legitimate thing to add.)
_CONNECTION_LEVEL = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"te",
                               b"trailer", b"upgrade"})
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _config_bytes(item: Any) -> bytes | None:
    if isinstance(item, str):
        try:
            return item.encode("latin-1")
        except UnicodeEncodeError:
            return None
    if isinstance(item, bytes | bytearray):
        return bytes(item)
    return None


def validate_header_config(add: Mapping[Any, Any] | None, remove: Iterable[Any] | None,
                           *, direction: str) -> None:
    """Refuse header edits that could never be sent, at construction rather than per request.

    ``add``/``remove`` are a facade's ``headers_to_add``/``headers_to_remove`` (or the
    response ones); ``direction`` (``"request"`` or ``"response"``) only words the
    message. A name must be an HTTP token; a value may not contain CR, LF, NUL or another
    control character (HTAB aside) nor start or end with whitespace, which is what the
    HTTP/1.1 writers accept; ``Content-Length`` and ``Transfer-Encoding`` cannot be added
    because the framing is computed for each message, nor the hop-by-hop fields of a
    connection (``Connection``, ``Keep-Alive``, ``Upgrade``, ...). Strings must be Latin-1.

    Raises:
        ConfigError: naming the offending header and what is wrong with it.
    """
    for name, value in (add or {}).items():
        what = f"Invalid {direction} header to add {name!r}"
        raw_name = _config_bytes(name)
        if raw_name is None or FIELD_NAME(raw_name) is None:
            raise ConfigError(f"{what}: a header name must be a non-empty HTTP token "
                              "(letters, digits and !#$%&'*+-.^_`|~), without ':' or spaces")
        if raw_name.lower() in _FRAMING:
            raise ConfigError(f"{what}: message framing is computed by the gateway and "
                              "cannot be set")
        if raw_name.lower() in _CONNECTION_LEVEL:
            raise ConfigError(f"{what}: it describes one connection (hop-by-hop), which "
                              "the gateway manages on each leg, and is never forwarded")
        raw_value = _config_bytes(value)
        if raw_value is None:
            raise ConfigError(f"{what}: the value must be a Latin-1 str or bytes, "
                              f"got {value!r}")
        if _CONTROL.search(raw_value):
            raise ConfigError(f"{what}: the value contains CR, LF, NUL or another control "
                              "character")
        if FIELD_VALUE(raw_value) is None:
            raise ConfigError(f"{what}: the value starts or ends with whitespace")
    for name in remove or ():
        raw_name = _config_bytes(name)
        if raw_name is None or FIELD_NAME(raw_name) is None:
            raise ConfigError(f"Invalid {direction} header to remove {name!r}: a header name "
                              "must be a non-empty HTTP token, without ':' or spaces")


def _forwarded_value(value: bytes) -> bytes:
    if _TOKEN.fullmatch(value):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _encode_map(items: Mapping[str, str] | None) -> HeaderList:
    if not items:
        return []
    return [(k.lower().encode("latin-1") if isinstance(k, str) else bytes(k).lower(),
             v.encode("latin-1") if isinstance(v, str) else bytes(v)) for k, v in items.items()]


def _apply_config(out: HeaderList, add: Mapping[str, str] | None,
                  remove: Iterable[str] | None, *, protect: bytes | None) -> HeaderList:
    if remove:
        names = {r.lower().encode("latin-1") if isinstance(r, str) else bytes(r).lower()
                 for r in remove}
        names.discard(protect)
        out = _drop_names(out, names)
    extra = _encode_map(add)
    if extra:
        out = _drop_names(out, (n for n, _ in extra))
        out.extend(extra)
    return out


class _ClientFields:
    """The client's request header lines, sorted for :func:`build_request_headers`.

    ``plain`` holds the lines forwarded as they are (hop-by-hop ones and those
    nominated in ``Connection`` already removed). ``Host`` and the forwarding
    headers are kept apart, because we rewrite them.
    """

    __slots__ = ("plain", "host", "xff", "proto", "xhost", "real_ip", "fwd")

    def __init__(self, headers: Headers, keep_upgrade: bool,
                 kinds: Mapping[bytes, int] = _REQUEST_KIND) -> None:
        plain: HeaderList = []
        connection: list[bytes] = []
        xff: list[bytes] = []
        proto: list[bytes] = []
        xhost: list[bytes] = []
        real_ip: list[bytes] = []
        fwd: list[bytes] = []
        host: bytes | None = None
        te_trailers = False
        for name, value in headers:
            kind = kinds.get(name)
            if kind is None:
                if name.find(b"_") >= 0 and name.replace(b"_", b"-") in _LOOKALIKE_OF:
                    continue
                plain.append((name, value))
            elif kind == _XFF:
                xff.append(value.strip())
            elif kind == _HOST:
                if host is None:
                    host = value
            elif kind == _CONNECTION:
                connection.append(value)
            elif kind == _TE:
                te_trailers = te_trailers or b"trailers" in _tokens((value,))
            elif kind == _UPGRADE:
                if keep_upgrade:
                    plain.append((name, value))
            elif kind == _PROTO:
                proto.append(value)
            elif kind == _XHOST:
                xhost.append(value)
            elif kind == _REAL_IP:
                real_ip.append(value)
            elif kind == _FWD:
                fwd.append(value)
        self.plain = _finish_hop(plain, connection, te_trailers, keep_upgrade)
        self.host = host
        self.xff = xff
        self.proto = proto
        self.xhost = xhost
        self.real_ip = real_ip
        self.fwd = fwd


def build_request_headers(
    headers: Headers,
    *,
    peer: Sequence[Any] | None,
    scheme: str,
    upstream_host: bytes,
    preserve_host: bool,
    add: Mapping[str, str] | None,
    remove: Iterable[str] | None,
    cfg: ForwardedConfig,
    keep_upgrade: bool = False,
    trace: TraceHeaders = NO_TRACE,
    request_id: bytes | None = None,
) -> HeaderList:
    """The header list to send upstream (framing excluded: the pool adds it).

    ``peer`` is ASGI's ``scope["client"]`` (``(host, port)`` or ``None``);
    ``upstream_host`` is :attr:`Origin.authority`. ``request_id`` (decided once per
    request, see :func:`incoming_request_id`) replaces the client's lines under
    ``trace.request_id``. See the module docstring for the rules. ``Host`` always
    comes first.
    """
    fields = _ClientFields(headers, keep_upgrade, trace.request_kinds)
    client_host = fields.host
    peer_ip: str | None = str(peer[0]) if peer and peer[0] else None
    trusted = cfg.is_trusted(peer_ip)
    peer_b = peer_ip.encode("ascii") if peer_ip else None
    scheme_b = scheme.encode("ascii")
    host = client_host if preserve_host and client_host is not None else upstream_host
    result: HeaderList = [(b"host", host)]
    result.extend(fields.plain)
    if cfg.x_forwarded:
        result.extend(_x_forwarded(fields, peer_ip, peer_b, trusted, scheme_b, cfg))
    elif trusted:
        result.extend((n, v) for n, vs in ((b"x-forwarded-for", fields.xff),
                                           (b"x-forwarded-proto", fields.proto),
                                           (b"x-forwarded-host", fields.xhost),
                                           (b"x-real-ip", fields.real_ip))
                      for v in vs)
    if cfg.forwarded:
        result.append((b"forwarded", _forwarded(fields, peer_b, trusted, scheme_b)))
    elif trusted:
        result.extend((b"forwarded", v) for v in fields.fwd)
    if request_id is not None and trace.request_id_name is not None:
        result.append((trace.request_id_name, request_id))
    result = _apply_config(result, add, remove, protect=b"host")
    # checked client fields plus ours (made here, or checked when configured) are checked
    return CheckedFields(result) if is_checked(headers) else result


def _x_forwarded(fields: _ClientFields, peer_ip: str | None, peer_b: bytes | None,
                 trusted: bool, scheme: bytes, cfg: ForwardedConfig) -> HeaderList:
    """Our ``X-Forwarded-For/-Proto/-Host`` and ``X-Real-IP`` lines."""
    out: HeaderList = []
    chain = b", ".join(v for v in fields.xff if v)
    if chain and (trusted or cfg.xff_mode == "append"):
        value = chain + b", " + peer_b if peer_b else chain
    else:
        value = peer_b or b""
    if value:
        out.append((b"x-forwarded-for", value))
    proto = fields.proto
    out.append((b"x-forwarded-proto", proto[0] if trusted and proto else scheme))
    forwarded_host = fields.xhost[0] if trusted and fields.xhost else fields.host
    if forwarded_host:
        out.append((b"x-forwarded-host", forwarded_host))
    real = _walk_xff(peer_ip, fields.xff, cfg) if trusted and peer_ip else peer_ip
    if real:
        out.append((b"x-real-ip", real.encode("ascii")))
    return out


def _forwarded(fields: _ClientFields, peer_b: bytes | None, trusted: bool,
               scheme: bytes) -> bytes:
    """Our RFC 7239 ``Forwarded`` value, after the trusted peer's elements."""
    if peer_b is None:
        node = b"unknown"
    elif peer_b.find(b":") >= 0:  # not `in`: that raises and clears a TypeError inside
        node = b'"[' + peer_b + b']"'
    else:
        node = peer_b
    element = b"for=" + node + b";proto=" + scheme
    if fields.host:
        element += b";host=" + _forwarded_value(fields.host)
    if trusted and fields.fwd:
        element = b", ".join(fields.fwd) + b", " + element
    return element


def build_response_headers(
    headers: Headers,
    *,
    add: Mapping[str, str] | None = None,
    remove: Iterable[str] | None = None,
    content_length: int | None = None,
    trace: TraceHeaders = NO_TRACE,
    request_id: bytes | None = None,
    upstream_target: bytes | None = None,
) -> HeaderList:
    """The header list to send downstream from an upstream response.

    Hop-by-hop fields (and those nominated in ``Connection``) and
    ``Transfer-Encoding`` are removed: the server frames the response itself.
    ``Content-Length`` is kept only when the caller relays a body framed by it:
    pass ``content_length`` (the upstream's value) and exactly one
    ``content-length`` header with that value is sent. Repeated fields such as
    ``Set-Cookie`` stay separate lines, in order. ``request_id`` and
    ``upstream_target`` are sent under the names ``trace`` gives them (when it
    gives one), replacing the upstream's lines of those names; ``remove`` and
    ``add`` still apply after them.
    """
    out: HeaderList = []
    connection: list[bytes] = []
    skip = trace.response_skip
    for name, value in headers:
        if name in skip:
            if name == b"connection":
                connection.append(value)
            continue
        out.append((name, value))
    if connection:
        out = _drop_names(out, _tokens(connection) - _PROTECTED - HOP_BY_HOP)
    if content_length is not None:
        out.append((b"content-length", b"%d" % content_length))
    if request_id is not None and trace.request_id_name is not None:
        out.append((trace.request_id_name, request_id))
    if upstream_target is not None and trace.upstream_target_name is not None:
        out.append((trace.upstream_target_name, upstream_target))
    out = _apply_config(out, add, remove, protect=None)
    # checked upstream fields plus ours (made here, or checked when configured) are checked
    return CheckedFields(out) if is_checked(headers) else out
