"""Authlib's requests OAuth2Session as the platform's OAuth client."""

from __future__ import annotations

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError

import expect

AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


def session_for(backend, method: str, secret: str | None = None, **kwargs) -> OAuth2Session:
    return OAuth2Session(
        client_id=backend.client_id,
        client_secret=backend.client_secret if secret is None else secret,
        token_endpoint_auth_method=method,
        **kwargs,
    )


@pytest.mark.parametrize("method", AUTH_METHODS)
def test_token_fetched_by_authlib_calls_getprofile(backend, customer_jwt, method):
    with session_for(backend, method) as oauth:
        token = oauth.fetch_token(backend.token_url, grant_type="client_credentials", timeout=10)
        expect.client_credentials_token(token, backend.client_id, backend.client_scopes)
        # Authlib derives expires_at from the numeric expires_in.
        assert token["expires_at"] >= token["expires_in"], token

        # The session itself adds `Authorization: Bearer <token>`.
        response = oauth.post(backend.profile_url, headers=backend.profile_headers(customer_jwt), timeout=10)
        expect.profile_of(response, backend.user("alice").customer_id)


@pytest.mark.parametrize("method", AUTH_METHODS)
def test_authlib_requests_the_scope_it_asks_for(backend, method):
    with session_for(backend, method, scope="profile:read") as oauth:
        token = oauth.fetch_token(backend.token_url, grant_type="client_credentials", timeout=10)
        assert token["scope"] == "profile:read"


@pytest.mark.parametrize("method", AUTH_METHODS)
def test_authlib_raises_invalid_scope(backend, method):
    with session_for(backend, method, scope="admin") as oauth:
        with pytest.raises(OAuthError) as raised:
            oauth.fetch_token(backend.token_url, grant_type="client_credentials", timeout=10)
    assert raised.value.error == "invalid_scope"


@pytest.mark.parametrize("method", AUTH_METHODS)
def test_wrong_secret_raises_invalid_client(backend, method):
    with session_for(backend, method, secret="not-the-secret") as oauth:
        with pytest.raises(OAuthError) as raised:
            oauth.fetch_token(backend.token_url, grant_type="client_credentials", timeout=10)
    assert raised.value.error == "invalid_client"
    assert raised.value.description


def failed_token_request(backend, method: str) -> requests.Response:
    """The token endpoint's answer to a wrong secret, as Authlib sent it."""
    seen: list[requests.Response] = []
    with session_for(backend, method, secret="not-the-secret") as oauth:
        oauth.hooks["response"].append(lambda r, *a, **k: seen.append(r))
        with pytest.raises(OAuthError):
            oauth.fetch_token(backend.token_url, grant_type="client_credentials", timeout=10)
    (response,) = seen
    assert response.headers.get("Cache-Control") == "no-store"
    return response


def test_invalid_client_by_basic_is_401_with_a_basic_challenge(backend):
    """RFC 6749 §5.2: a client that authenticated with the Authorization header
    gets 401 and a WWW-Authenticate matching the scheme it used."""
    response = failed_token_request(backend, "client_secret_basic")
    assert response.request.headers["Authorization"].startswith("Basic ")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].split()[0] == "Basic"


def test_invalid_client_by_post_is_400_or_a_401_with_a_challenge(backend):
    response = failed_token_request(backend, "client_secret_post")
    assert "Authorization" not in response.request.headers
    assert "client_secret=" in response.request.body
    assert response.status_code in (400, 401)
    if response.status_code == 401:
        assert "WWW-Authenticate" in response.headers


def test_authlib_fetches_a_new_token_before_the_old_one_expires(backend, customer_jwt):
    """A client-credentials grant has no refresh token: Authlib re-runs the
    grant itself when the token is within `leeway` of expiring. A leeway
    longer than the token's lifetime makes that happen on the next call."""
    fetched: list[str] = []
    with OAuth2Session(
        client_id=backend.client_id,
        client_secret=backend.client_secret,
        token_endpoint=backend.token_url,
        grant_type="client_credentials",
        leeway=10**6,
        update_token=lambda token, access_token=None, **_: fetched.append(token["access_token"]),
    ) as oauth:
        first = oauth.fetch_token(timeout=10)
        response = oauth.post(backend.profile_url, headers=backend.profile_headers(customer_jwt), timeout=10)
        expect.profile_of(response, backend.user("alice").customer_id)
    assert len(fetched) == 1 and fetched[0] != first["access_token"]
    assert response.request.headers["Authorization"] == f"Bearer {fetched[0]}"


def test_token_revoked_through_authlib_stops_working(backend, customer_jwt):
    with session_for(backend, "client_secret_basic") as oauth:
        token = oauth.fetch_token(backend.token_url, grant_type="client_credentials", timeout=10)
        revoked = oauth.revoke_token(
            f"{backend.url}/revoke", token=token["access_token"], token_type_hint="access_token", timeout=10
        )
        assert revoked.status_code == 200, revoked.text
        response = oauth.post(backend.profile_url, headers=backend.profile_headers(customer_jwt), timeout=10)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
