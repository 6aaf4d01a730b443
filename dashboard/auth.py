"""Who may open the dashboard: anyone on loopback, and with the token (TICKERDASH_TOKEN) anywhere else.

The same checks guard every HTTP request of the Dash app and every websocket handshake of the gateway.
A browser presents the token once as `?token=...`; the app then keeps it in an HttpOnly cookie, which
the browser also sends to the gateway (cookies are per host, not per port). Scripts may send
`Authorization: Bearer <token>` instead.

Whatever the token, the `Host` a request names must be one the dashboard answers to (loopback names,
the bound address, an IP literal, or a name listed in TICKERDASH_ALLOWED_HOSTS), and an `Origin`, when
sent, must be that same host. Otherwise a page on evil.example whose name is re-pointed at 127.0.0.1
(DNS rebinding) would be same-origin with the token-less loopback dashboard, read it and edit its rules.
"""

from __future__ import annotations

import hmac
import ipaddress
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, urlsplit

TOKEN_COOKIE = "tickerdash_token"
TOKEN_QUERY = "token"
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
MIN_TOKEN_CHARS = 16
# placeholders that have appeared in examples: a deployment that keeps one is as open as one without a token
PLACEHOLDER_TOKENS = frozenset({"change-me", "changeme", "secret", "token", "password"})
HOW_TO_SET_TOKEN = (
    "set TICKERDASH_TOKEN (or --token) to a random secret of at least 16 characters, e.g. "
    "`export TICKERDASH_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')`"
)


class TokenRequiredError(ValueError):
    """A non-loopback address was asked for without a token."""


def is_loopback(host: str) -> bool:
    """Whether binding this host keeps the server reachable from this machine only."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def required_token(host: str, token: str | None) -> str | None:
    """The token to enforce for a bind address: none on loopback unless given; a real secret elsewhere."""
    if is_loopback(host):
        return token or None
    if not token:
        raise TokenRequiredError(f"binding {host} (not loopback) needs a token: {HOW_TO_SET_TOKEN}")
    if token.strip().lower() in PLACEHOLDER_TOKENS or len(token) < MIN_TOKEN_CHARS:
        raise TokenRequiredError(
            f"binding {host} (not loopback) needs a real token, not a placeholder or one "
            f"shorter than {MIN_TOKEN_CHARS} characters: {HOW_TO_SET_TOKEN}"
        )
    return token


def allowed_hosts(bind_host: str, extra: str | None = None) -> frozenset[str]:
    """Host names requests may name: loopback, the bound address, and the comma-separated `extra` names."""
    names = {"localhost", "ip6-localhost", "127.0.0.1", "::1"}
    if bind_host not in WILDCARD_BINDS:
        names.add(bind_host.strip("[]").lower())
    names.update(name.strip().strip("[]").lower() for name in (extra or "").split(",") if name.strip())
    return frozenset(names)


def host_name(authority: str) -> str | None:
    """The host of a `Host` header or URL authority (`name:port`, `[::1]:port`), lower case; None if malformed."""
    try:
        return urlsplit(f"//{authority.strip()}").hostname
    except ValueError:
        return None


def host_accepted(allowed: frozenset[str], host_header: str | None) -> bool:
    """Whether a request's `Host` is one this dashboard answers to.

    An IP literal is always accepted: a page can only make the browser send one by being served from that
    address itself, so it cannot be a rebinding attack; it is names that an attacker can re-point.
    """
    name = host_name(host_header or "")
    if not name:
        return False
    if name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def origin_accepted(allowed: frozenset[str], host_header: str | None, origin: str | None) -> bool:
    """Whether a request's `Origin` (absent for same-origin GETs and scripts) is the page of this very host."""
    if origin is None:
        return True
    try:
        origin_host = urlsplit(origin).hostname
    except ValueError:
        return False
    same_host = origin_host is not None and origin_host == host_name(host_header or "")
    return same_host and host_accepted(allowed, host_header)


def refusal(allowed: frozenset[str], host_header: str | None, origin: str | None) -> tuple[int, str] | None:
    """The HTTP status and message refusing a request's Host or Origin, or None when both are fine."""
    if not host_accepted(allowed, host_header):
        return 421, (
            f"this dashboard does not answer to the host {host_header!r}: open it as "
            f"{', '.join(sorted(allowed))} or an IP address, or add the name to TICKERDASH_ALLOWED_HOSTS\n"
        )
    if not origin_accepted(allowed, host_header, origin):
        return 403, f"requests from pages of {origin!r} are refused (cross-origin)\n"
    return None


def presented_token(query: str = "", cookie_header: str | None = None, authorization: str | None = None) -> str | None:
    """The token a request carries, from the query string, the cookie or a bearer header (in that order)."""
    from_query = parse_qs(query).get(TOKEN_QUERY)
    if from_query:
        return from_query[0]
    if cookie_header:
        try:
            cookies = SimpleCookie(cookie_header)
        except CookieError:
            cookies = SimpleCookie()
        if TOKEN_COOKIE in cookies:
            return cookies[TOKEN_COOKIE].value
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return None


def token_accepted(expected: str | None, presented: str | None) -> bool:
    """True when no token is enforced, or the presented one matches (in constant time)."""
    if expected is None:
        return True
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())
