"""requests-oauthlib's backend-application (client credentials) flow."""

from __future__ import annotations

import pytest
from oauthlib.oauth2 import BackendApplicationClient
from oauthlib.oauth2.rfc6749.errors import InvalidClientError, InvalidScopeError
from requests.auth import HTTPBasicAuth
from requests_oauthlib import OAuth2Session

import expect

pytestmark = pytest.mark.usefixtures("oauthlib_insecure_transport")


def new_session(backend) -> OAuth2Session:
    return OAuth2Session(client=BackendApplicationClient(client_id=backend.client_id))


def fetch_with_basic(oauth: OAuth2Session, backend, secret: str, **kwargs) -> dict:
    return oauth.fetch_token(
        token_url=backend.token_url, auth=HTTPBasicAuth(backend.client_id, secret), timeout=10, **kwargs
    )


def fetch_with_post(oauth: OAuth2Session, backend, secret: str, **kwargs) -> dict:
    return oauth.fetch_token(
        token_url=backend.token_url, include_client_id=True, client_secret=secret, timeout=10, **kwargs
    )


FLOWS = {"basic": fetch_with_basic, "post": fetch_with_post}


@pytest.mark.parametrize("flow", FLOWS)
def test_backend_application_token_calls_getprofile(backend, customer_jwt, flow):
    oauth = new_session(backend)
    token = FLOWS[flow](oauth, backend, backend.client_secret)
    expect.client_credentials_token(token, backend.client_id, backend.client_scopes)
    assert oauth.authorized
    response = oauth.post(backend.profile_url, headers=backend.profile_headers(customer_jwt), timeout=10)
    assert response.request.headers["Authorization"] == f"Bearer {token['access_token']}"
    expect.profile_of(response, backend.user("alice").customer_id)


@pytest.mark.parametrize("flow", FLOWS)
def test_client_credentials_travel_where_the_flow_puts_them(backend, flow):
    """Basic keeps the secret out of the body; the body flow keeps the
    Authorization header empty. Either way the backend accepts exactly one."""
    seen = []
    oauth = new_session(backend)
    oauth.hooks["response"].append(lambda r, *a, **k: seen.append(r))
    FLOWS[flow](oauth, backend, backend.client_secret)
    (response,) = seen
    body = response.request.body
    body = body.decode() if isinstance(body, bytes) else body
    assert "grant_type=client_credentials" in body
    if flow == "basic":
        assert response.request.headers["Authorization"].startswith("Basic ")
        assert "client_secret" not in body
    else:
        assert "Authorization" not in response.request.headers
        assert f"client_id={backend.client_id}" in body and "client_secret=" in body


@pytest.mark.parametrize("flow", FLOWS)
def test_wrong_secret_raises_invalid_client(backend, flow):
    with pytest.raises(InvalidClientError) as raised:
        FLOWS[flow](new_session(backend), backend, "not-the-secret")
    assert raised.value.error == "invalid_client"
    assert raised.value.description


@pytest.mark.parametrize("flow", FLOWS)
def test_unknown_scope_raises_invalid_scope(backend, flow):
    with pytest.raises(InvalidScopeError):
        FLOWS[flow](new_session(backend), backend, backend.client_secret, scope=["admin"])


@pytest.mark.parametrize("flow", FLOWS)
def test_requested_scope_is_granted(backend, flow):
    token = FLOWS[flow](new_session(backend), backend, backend.client_secret, scope=["profile:read"])
    assert token["scope"] == ["profile:read"]
