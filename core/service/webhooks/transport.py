"""The HTTP side of webhooks, with the guards a request made by the server on an admin's say-so
needs (server-side request forgery):

- a URL is checked when it is configured: http(s), a host that is a name or an IP address (not an
  IPvFuture `[v1.x]` or a percent-encoded name, which no lookup resolves), a port from 1 to 65535;
- an address that is loopback, private, link-local, unspecified, multicast, reserved, in a block of
  IANA's special-purpose registries (192.0.0.0/24, the documentation and benchmarking nets, ...) or
  otherwise not public is refused unless WEBHOOK_ALLOWED_NETWORKS lists it, however it is written (`0`,
  `2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]`) or whichever name resolves to it; an IPv6 address that
  embeds an IPv4 (IPv4-mapped, IPv4-compatible, 6to4 2002::/16, NAT64 64:ff9b::/96) is judged as that IPv4;
- at every attempt the host is looked up once more and each address checked, and the connection goes
  to an address that was checked (no second lookup that a DNS answer could change in between);
- a refused target is never contacted, and its attempt records one generic error, so the delivery
  history tells nothing about which ports answer there;
- an attempt has one total deadline (WEBHOOK_TIMEOUT_SECONDS) from the lookup to the answer's last
  byte: a receiver trickling its answer cannot hold a sender longer."""

from __future__ import annotations

import base64
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urlsplit, urlunsplit

from core.common.errors import UserInputError

MAX_URL_LENGTH = 2000
MAX_ANSWER_BYTES = 65536  # of the receiver's answer body, read and dropped
NOT_ALLOWED = (
    "not sent: the host is not at an address webhooks may reach "
    "(loopback, private, link-local, ...; see WEBHOOK_ALLOWED_NETWORKS)"
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# A host name as DNS has it: dot-separated labels of letters, digits, hyphens (and underscores, which some
# internal names carry); an internationalised name in its xn-- form.
HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")
# IANA's IPv4 and IPv6 special-purpose address registries (iana-ipv4-special-registry, iana-ipv6-special-registry),
# less the blocks Python's flags name alike in every version (private networks, loopback, link-local, unspecified,
# 100.64.0.0/10, 240.0.0.0/4) and those that embed an IPv4 (judged by it): ipaddress follows the registries only
# from Python 3.11.10 and 3.12.4 on, and never wholly (192.0.0.8 is "global" on 3.11.7).
SPECIAL_PURPOSE = tuple(
    ipaddress.ip_network(block)
    for block in (
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.31.196.0/24",
        "192.52.193.0/24",
        "192.88.99.0/24",
        "192.175.48.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "64:ff9b:1::/48",
        "100::/64",
        "100:0:0:1::/64",
        "2001::/23",
        "2001:db8::/32",
        "2620:4f:8000::/48",
        "3fff::/20",
        "5f00::/16",
    )
)
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: the IPv4 is the last 32 bits
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d (:: and ::1 are not)


@dataclass(frozen=True)
class Target:
    """A checked URL, taken apart: what the connection, the request line and the headers need."""

    scheme: str
    host: str  # a name or an address (IPv6 without brackets)
    port: int
    path: str  # path and query, at least "/"
    credentials: tuple[str, str] | None  # user:password@ of the URL, sent as HTTP Basic authorization

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.scheme == "https" else 80) else f"{host}:{self.port}"


@dataclass(frozen=True)
class Attempt:
    """What one POST came to: delivered on a 2xx; else the code (if any) and the reason."""

    delivered: bool
    response_code: int | None
    error: str | None


# --- URLs ---------------------------------------------------------------------------------------


def parse_url(url: str) -> Target:
    """An http(s) URL with a host and a valid port, taken apart; else a one-line error naming `url`."""
    text = (url or "").strip()
    bad = UserInputError(f"url: {text[:200]!r} is not an http:// or https:// address with a host", field="url")
    try:
        parts = urlsplit(text)
    except ValueError:  # "http://[::1": an unclosed IPv6 bracket
        raise bad from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or len(text) > MAX_URL_LENGTH
        or not text.isprintable()
        or " " in text
    ):
        raise bad
    if not _host_is_name_or_address(parts.hostname, bracketed="[" in parts.netloc):
        raise UserInputError(f"url: {text[:200]!r} has a host that is neither a name nor an IP address", field="url")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise UserInputError(f"url: {text[:200]!r} has a port that is not a number from 1 to 65535", field="url")
    credentials = None
    if parts.username is not None:
        credentials = (unquote(parts.username), unquote(parts.password or ""))
    return Target(
        parts.scheme,
        parts.hostname,
        port or (443 if parts.scheme == "https" else 80),
        (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        credentials,
    )


def _host_is_name_or_address(host: str, *, bracketed: bool) -> bool:
    """An IPv6 address in brackets, or a DNS name (an IPv4 address in any form getaddrinfo reads is one):
    what a lookup can resolve. Not an IPvFuture literal (`[v1.x]`) nor a percent-encoded name."""
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return HOST_NAME.match(host) is not None


def redact_url(url: str) -> str:
    """The URL as lists, the audit log and the logs show it: any user:password@ becomes ***@."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def check_url(url: str, allowed: list[Network], timeout: float) -> str:
    """A URL fit to configure (stripped): well formed, and its host at no address refused_kind refuses (allowed:
    WEBHOOK_ALLOWED_NETWORKS), looked up within timeout seconds.

    A name that does not resolve now is accepted: every attempt looks it up and checks it again."""
    target = parse_url(url)
    try:
        addresses = resolve(target.host, target.port, timeout)
    except (OSError, TimeoutError, UnicodeError):
        return url.strip()
    for address in addresses:
        kind = refused_kind(address, allowed)
        if kind is not None:
            where = target.host if target.host == str(address) else f"{target.host} ({address})"
            raise UserInputError(
                f"url: {where} is not a public address ({kind}); webhooks reach such an address "
                "only when WEBHOOK_ALLOWED_NETWORKS lists it",
                field="url",
            )
    return url.strip()


# --- addresses ----------------------------------------------------------------------------------


def refused_kind(address: Address, allowed: list[Network]) -> str | None:
    """Why webhooks may not reach this address ("loopback", "special-purpose: 192.0.0.0/24", ...), or None
    when they may. An address the allow-list (WEBHOOK_ALLOWED_NETWORKS) names is allowed; one that embeds an
    IPv4 is that IPv4's case."""
    if any(address in network for network in allowed):
        return None
    embedded = embedded_ipv4(address)
    if embedded is not None:  # ::ffff:127.0.0.1 is 127.0.0.1 on a dual-stack socket; 6to4 and NAT64 relay to it
        kind = refused_kind(embedded, allowed)
        return None if kind is None else f"{kind}: it embeds {embedded}"
    for kind, refused in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
    ):
        if refused:
            return kind
    special = next((block for block in SPECIAL_PURPOSE if address in block), None)
    if special is not None:
        return f"special-purpose: {special}"
    for kind, refused in (("private", address.is_private), ("reserved", address.is_reserved)):
        if refused:
            return kind
    return None if address.is_global else "non-public"


def embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (IPv4-mapped, 6to4, NAT64's well-known prefix,
    IPv4-compatible), or None."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    for carried in (address.ipv4_mapped, address.sixtofour):
        if carried is not None:
            return carried
    if address in NAT64 or (address in IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def resolve(host: str, port: int, timeout: float) -> list[Address]:
    """Every address of host (a name, or an address in any form getaddrinfo reads), looked up once.

    getaddrinfo has no timeout of its own: it runs in a thread of its own, left to finish in the
    background when it outlives `timeout`."""
    answer: list = []

    def look_up() -> None:
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except Exception as error:  # noqa: BLE001  (handed to the caller's thread)
            answer.append(error)

    lookup = threading.Thread(target=look_up, name="webhook-lookup", daemon=True)
    lookup.start()
    lookup.join(timeout)
    if not answer:
        raise TimeoutError(f"looking up {host} took over {timeout:g} s")
    if isinstance(answer[0], Exception):
        raise answer[0]
    addresses = []
    for *_, sockaddr in answer[0]:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop an IPv6 scope (fe80::1%eth0)
        if address not in addresses:
            addresses.append(address)
    return addresses


# --- one attempt ----------------------------------------------------------------------------------


def post(url: str, headers: dict[str, str], body: bytes, timeout: float, allowed: list[Network]) -> Attempt:
    """POST body to url, all of it (lookup, connection, TLS, request, answer) within `timeout` seconds, unless
    it resolves to an address refused_kind refuses (allowed: WEBHOOK_ALLOWED_NETWORKS); never raises for what
    the receiver, its DNS or the network do."""
    deadline = time.monotonic() + timeout
    try:
        target = parse_url(url)
        addresses = resolve(target.host, target.port, _left(deadline))
        if not addresses or any(refused_kind(address, allowed) is not None for address in addresses):
            return Attempt(False, None, NOT_ALLOWED)
        code, reason = _exchange(target, addresses, headers, body, deadline)
    except UserInputError as error:  # a URL stored before these checks existed
        return Attempt(False, None, str(error))
    except Exception as error:  # refused, reset, DNS, TLS, the deadline: the receiver's side, recorded and retried
        if time.monotonic() >= deadline or isinstance(error, TimeoutError):
            return Attempt(False, None, f"timed out: no complete answer within {timeout:g} s")
        return Attempt(False, None, f"{type(error).__name__}: {getattr(error, 'reason', None) or error}"[:500])
    if 200 <= code < 300:
        return Attempt(True, code, None)
    return Attempt(False, code, f"HTTP {code} {reason}".strip()[:500])


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


def _connect(addresses: list[Address], port: int, deadline: float) -> socket.socket:
    """A TCP connection to the first of the checked addresses that answers."""
    failure: OSError = OSError("no address")
    for address in addresses:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(_left(deadline))
            sock.connect((str(address), port))
            return sock
        except OSError as error:
            sock.close()
            failure = error
    raise failure


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()  # certificates verified against the URL's host name


def _exchange(target: Target, addresses: list[Address], headers: dict[str, str], body: bytes, deadline: float) -> tuple[int, str]:
    """Send the request over a connection to a checked address; the status and reason of the answer.

    Socket timeouts bound each read only, so at the deadline a timer shuts the connection down
    (through a duplicate of its socket, which stays valid while TLS wraps the original)."""
    sock = _connect(addresses, target.port, deadline)
    watch = sock.dup()
    cut = threading.Timer(max(deadline - time.monotonic(), 0.0), _shut, (watch,))
    cut.daemon = True
    cut.start()
    connection = http.client.HTTPConnection(target.host, target.port)
    try:
        if target.scheme == "https":
            sock = _tls().wrap_socket(sock, server_hostname=target.host)
        connection.sock = sock
        sent = {"Host": target.host_header, **headers}
        if target.credentials is not None:
            sent["Authorization"] = "Basic " + base64.b64encode(":".join(target.credentials).encode()).decode()
        connection.request("POST", target.path, body=body, headers=sent)
        response = connection.getresponse()
        response.read(MAX_ANSWER_BYTES)
        return response.status, response.reason
    finally:
        cut.cancel()
        cut.join()
        watch.close()
        connection.close()
        sock.close()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass
