"""Assertions shared by the interop tests: what a correct answer looks like."""

from __future__ import annotations

import re

import requests

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def profile_of(response: requests.Response, customer_id: str) -> dict:
    """Asserts `response` is the /getprofile answer for `customer_id`."""
    assert response.status_code == 200, f"{response.status_code} {response.text}"
    profile = response.json()
    assert profile["customer_id"] == customer_id
    for key in ("name", "email", "phone", "tier"):
        assert isinstance(profile[key], str), (key, profile)
    assert profile["name"], profile
    assert DATE.match(profile["member_since"]), profile
    assert isinstance(profile["accounts"], list), profile
    for account in profile["accounts"]:
        assert {"id", "type", "status", "balance"} <= set(account), account
        assert isinstance(account["balance"]["amount"], str), account
        assert re.fullmatch(r"[A-Z]{3}", account["balance"]["currency"]), account
    return profile


def client_credentials_token(token: dict, client_id: str, scope: str) -> None:
    """Asserts the RFC 6749 §5.1 shape of a client-credentials token response."""
    assert token["token_type"].lower() == "bearer", token
    assert token["access_token"], token
    assert isinstance(token["expires_in"], int) and token["expires_in"] > 0, token
    # oauthlib hands scope back as a list; the wire value is space-separated.
    granted = token["scope"] if isinstance(token["scope"], str) else " ".join(token["scope"])
    assert granted == scope, token
    assert token["client_id"] == client_id, token
    assert "refresh_token" not in token, token
