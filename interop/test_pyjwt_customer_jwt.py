"""PyJWT's PyJWKClient verifying customer JWTs from the published JWKS, for
every signing algorithm the backend offers."""

from __future__ import annotations

import time

import jwt
import pytest
import requests
from jwt import PyJWKClient

import expect

REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "exp", "jti"]

# Each algorithm runs on its own backend. RS256 also moves iss and aud away
# from their defaults, so the checks below cannot pass by accident.
CONFIGS = {
    "ES256": {},
    "RS256": {"signing_alg": "RS256", "issuer": "https://login.bank.example", "audience": "interop-desk"},
    "EdDSA": {"signing_alg": "EdDSA", "customer_token_ttl_secs": 900},
}
OTHER_ALGS = {"ES256": "RS256", "RS256": "ES256", "EdDSA": "ES256"}


@pytest.fixture(params=list(CONFIGS), scope="module")
def alg(request):
    return request.param


@pytest.fixture(scope="module")
def signer(backend_factory, alg):
    return backend_factory(**CONFIGS[alg])


def verify(signer, token: str, alg: str, options: dict | None = None, **kwargs) -> dict:
    """Verifies as a platform would: key from the JWKS by kid, algorithm
    pinned, iss, aud and exp checked, every contract claim required."""
    signing_key = PyJWKClient(signer.jwks_url, timeout=10).get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        signing_key.key,
        algorithms=[alg],
        audience=signer.audience,
        issuer=signer.issuer,
        options={"require": REQUIRED_CLAIMS, "verify_signature": True, **(options or {})},
        **kwargs,
    )


def test_pyjwkclient_verifies_the_customer_jwt(signer, alg):
    before = int(time.time())
    token = signer.login("alice")
    claims = verify(signer, token, alg)
    user = signer.user("alice")
    assert claims["sub"] == user.customer_id
    assert claims["iss"] == signer.issuer
    assert claims["aud"] == signer.audience
    ttl = signer.config.get("customer_token_ttl_secs", 8 * 3600)
    assert claims["exp"] - claims["iat"] == ttl
    assert before - 5 <= claims["iat"] <= int(time.time()) + 5
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg
    assert header["kid"]


def test_jwks_publishes_the_signing_key_with_its_algorithm(signer, alg):
    token = signer.login("alice")
    kid = jwt.get_unverified_header(token)["kid"]
    response = requests.get(signer.jwks_url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    keys = {k["kid"]: k for k in response.json()["keys"]}
    assert keys[kid]["alg"] == alg
    assert keys[kid].get("use", "sig") == "sig"
    # Only public material is published.
    for private in ("d", "p", "q", "dp", "dq", "qi"):
        assert private not in keys[kid]
    assert PyJWKClient(signer.jwks_url, timeout=10).get_signing_key(kid).algorithm_name == alg


def test_each_login_is_a_new_token_for_the_same_customer(signer, alg):
    first, second = verify(signer, signer.login("bruno"), alg), verify(signer, signer.login("bruno"), alg)
    assert first["sub"] == second["sub"] == signer.user("bruno").customer_id
    assert first["jti"] != second["jti"]
    assert verify(signer, signer.login("chen"), alg)["sub"] != first["sub"]


def test_a_different_pinned_algorithm_is_refused(signer, alg):
    token = signer.login("alice")
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(
            token,
            PyJWKClient(signer.jwks_url, timeout=10).get_signing_key_from_jwt(token).key,
            algorithms=[OTHER_ALGS[alg]],
            audience=signer.audience,
            issuer=signer.issuer,
        )


def test_wrong_audience_or_issuer_is_refused(signer, alg):
    token = signer.login("alice")
    key = PyJWKClient(signer.jwks_url, timeout=10).get_signing_key_from_jwt(token).key
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key, algorithms=[alg], audience="someone-else", issuer=signer.issuer)
    with pytest.raises(jwt.InvalidIssuerError):
        jwt.decode(token, key, algorithms=[alg], audience=signer.audience, issuer="https://evil.example")


def test_the_token_is_refused_once_exp_has_passed(signer, alg):
    """Verifies as a clock one second past `exp` would, without waiting: a
    negative leeway moves PyJWT's `now` forward (iat's check, which the same
    leeway would trip, is off)."""
    token = signer.login("alice")
    claims = verify(signer, token, alg)
    past_exp = claims["exp"] - time.time() + 1
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(signer, token, alg, leeway=-past_exp, options={"verify_iat": False})
    # Thirty seconds short of exp it is still good.
    verify(signer, token, alg, leeway=-(past_exp - 31), options={"verify_iat": False})


def test_a_tampered_token_is_refused(signer, alg):
    token = signer.login("alice")
    header, payload, signature = token.split(".")
    forged_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"sub":"', b'"sub":"x', 1)
    ).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        verify(signer, f"{header}.{forged_payload}.{signature}", alg)


def test_verified_customer_jwt_works_on_getprofile(signer, alg):
    """The token PyJWT accepted is the one the backend accepts as customer-auth."""
    token = signer.login("chen")
    claims = verify(signer, token, alg)
    access = requests.post(
        signer.token_url,
        data={"grant_type": "client_credentials"},
        auth=(signer.client_id, signer.client_secret),
        timeout=10,
    ).json()["access_token"]
    response = requests.post(
        signer.profile_url,
        headers={"Authorization": f"Bearer {access}", **signer.profile_headers(token)},
        timeout=10,
    )
    expect.profile_of(response, claims["sub"])
