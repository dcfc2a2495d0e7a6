"""Bearer tokens: verified against keys made in the test, no HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from intake.errors import IntakeConfigError
from intake.http.auth import (
    Authenticator,
    AuthError,
    IssuerUnavailable,
    KeySet,
    Principal,
    parse_jwks,
    principal_of,
    require_scope,
)
from intake.http.config import OAuthConfig
from tests.oauth import Issuer, hs256, unsigned

CONFIG = OAuthConfig(issuer="https://issuer.test", jwks_url="https://issuer.test/jwks", leeway_s=30)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def authenticator(issuer: Issuer, clock: Clock | None = None) -> tuple[Authenticator, list[int]]:
    fetches = [0]

    async def fetch() -> object:
        fetches[0] += 1
        return issuer.jwks()

    return Authenticator(CONFIG, KeySet(CONFIG, fetch, clock or Clock())), fetches


def authenticate(auth: Authenticator, token: str | None) -> Principal:
    return asyncio.run(auth.authenticate(None if token is None else f"Bearer {token}"))


def refused(auth: Authenticator, token: str | None) -> AuthError:
    with pytest.raises(AuthError) as caught:
        authenticate(auth, token)
    return caught.value


@pytest.fixture
def issuer() -> Issuer:
    issuer = Issuer(CONFIG.issuer)
    issuer.add_rsa("k1")
    return issuer


def test_a_valid_rs256_token_names_its_client_and_scopes(issuer: Issuer) -> None:
    auth, _ = authenticator(issuer)
    principal = authenticate(auth, issuer.token(client_id="billing", scope="payments:write payments:read"))
    assert principal == Principal("billing", frozenset({"payments:write", "payments:read"}))


def test_an_es256_token_is_accepted_too(issuer: Issuer) -> None:
    kid = issuer.add_ec()
    auth, _ = authenticator(issuer)
    assert authenticate(auth, issuer.token(kid)).client == "client-a"


@pytest.mark.parametrize(("claims", "says"), [  # exp and nbf: seconds from the test's own now
    ({"exp": -60}, "expired"),
    ({"nbf": 120}, "not valid yet"),
    ({"iss": "https://other.test"}, "another issuer"),
    ({"aud": "other-api"}, "another audience"),
    ({"exp": None}, "no exp"),
    ({"sub": None}, "names no client"),
])
def test_a_token_with_a_bad_claim_is_refused_with_invalid_token(issuer: Issuer, claims: dict[str, Any],
                                                              says: str) -> None:
    auth, _ = authenticator(issuer)
    now = int(time.time())  # not at collection: a whole suite runs between that and this test
    claims = {name: now + value if name in ("exp", "nbf") and value is not None else value
              for name, value in claims.items()}
    error = refused(auth, issuer.token(**claims))
    assert (error.status, error.error) == (401, "invalid_token")
    assert says in error.description
    assert error.www_authenticate().startswith('Bearer realm="payments", error="invalid_token"')


def test_exp_and_nbf_are_allowed_the_leeway(issuer: Issuer) -> None:
    auth, _ = authenticator(issuer)
    now = int(time.time())
    assert authenticate(auth, issuer.token(exp=now - 10, nbf=now + 10)).client == "client-a"


def test_alg_none_and_hmac_tokens_are_refused_whatever_the_key(issuer: Issuer) -> None:
    auth, _ = authenticator(issuer)
    public_pem = issuer.published[0]["n"]  # the classic confusion: the public key as an HMAC secret
    for token in (unsigned(issuer.claims(), "k1"), hs256(issuer.claims(), "k1", public_pem)):
        error = refused(auth, token)
        assert error.status == 401
        assert "algorithm" in error.description


def test_a_token_without_kid_or_with_a_bad_signature_is_refused(issuer: Issuer) -> None:
    auth, _ = authenticator(issuer)
    issuer.add_rsa("k2", publish=False)
    assert "kid" in refused(auth, issuer.token(headers={"kid": None})).description
    forged = issuer.token("k2", headers={"kid": "k1"})  # signed by another key, naming k1
    assert "signature" in refused(auth, forged).description
    assert refused(auth, "not.a.jwt").status == 401


def test_no_token_gets_a_challenge_without_an_error_code(issuer: Issuer) -> None:
    auth, _ = authenticator(issuer)
    error = refused(auth, None)
    assert (error.status, error.error, error.www_authenticate()) == (401, None, 'Bearer realm="payments"')


def test_an_unknown_kid_fetches_the_jwks_again_at_most_once_per_interval(issuer: Issuer) -> None:
    clock = Clock()
    auth, fetches = authenticator(issuer, clock)

    async def scenario() -> None:
        await auth.keys.refresh()
        assert fetches[0] == 1
        clock.now += 11
        issuer.add_rsa("k2", publish=False)
        with pytest.raises(AuthError):
            await auth.authenticate(f"Bearer {issuer.token('k2')}")
        assert fetches[0] == 2  # the refetch found no k2
        issuer.publish("k2")
        with pytest.raises(AuthError):  # published now, but the last fetch was less than 10 s ago
            await auth.authenticate(f"Bearer {issuer.token('k2')}")
        assert fetches[0] == 2
        clock.now += 10
        assert (await auth.authenticate(f"Bearer {issuer.token('k2')}")).client == "client-a"
        assert fetches[0] == 3

    asyncio.run(scenario())


def test_a_key_the_issuer_withdraws_stops_verifying_once_the_keys_are_older_than_their_max_age(
        issuer: Issuer) -> None:
    clock = Clock()
    auth, fetches = authenticator(issuer, clock)

    async def scenario() -> None:
        await auth.keys.refresh()
        token = issuer.token("k1")
        assert (await auth.authenticate(f"Bearer {token}")).client == "client-a"
        issuer.published.clear()  # the issuer's rotation ends: k1 withdrawn, k2 its only key
        issuer.add_rsa("k2")
        clock.now += CONFIG.jwks_max_age_s - 1
        assert (await auth.authenticate(f"Bearer {token}")).client == "client-a"  # not stale yet: no fetch
        assert fetches[0] == 1
        clock.now += 1
        with pytest.raises(AuthError, match="no key 'k1'"):
            await auth.authenticate(f"Bearer {token}")
        assert fetches[0] == 2
        assert (await auth.authenticate(f"Bearer {issuer.token('k2')}")).client == "client-a"

    asyncio.run(scenario())


def test_the_issuer_unreachable_with_no_key_held_is_unavailable_not_unauthorised(issuer: Issuer) -> None:
    import httpx

    async def fetch() -> object:
        raise httpx.ConnectError("refused")

    auth = Authenticator(CONFIG, KeySet(CONFIG, fetch, Clock()))
    with pytest.raises(IssuerUnavailable):
        authenticate(auth, issuer.token())
    with pytest.raises(IssuerUnavailable):  # within the refetch interval: still no key, still not the token's fault
        authenticate(auth, issuer.token())


def test_scopes_come_from_scope_or_scp_and_a_missing_one_is_403() -> None:
    assert principal_of({"sub": "a", "scp": ["payments:read"]}).scopes == {"payments:read"}
    assert principal_of({"client_id": "b", "sub": "a", "scope": "x y"}) == Principal("b", frozenset({"x", "y"}))
    with pytest.raises(AuthError) as caught:
        require_scope(principal_of({"sub": "a", "scope": "payments:read"}), "payments:write")
    assert (caught.value.status, caught.value.error) == (403, "insufficient_scope")
    assert 'scope="payments:write"' in caught.value.www_authenticate()


def test_the_jwks_keeps_only_usable_signing_keys_with_a_kid(issuer: Issuer) -> None:
    issuer.add_ec("e1")
    document = {"keys": [*issuer.published, {"kty": "RSA", "n": "x", "e": "AQAB"},  # no kid
                         {**issuer.published[0], "kid": "enc", "use": "enc"},
                         {**issuer.published[0], "kid": "rs512", "alg": "RS512"},
                         {"kid": "junk", "kty": "nope"}]}
    assert sorted(parse_jwks(document, CONFIG.algorithms)) == ["e1", "k1"]
    assert parse_jwks("not a jwks", CONFIG.algorithms) == {}


@pytest.mark.parametrize("algorithms", [("HS256",), ("none",), ("RS256", "hs512"), ()])
def test_hmac_and_none_cannot_be_configured(algorithms: tuple[str, ...]) -> None:
    with pytest.raises(IntakeConfigError):
        OAuthConfig(issuer="https://i", jwks_url="https://i/jwks", algorithms=algorithms)
