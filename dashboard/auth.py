"""Who may open the dashboard: anyone on loopback, and with the token (TICKERDASH_TOKEN) anywhere else.

The same check guards every HTTP request of the Dash app and every websocket handshake of the gateway.
A browser presents the token once as `?token=...`; the app then keeps it in an HttpOnly cookie, which
the browser also sends to the gateway (cookies are per host, not per port). Scripts may send
`Authorization: Bearer <token>` instead.
"""

from __future__ import annotations

import hmac
import ipaddress
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

TOKEN_COOKIE = "tickerdash_token"
TOKEN_QUERY = "token"
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


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
    """The token to enforce for a bind address: none on loopback unless given; mandatory elsewhere."""
    if token:
        return token
    if is_loopback(host):
        return None
    raise TokenRequiredError(f"binding {host} (not loopback) needs a token: set TICKERDASH_TOKEN or --token")


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
