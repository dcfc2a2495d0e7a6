"""OAuth2 bearer tokens (RFC 6750): JWTs signed by the issuer, verified against its JWKS.

A token is accepted when all of these hold, else 401 `invalid_token`:
  - its header names an allowed asymmetric algorithm (never `none`, never HMAC, whatever the JWKS or the
    token say: OAuthConfig refuses them) and a `kid`;
  - the JWKS holds that `kid` (for an unknown one the JWKS is fetched again, at most once per
    `jwks_refetch_min_s`: key rotation works, and a flood of made-up kids costs one fetch per interval;
    keys older than `jwks_max_age_s` are fetched again, so a withdrawn key stops verifying),
    and the key is of the algorithm's kind (and of the algorithm the JWK names, if it names one);
  - the signature verifies; `iss` and `aud` are the configured ones; `exp` has not passed and `nbf` (if
    any) has come, both within `leeway_s`;
  - it names a client: `client_id`, else `sub`.
Scopes come from `scope` (space-separated, RFC 8693) or `scp` (a list, or a string); a route needing a
scope the token lacks is 403 `insufficient_scope`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import structlog

from intake.http.config import OAuthConfig

log = structlog.get_logger(__name__)

CLIENT_CHARS_MAX = 255
REALM = "payments"


@dataclass(frozen=True)
class Principal:
    client: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class SigningKey:
    jwk: jwt.PyJWK
    alg: str | None  # the algorithm the JWK names, if it names one: then only that one


class AuthError(Exception):
    """401 (`invalid_token`, or no token at all: `error` None) or 403 (`insufficient_scope`)."""

    def __init__(self, status: int, error: str | None, description: str, scope: str | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.scope = scope

    def www_authenticate(self) -> str:
        """The challenge (RFC 6750 §3); a request without credentials gets no error code."""
        parts = [f'realm="{REALM}"']
        if self.error:
            parts.append(f'error="{self.error}"')
            parts.append(f'error_description="{_quoted(self.description)}"')
        if self.scope:
            parts.append(f'scope="{self.scope}"')
        return "Bearer " + ", ".join(parts)


class IssuerUnavailable(Exception):
    """The JWKS could not be fetched and no key is held for the token: nothing can be verified."""


def _quoted(text: str) -> str:
    return "".join(c for c in text if c not in '"\\' and " " <= c <= "~")


def invalid(description: str) -> AuthError:
    return AuthError(401, "invalid_token", description)


def parse_jwks(document: object, algorithms: tuple[str, ...]) -> dict[str, SigningKey]:
    """The signing keys of a JWKS by kid; keys without a kid, for encryption, of an unsupported type or of
    an algorithm not allowed are left out."""
    keys: dict[str, SigningKey] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str) or entry.get("use", "sig") != "sig":
            continue
        if "alg" in entry and entry["alg"] not in algorithms:
            continue
        try:
            keys[entry["kid"]] = SigningKey(jwt.PyJWK(entry), entry.get("alg"))
        except jwt.PyJWTError:
            continue  # a key type or curve this service cannot use: other keys still work
    return keys


def token_header(token: str, algorithms: tuple[str, ...]) -> tuple[str, str]:
    """(alg, kid) of a token whose header passes the allow-list; raises AuthError otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise invalid("the token is not a JWS compact serialisation") from None
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in algorithms:
        raise invalid(f"algorithm {alg!r} is not accepted")
    if not isinstance(kid, str) or not kid:
        raise invalid("the token names no key (kid)")
    return alg, kid


def verify_claims(token: str, key: SigningKey, alg: str, config: OAuthConfig) -> dict[str, Any]:
    """The verified claims; raises AuthError for a bad signature, issuer, audience, exp or nbf. A key of
    another kind than the algorithm's (an RSA key for ES256) does not verify."""
    if key.alg is not None and key.alg != alg:
        raise invalid(f"the key is for {key.alg}, the token says {alg}")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key.jwk.key, algorithms=[alg], audience=config.audience, issuer=config.issuer,
            leeway=config.leeway_s, options={"require": ["exp", "iss", "aud"]})
    except jwt.ExpiredSignatureError:
        raise invalid("the token has expired") from None
    except jwt.ImmatureSignatureError:
        raise invalid("the token is not valid yet (nbf)") from None
    except jwt.InvalidIssuerError:
        raise invalid("the token is from another issuer") from None
    except jwt.InvalidAudienceError:
        raise invalid("the token is for another audience") from None
    except jwt.MissingRequiredClaimError as error:
        raise invalid(f"the token has no {error.claim} claim") from None
    except (jwt.PyJWTError, ValueError, TypeError):
        raise invalid("the token's signature does not verify") from None
    return claims


def principal_of(claims: Mapping[str, Any]) -> Principal:
    client = claims.get("client_id") or claims.get("sub")
    if not isinstance(client, str) or not client or len(client) > CLIENT_CHARS_MAX:
        raise invalid("the token names no client (client_id or sub)")
    scopes: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(item for item in value if isinstance(item, str))
    return Principal(client, frozenset(scopes))


def require_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise AuthError(403, "insufficient_scope", f"this needs the scope {scope}", scope=scope)


class KeySet:
    """The issuer's keys, fetched at start and again for an unknown kid, at most every `jwks_refetch_min_s`."""

    def __init__(self, config: OAuthConfig, fetch: Callable[[], Awaitable[object]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._fetch = fetch
        self._clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Fetch the JWKS now; raises IssuerUnavailable when it cannot be read (the keys held stay)."""
        self._fetched_at = self._clock()
        try:
            document = await self._fetch()
        except (httpx.HTTPError, ValueError) as error:
            raise IssuerUnavailable(f"the JWKS at {self.config.jwks_url} could not be read: {error}") from error
        self._keys = parse_jwks(document, self.config.algorithms)

    async def key(self, kid: str) -> SigningKey | None:
        if self._stale():
            async with self._lock:
                if self._stale():
                    try:
                        await self.refresh()
                    except IssuerUnavailable as error:  # keep verifying with the keys held
                        log.warning("jwks_refresh_failed", error=str(error))
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:  # concurrent requests with the new kid share one fetch
            if kid not in self._keys and self._may_refetch():
                try:
                    await self.refresh()
                except IssuerUnavailable:
                    if not self._keys:
                        raise
        if not self._keys:  # nothing to verify any token with: the issuer is the problem, not the token
            raise IssuerUnavailable(f"no signing key from {self.config.jwks_url} yet")
        return self._keys.get(kid)

    def _stale(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at >= self.config.jwks_max_age_s

    def _may_refetch(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self.config.jwks_refetch_min_s


def http_fetcher(config: OAuthConfig, client: httpx.AsyncClient) -> Callable[[], Awaitable[object]]:
    async def fetch() -> object:
        response = await client.get(config.jwks_url, timeout=config.jwks_timeout_s)
        response.raise_for_status()
        return response.json()
    return fetch


class Authenticator:
    def __init__(self, config: OAuthConfig, keys: KeySet) -> None:
        self.config = config
        self.keys = keys

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization: Bearer <jwt>` header; raises AuthError or IssuerUnavailable."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, None, "a bearer token is required")
        token = token.strip()
        alg, kid = token_header(token, self.config.algorithms)
        key = await self.keys.key(kid)
        if key is None:
            raise invalid(f"the issuer has no key {kid!r}")
        return principal_of(verify_claims(token, key, alg, self.config))
