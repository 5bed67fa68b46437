"""RFC 8414 discovery with Authlib: find the metadata from the issuer, then use
its token_endpoint, jwks_uri and revocation_endpoint exactly as given."""

from __future__ import annotations

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata, get_well_known_url

import expect

# Every check of Authlib's validator but response_types_supported (see
# test_metadata_has_every_required_field).
VALIDATED = [k for k in AuthorizationServerMetadata.REGISTRY_KEYS if k != "response_types_supported"]


@pytest.fixture(scope="module")
def metadata(backend) -> AuthorizationServerMetadata:
    url = get_well_known_url(backend.issuer, external=True)
    assert url == backend.metadata_url
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return AuthorizationServerMetadata(response.json())


def test_metadata_names_its_issuer(backend, metadata):
    # RFC 8414 §3.3: the issuer in the document is the one it was looked up by.
    assert metadata["issuer"] == backend.issuer


def test_authlib_validates_the_metadata(metadata):
    for key in VALIDATED:
        getattr(metadata, f"validate_{key}")()
    assert "client_credentials" in metadata.grant_types_supported
    assert {"client_secret_basic", "client_secret_post"} <= set(metadata.token_endpoint_auth_methods_supported)


def test_metadata_has_every_required_field(metadata):
    # RFC 8414 §2 requires the field; it is empty because the backend has no
    # authorization endpoint (Authlib's validator wants a non-empty list, a
    # stricter reading than the RFC, so that one check is left out above).
    assert metadata.get("response_types_supported") == []


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_discovered_endpoints_are_usable_as_given(backend, metadata, method):
    assert method in metadata.token_endpoint_auth_methods_supported
    with OAuth2Session(
        client_id=backend.client_id,
        client_secret=backend.client_secret,
        token_endpoint_auth_method=method,
        revocation_endpoint_auth_method=method,
        token_endpoint=metadata["token_endpoint"],
        grant_type="client_credentials",
        scope=" ".join(metadata["scopes_supported"]),
    ) as oauth:
        token = oauth.fetch_token(timeout=10)  # no URL: the discovered token_endpoint
        expect.client_credentials_token(token, backend.client_id, " ".join(metadata["scopes_supported"]))

        customer_jwt = backend.login("alice")
        signing_key = jwt.PyJWKClient(metadata["jwks_uri"], timeout=10).get_signing_key_from_jwt(customer_jwt)
        claims = jwt.decode(
            customer_jwt,
            signing_key.key,
            algorithms=["ES256"],
            audience=backend.audience,
            issuer=metadata["issuer"],
        )
        response = oauth.post(backend.profile_url, headers=backend.profile_headers(customer_jwt), timeout=10)
        expect.profile_of(response, claims["sub"])

        revoked = oauth.revoke_token(metadata["revocation_endpoint"], token=token["access_token"], timeout=10)
        assert revoked.status_code == 200, revoked.text
        response = oauth.post(backend.profile_url, headers=backend.profile_headers(customer_jwt), timeout=10)
        assert response.status_code == 401


def test_discovery_follows_a_configured_issuer(backend_factory):
    """With `issuer` configured, the JWT's iss and the metadata's issuer agree,
    while the endpoints still point at where the backend really listens."""
    custom = backend_factory(signing_alg="RS256", issuer="https://login.bank.example", audience="interop-desk")
    document = requests.get(custom.metadata_url, timeout=10).json()
    assert document["issuer"] == "https://login.bank.example"
    assert document["token_endpoint"] == custom.token_url
    customer_jwt = custom.login("alice")
    claims = jwt.decode(
        customer_jwt,
        jwt.PyJWKClient(document["jwks_uri"], timeout=10).get_signing_key_from_jwt(customer_jwt).key,
        algorithms=["RS256"],
        audience="interop-desk",
        issuer=document["issuer"],
    )
    assert claims["sub"] == custom.user("alice").customer_id
