//! The reference backend over real HTTP: every endpoint, success and failure.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::support::{
    ISSUER, TestBackend, access_token, client, config, expect_error, get_profile, json as body_json, login,
    metrics_text,
};

async fn started() -> (tempfile::TempDir, TestBackend) {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBackend::start(config(dir.path())).await;
    (dir, b)
}

async fn jwks(b: &TestBackend) -> JwkSet {
    let r = client().get(b.url("/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    serde_json::from_str(&r.text().await.unwrap()).unwrap()
}

/// Verifies a customer JWT the way a platform would: key by `kid` from the
/// published JWKS, algorithm pinned, `iss`/`aud`/`exp` checked.
async fn verify_from_jwks(b: &TestBackend, token: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let set = jwks(b).await;
    let jwk = set.find(header.kid.as_deref().unwrap()).expect("kid published");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&["deskbridge"]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub", "jti"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn customer_login_returns_a_jwt_verifiable_from_the_published_jwks() {
    let (_dir, b) = started().await;
    let seed = b.seed().await;
    let alice = &seed.users[0];
    let r = client()
        .post(b.url("/customer_authenticate"))
        .form(&[("username", &alice.username), ("password", &alice.password)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    let body = body_json(r).await;
    for field in ["issued_at", "JWT", "expires_in"] {
        assert!(body[field].is_string(), "{field} must be a string: {body}");
    }
    assert_eq!(body["expires_in"], "28800");
    let issued_ms: u128 = body["issued_at"].as_str().unwrap().parse().unwrap();
    assert!(issued_ms > 1_600_000_000_000);

    let jwt = body["JWT"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let claims = verify_from_jwks(&b, jwt).await;
    assert_eq!(claims["sub"], alice.customer_id.as_str());
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        28_800
    );
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
}

#[tokio::test]
async fn customer_identifier_is_consistent_unique_and_opaque_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBackend::start(config(dir.path())).await;
    let seed = b.seed().await;
    let (alice, bruno) = (&seed.users[0], &seed.users[1]);
    let sub = |jwt: &str| -> String {
        let payload = jwt.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
        claims["sub"].as_str().unwrap().to_string()
    };
    let first = login(&b, &alice.username, &alice.password).await;
    let second = login(&b, &alice.username, &alice.password).await;
    let other = login(&b, &bruno.username, &bruno.password).await;
    assert_ne!(first, second, "each login is a new token");
    assert_eq!(sub(&first), sub(&second), "consistent");
    assert_ne!(sub(&first), sub(&other), "unique");
    for id in [sub(&first), sub(&other)] {
        let lower = id.to_lowercase();
        for pii in ["alice", "bruno", "martin", "keller", "example.com", "acc-"] {
            assert!(!lower.contains(pii), "identifier {id} leaks {pii}");
        }
        assert!(id.len() >= 40, "an identifier with enough entropy: {id}");
    }

    // A restart keeps the identifier, the signing keys and the tokens.
    let access = access_token(&b, &seed).await;
    let (data_dir, clock) = b.stop().await;
    let b = TestBackend::start_at(config(&data_dir), clock).await;
    assert_eq!(sub(&login(&b, &alice.username, &alice.password).await), sub(&first));
    let r = get_profile(&b, Some(&access), Some(&seed.api_keys[0].key), Some(&first)).await;
    assert_eq!(r.status(), 200, "tokens issued before a restart still work");
    assert_eq!(body_json(r).await["customer_id"], alice.customer_id.as_str());
}

#[tokio::test]
async fn trace_maps_an_identifier_back_to_its_user() {
    let (_dir, b) = started().await;
    let seed = b.seed().await;
    let admin = b.backend.admin();
    assert_eq!(
        admin.trace(&seed.users[2].customer_id).await.unwrap().as_deref(),
        Some("chen")
    );
    assert_eq!(admin.trace("cus_unknown").await.unwrap(), None);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let (_dir, b) = started().await;
    b.seed().await;
    let attempt = |user: &'static str| {
        client()
            .post(b.url("/customer_authenticate"))
            .form(&[("username", user), ("password", "not-the-password")])
            .send()
    };
    let wrong = attempt("alice").await.unwrap();
    let unknown = attempt("nobody-by-this-name").await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(unknown.status(), 401);
    // Every 401 carries a challenge (RFC 9110 §15.5.2), one no browser acts on.
    assert_eq!(wrong.headers()["www-authenticate"], "Form realm=\"customer\"");
    assert_eq!(body_json(wrong).await, body_json(unknown).await);
}

#[tokio::test]
async fn failed_logins_are_throttled_and_successful_ones_never_are() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.throttle.max_failures_per_user = 3;
    cfg.throttle.max_failures_per_address = 50;
    let b = TestBackend::start(cfg).await;
    let seed = b.seed().await;
    let (alice, bruno) = (&seed.users[0], &seed.users[1]);

    // Many successes in a row: never throttled.
    for _ in 0..8 {
        login(&b, &bruno.username, &bruno.password).await;
    }
    let fail = || {
        client()
            .post(b.url("/customer_authenticate"))
            .form(&[("username", "alice"), ("password", "wrong-password")])
            .send()
    };
    for _ in 0..3 {
        assert_eq!(fail().await.unwrap().status(), 401);
    }
    let locked = fail().await.unwrap();
    let headers = expect_error(locked, 429, "too_many_attempts").await;
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry));
    // Locked means locked: even the right password waits, or guessing would go on.
    let right = client()
        .post(b.url("/customer_authenticate"))
        .form(&[("username", &alice.username), ("password", &alice.password)])
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 429);
    // Other users are unaffected; the window ends.
    login(&b, &bruno.username, &bruno.password).await;
    b.clock.advance(Duration::from_secs(901));
    login(&b, &alice.username, &alice.password).await;
}

#[tokio::test]
async fn login_refuses_malformed_requests_with_json_errors() {
    let (_dir, b) = started().await;
    let url = b.url("/customer_authenticate");
    let c = client();
    let r = c
        .post(&url)
        .json(&json!({"username": "a", "password": "b"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 415, "unsupported_media_type").await;
    let r = c.post(&url).form(&[("username", "alice")]).send().await.unwrap();
    expect_error(r, 400, "invalid_request").await;
    let r = c
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=a&username=b&password=c")
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_request").await;
    let huge = format!("username=a&password={}", "x".repeat(64 * 1024));
    let r = c
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(huge)
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "payload_too_large").await;
    let long = format!("username=a&password={}", "x".repeat(1000));
    let r = c
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(long)
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_request").await;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    expect_error(r, 405, "method_not_allowed").await;
    let r = c.post(b.url("/no/such/path")).send().await.unwrap();
    expect_error(r, 404, "not_found").await;
    let r = c
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![0xff, 0xfe, b'=', 0x00])
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_request").await;
}

#[tokio::test]
async fn access_token_accepts_basic_post_and_grant_in_query() {
    let (_dir, b) = started().await;
    let seed = b.seed().await;
    let cl = &seed.clients[0];
    let c = client();
    let basic = c
        .post(b.url("/access_token"))
        .basic_auth(&cl.client_id, Some(&cl.client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let post = c
        .post(b.url("/access_token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &cl.client_id),
            ("client_secret", &cl.client_secret),
            ("scope", "profile:read"),
        ])
        .send()
        .await
        .unwrap();
    // The vendor's example: grant_type in the query string, credentials in the body.
    let vendor = c
        .post(b.url("/access_token?grant_type=client_credentials"))
        .form(&[("client_id", &cl.client_id), ("client_secret", &cl.client_secret)])
        .send()
        .await
        .unwrap();
    for r in [basic, post, vendor] {
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "no-store");
        let body = body_json(r).await;
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600, "numeric expires_in (RFC 6749)");
        assert_eq!(body["client_id"], cl.client_id.as_str());
        let scope = body["scope"].as_str().unwrap();
        assert!(scope.split(' ').any(|s| s == "profile:read"), "{scope}");
        assert!(body["issued_at"].is_string());
        assert!(body["access_token"].as_str().unwrap().len() > 40);
        assert!(body.get("refresh_token").is_none());
    }
    let metrics = metrics_text(b.url("/metrics")).await;
    assert!(metrics.contains("deskbridge_access_tokens_issued_total 3"), "{metrics}");
}

#[tokio::test]
async fn access_token_errors_follow_rfc_6749() {
    let (_dir, b) = started().await;
    let seed = b.seed().await;
    let cl = &seed.clients[0];
    let c = client();
    let url = b.url("/access_token");

    let r = c
        .post(&url)
        .basic_auth(&cl.client_id, Some("wrong-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let h = expect_error(r, 401, "invalid_client").await;
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Basic "));

    // What is quoted back fits RFC 6749 §5.2's characters: no '"', no '\\',
    // nothing outside printable ASCII.
    let r = c
        .post(&url)
        .basic_auth(&cl.client_id, Some(&cl.client_secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&scope=%ff%22%5c")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = body_json(r).await;
    let description = body["error_description"].as_str().unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        description
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'),
        "{description:?}"
    );

    let r = c
        .post(&url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "nobody"),
            ("client_secret", "x"),
        ])
        .send()
        .await
        .unwrap();
    let h = expect_error(r, 401, "invalid_client").await;
    assert!(
        h["www-authenticate"].to_str().unwrap().starts_with("Basic "),
        "every 401 has a challenge"
    );

    let r = c
        .post(&url)
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "invalid_client").await;

    let r = c
        .post(&url)
        .basic_auth(&cl.client_id, Some(&cl.client_secret))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "unsupported_grant_type").await;

    let r = c
        .post(&url)
        .basic_auth(&cl.client_id, Some(&cl.client_secret))
        .form(&[("client_id", &cl.client_id)])
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_request").await;

    let r = c
        .post(&url)
        .basic_auth(&cl.client_id, Some(&cl.client_secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "profile:read admin")])
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_scope").await;

    let r = c
        .post(&url)
        .basic_auth(&cl.client_id, Some(&cl.client_secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_secret", &cl.client_secret),
        ])
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_request").await;

    let r = c
        .post(format!("{url}?grant_type=client_credentials&client_secret=leak"))
        .form(&[("client_id", &cl.client_id)])
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_request").await;

    let r = c
        .post(&url)
        .basic_auth(&cl.client_id, Some(&cl.client_secret))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_request").await;

    let r = c
        .post(&url)
        .header("authorization", "Basic !!!not-base64")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "invalid_client").await;
}

#[tokio::test]
async fn getprofile_returns_the_profile_with_all_three_credentials() {
    let (_dir, b) = started().await;
    let seed = b.seed().await;
    let chen = &seed.users[2];
    let jwt = login(&b, &chen.username, &chen.password).await;
    let token = access_token(&b, &seed).await;
    let key = &seed.api_keys[0].key;

    let r = get_profile(&b, Some(&token), Some(key), Some(&jwt)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["cache-control"],
        "no-store",
        "personal data is never cached"
    );
    let profile = body_json(r).await;
    assert_eq!(profile["customer_id"], chen.customer_id.as_str());
    assert_eq!(profile["name"], "Chen Wei");
    assert_eq!(profile["tier"], "platinum");
    assert_eq!(profile["member_since"], "2016-02-29");
    let accounts = profile["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 3);
    assert_eq!(accounts[0]["type"], "checking");
    assert_eq!(accounts[0]["balance"], json!({"amount": "15020.10", "currency": "SGD"}));
    for field in ["email", "phone", "status"] {
        assert!(
            profile.get(field).is_some() || accounts[0].get(field).is_some(),
            "{field}"
        );
    }

    // The customer token may travel in the JSON body instead.
    let r = client()
        .post(b.url("/getprofile"))
        .bearer_auth(&token)
        .header("api-key", key)
        .json(&json!({"customer_auth": jwt}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r).await["customer_id"], chen.customer_id.as_str());
}

#[tokio::test]
async fn getprofile_tells_system_key_and_customer_failures_apart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.customer_token_ttl_secs = 60;
    let b = TestBackend::start(cfg).await;
    let seed = b.seed().await;
    let alice = &seed.users[0];
    let jwt = login(&b, &alice.username, &alice.password).await;
    let token = access_token(&b, &seed).await;
    let key = seed.api_keys[0].key.as_str();

    // System token: missing (no error code, RFC 6750 §3.1), invalid, wrong scheme.
    let h = expect_error(get_profile(&b, None, Some(key), Some(&jwt)).await, 401, "invalid_token").await;
    assert_eq!(h["www-authenticate"], "Bearer realm=\"deskbridge\"");
    let h = expect_error(
        get_profile(&b, Some("dbat_forged"), Some(key), Some(&jwt)).await,
        401,
        "invalid_token",
    )
    .await;
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    expect_error(
        get_profile(&b, Some(&forged), Some(key), Some(&jwt)).await,
        401,
        "invalid_token",
    )
    .await;
    // Another scheme is no bearer credential at all: no error code either.
    let r = client()
        .post(b.url("/getprofile"))
        .basic_auth("deskbridge", Some("secret"))
        .header("api-key", key)
        .header("customer-auth", format!("JWT {jwt}"))
        .send()
        .await
        .unwrap();
    let h = expect_error(r, 401, "invalid_token").await;
    assert_eq!(h["www-authenticate"], "Bearer realm=\"deskbridge\"");
    // A customer JWT is not a system token.
    expect_error(
        get_profile(&b, Some(&jwt), Some(key), Some(&jwt)).await,
        401,
        "invalid_token",
    )
    .await;

    // API key: missing, unknown, valid but for another API.
    expect_error(
        get_profile(&b, Some(&token), None, Some(&jwt)).await,
        403,
        "invalid_api_key",
    )
    .await;
    expect_error(
        get_profile(&b, Some(&token), Some("dbk_unknown"), Some(&jwt)).await,
        403,
        "invalid_api_key",
    )
    .await;
    let other = b.backend.admin().add_api_key(&["getorders".into()]).await.unwrap();
    expect_error(
        get_profile(&b, Some(&token), Some(&other.key), Some(&jwt)).await,
        403,
        "api_not_allowed",
    )
    .await;

    // Customer token: missing, malformed header, and expired; with its own challenge.
    let h = expect_error(
        get_profile(&b, Some(&token), Some(key), None).await,
        401,
        "invalid_customer_token",
    )
    .await;
    let challenge = h["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("JWT ") && !challenge.contains("invalid_token\""),
        "{challenge}"
    );
    let r = client()
        .post(b.url("/getprofile"))
        .bearer_auth(&token)
        .header("api-key", key)
        .header("customer-auth", format!("Bearer {jwt}"))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "invalid_customer_token").await;
    b.clock.advance(Duration::from_secs(61));
    expect_error(
        get_profile(&b, Some(&token), Some(key), Some(&jwt)).await,
        401,
        "customer_token_expired",
    )
    .await;

    // The system token expires too, and says so as a system failure.
    b.clock.advance(Duration::from_secs(3600));
    let fresh = login(&b, &alice.username, &alice.password).await;
    expect_error(
        get_profile(&b, Some(&token), Some(key), Some(&fresh)).await,
        401,
        "invalid_token",
    )
    .await;

    let metrics = metrics_text(b.url("/metrics")).await;
    assert!(
        metrics.contains("deskbridge_profile_requests_total{outcome=\"customer_token_expired\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn getprofile_refuses_a_revoked_access_token() {
    let (_dir, b) = started().await;
    let seed = b.seed().await;
    let alice = &seed.users[0];
    let jwt = login(&b, &alice.username, &alice.password).await;
    let token = access_token(&b, &seed).await;
    let key = seed.api_keys[0].key.as_str();
    assert_eq!(get_profile(&b, Some(&token), Some(key), Some(&jwt)).await.status(), 200);
    let cl = &seed.clients[0];
    let r = client()
        .post(b.url("/revoke"))
        .basic_auth(&cl.client_id, Some(&cl.client_secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = expect_error(
        get_profile(&b, Some(&token), Some(key), Some(&jwt)).await,
        401,
        "invalid_token",
    )
    .await;
    assert!(h["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    // Revocation survives a restart.
    let (data_dir, clock) = b.stop().await;
    let b = TestBackend::start_at(config(&data_dir), clock).await;
    expect_error(
        get_profile(&b, Some(&token), Some(key), Some(&jwt)).await,
        401,
        "invalid_token",
    )
    .await;
}

/// Forged customer JWTs, each of a classic kind, all refused as invalid.
#[tokio::test]
async fn getprofile_refuses_forged_customer_jwts() {
    let (_dir, b) = started().await;
    let seed = b.seed().await;
    let (alice, bruno) = (&seed.users[0], &seed.users[1]);
    let jwt = login(&b, &alice.username, &alice.password).await;
    let token = access_token(&b, &seed).await;
    let key = seed.api_keys[0].key.as_str();
    let parts: Vec<&str> = jwt.split('.').collect();
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap();
    let enc = |v: &Value| B64.encode(serde_json::to_vec(v).unwrap());

    let mut forgeries: Vec<(&str, String)> = Vec::new();
    // alg "none", unsigned.
    forgeries.push((
        "alg none",
        format!(
            "{}.{}.",
            enc(&json!({"alg": "none", "kid": kid, "typ": "JWT"})),
            parts[1]
        ),
    ));
    // HS256 keyed with the public key's bytes (the algorithm-confusion attack).
    let set = jwks(&b).await;
    let public = serde_json::to_vec(&set.keys[0]).unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid.to_string());
    forgeries.push((
        "HS256 with the public key",
        jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(&public)).unwrap(),
    ));
    // Tampered payload: another customer's sub under the original signature.
    let mut tampered = claims.clone();
    tampered["sub"] = json!(bruno.customer_id);
    forgeries.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], enc(&tampered), parts[2]),
    ));
    // Correctly signed by a key the backend never published.
    let attacker = aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING)
        .unwrap()
        .to_pkcs8v1()
        .unwrap();
    let mut foreign = Header::new(Algorithm::ES256);
    foreign.kid = Some("attacker-key".into());
    forgeries.push((
        "unknown kid",
        jsonwebtoken::encode(&foreign, &claims, &EncodingKey::from_ec_der(attacker.as_ref())).unwrap(),
    ));
    foreign.kid = Some(kid.to_string());
    forgeries.push((
        "known kid, foreign key",
        jsonwebtoken::encode(&foreign, &claims, &EncodingKey::from_ec_der(attacker.as_ref())).unwrap(),
    ));
    forgeries.push(("garbage", "not.a.jwt".into()));
    forgeries.push(("truncated signature", jwt[..jwt.len() - 10].to_string()));

    for (name, forged) in &forgeries {
        let r = get_profile(&b, Some(&token), Some(key), Some(forged)).await;
        let status = r.status().as_u16();
        let body = body_json(r).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_customer_token")),
            "{name}: {body}"
        );
    }
    // The original is still fine.
    assert_eq!(get_profile(&b, Some(&token), Some(key), Some(&jwt)).await.status(), 200);
}

/// Valid signatures with the wrong audience or issuer: a backend with other
/// settings signs with the same keys (same data dir), and ours refuses.
#[tokio::test]
async fn getprofile_refuses_a_jwt_for_another_audience_or_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBackend::start(config(dir.path())).await;
    let seed = b.seed().await;
    let alice = &seed.users[0];
    let (data_dir, clock) = b.stop().await;
    let mut foreign_jwts = Vec::new();
    for (aud, iss) in [("other-platform", ISSUER), ("deskbridge", "https://evil.test")] {
        let mut cfg = config(&data_dir);
        cfg.audience = aud.into();
        cfg.issuer = Some(iss.into());
        let other = TestBackend::start_at(cfg, clock.clone()).await;
        foreign_jwts.push(login(&other, &alice.username, &alice.password).await);
        other.stop().await;
    }
    let b = TestBackend::start_at(config(&data_dir), clock).await;
    let token = access_token(&b, &seed).await;
    for jwt in &foreign_jwts {
        let r = get_profile(&b, Some(&token), Some(&seed.api_keys[0].key), Some(jwt)).await;
        expect_error(r, 401, "invalid_customer_token").await;
    }
}

#[tokio::test]
async fn cookie_mode_sets_a_session_cookie_that_logout_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.session_mode = backend::SessionMode::Cookie;
    let b = TestBackend::start(cfg).await;
    let seed = b.seed().await;
    let alice = &seed.users[0];
    let r = client()
        .post(b.url("/customer_authenticate"))
        .form(&[("username", &alice.username), ("password", &alice.password)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let body = body_json(r).await;
    assert!(
        body.get("JWT").is_none(),
        "cookie mode keeps the session out of the body"
    );
    assert_eq!(body["cookie"], "deskbridge_session");
    for attribute in ["HttpOnly", "SameSite=Lax", "Secure", "Max-Age=28800", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{attribute} missing in {set_cookie}");
    }
    let session = set_cookie.split(';').next().unwrap().to_string();

    let token = access_token(&b, &seed).await;
    let profile = || {
        client()
            .post(b.url("/getprofile"))
            .bearer_auth(&token)
            .header("api-key", &seed.api_keys[0].key)
            .header("cookie", &session)
            .send()
    };
    let r = profile().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r).await["customer_id"], alice.customer_id.as_str());

    let r = client()
        .post(b.url("/customer_logout"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    expect_error(profile().await.unwrap(), 401, "invalid_customer_token").await;
    let r = client().post(b.url("/customer_logout")).send().await.unwrap();
    let h = expect_error(r, 401, "invalid_customer_token").await;
    assert_eq!(h["www-authenticate"], "Form realm=\"customer\"");
}

#[tokio::test]
async fn cookie_sessions_expire() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.session_mode = backend::SessionMode::Cookie;
    cfg.insecure_cookies = true;
    cfg.customer_token_ttl_secs = 30;
    let b = TestBackend::start(cfg).await;
    let seed = b.seed().await;
    let alice = &seed.users[0];
    let r = client()
        .post(b.url("/customer_authenticate"))
        .form(&[("username", &alice.username), ("password", &alice.password)])
        .send()
        .await
        .unwrap();
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        !set_cookie.contains("Secure"),
        "insecure_cookies drops Secure: {set_cookie}"
    );
    let session = set_cookie.split(';').next().unwrap().to_string();
    let token = access_token(&b, &seed).await;
    b.clock.advance(Duration::from_secs(31));
    let r = client()
        .post(b.url("/getprofile"))
        .bearer_auth(&token)
        .header("api-key", &seed.api_keys[0].key)
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "customer_token_expired").await;
}

#[tokio::test]
async fn getprofile_refuses_bad_bodies_without_panicking() {
    let (_dir, b) = started().await;
    let seed = b.seed().await;
    let token = access_token(&b, &seed).await;
    let key = &seed.api_keys[0].key;
    let send = |content_type: &'static str, body: Vec<u8>| {
        client()
            .post(b.url("/getprofile"))
            .bearer_auth(&token)
            .header("api-key", key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    expect_error(
        send("application/json", b"{not json".to_vec()).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        send("application/json", b"[1,2]".to_vec()).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        send("text/plain", b"customer_auth=x".to_vec()).await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    expect_error(
        send("application/json", vec![b' '; 100_000]).await.unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    expect_error(
        send("application/json", b"{}".to_vec()).await.unwrap(),
        401,
        "invalid_customer_token",
    )
    .await;
    let r = send(
        "application/json",
        serde_json::to_vec(&json!({"customer_auth": "x".repeat(5000)})).unwrap(),
    )
    .await
    .unwrap();
    expect_error(r, 401, "invalid_customer_token").await;
}

#[tokio::test]
async fn discovery_documents_describe_the_server() {
    let (_dir, b) = started().await;
    let meta = body_json(
        client()
            .get(b.url("/.well-known/oauth-authorization-server"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(meta["issuer"], ISSUER);
    assert_eq!(meta["token_endpoint"], b.url("/access_token"));
    assert_eq!(meta["jwks_uri"], b.url("/.well-known/jwks.json"));
    assert_eq!(
        meta["grant_types_supported"],
        json!(["client_credentials", contract::token_exchange::GRANT_TYPE])
    );
    assert_eq!(
        meta["response_types_supported"],
        json!([]),
        "required by RFC 8414, empty: no authorization endpoint"
    );
    assert_eq!(
        meta["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post", "private_key_jwt"])
    );
    assert_eq!(
        meta["token_endpoint_auth_signing_alg_values_supported"],
        json!(["ES256", "RS256"])
    );
    let set = jwks(&b).await;
    assert_eq!(set.keys.len(), 1);
    let key = serde_json::to_value(&set.keys[0]).unwrap();
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["use"].as_str()),
        (Some("EC"), Some("P-256"), Some("sig"))
    );
    assert!(key.get("d").is_none(), "never a private part");
    let health = client().get(b.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn rotation_publishes_the_new_key_and_keeps_old_tokens_valid() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBackend::start(config(dir.path())).await;
    let seed = b.seed().await;
    let alice = &seed.users[0];
    let old_jwt = login(&b, &alice.username, &alice.password).await;
    let new_kid = b.backend.admin().rotate_signing_key().await.unwrap();
    let (data_dir, clock) = b.stop().await;
    let b = TestBackend::start_at(config(&data_dir), clock).await;
    let set = jwks(&b).await;
    assert_eq!(set.keys.len(), 2);
    let new_jwt = login(&b, &alice.username, &alice.password).await;
    assert_eq!(
        jsonwebtoken::decode_header(&new_jwt).unwrap().kid.as_deref(),
        Some(new_kid.as_str())
    );
    let token = access_token(&b, &seed).await;
    for jwt in [&old_jwt, &new_jwt] {
        assert_eq!(
            get_profile(&b, Some(&token), Some(&seed.api_keys[0].key), Some(jwt))
                .await
                .status(),
            200
        );
    }
}

#[tokio::test]
async fn rs256_and_eddsa_signing_are_selectable() {
    for (alg, expected, kty) in [
        (backend::SigningAlg::RS256, Algorithm::RS256, "RSA"),
        (backend::SigningAlg::EdDSA, Algorithm::EdDSA, "OKP"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.signing_alg = alg;
        let b = TestBackend::start(cfg).await;
        let seed = b.seed().await;
        let jwt = login(&b, &seed.users[0].username, &seed.users[0].password).await;
        assert_eq!(jsonwebtoken::decode_header(&jwt).unwrap().alg, expected);
        let key = serde_json::to_value(&jwks(&b).await.keys[0]).unwrap();
        assert_eq!(key["kty"], kty);
        let token = access_token(&b, &seed).await;
        assert_eq!(
            get_profile(&b, Some(&token), Some(&seed.api_keys[0].key), Some(&jwt))
                .await
                .status(),
            200
        );
    }
}

/// A data call to `path` with the given credentials (None leaves one out).
fn data_call(
    b: &TestBackend,
    path: &str,
    bearer: Option<&str>,
    api_key: Option<&str>,
    customer_jwt: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut request = client().post(b.url(path));
    if let Some(t) = bearer {
        request = request.bearer_auth(t);
    }
    if let Some(k) = api_key {
        request = request.header("api-key", k);
    }
    if let Some(j) = customer_jwt {
        request = request.header("customer-auth", format!("JWT {j}"));
    }
    request
}

#[tokio::test]
async fn transactions_are_paged_newest_first_for_the_customers_own_accounts_only() {
    let (_dir, b) = started().await;
    let seed = b.seed().await;
    let (alice, bruno) = (&seed.users[0], &seed.users[1]);
    let jwt = login(&b, &alice.username, &alice.password).await;
    let token = access_token(&b, &seed).await;
    let key = seed.api_keys[0].key.as_str();
    let page = |query: &str| {
        data_call(
            &b,
            &format!("/accounts/acc-1001/transactions{query}"),
            Some(&token),
            Some(key),
            Some(&jwt),
        )
        .send()
    };

    // Page by page with the cursor, to the end: every transaction once, newest first.
    let r = page("?limit=10").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let first = body_json(r).await;
    assert_eq!(first["account_id"], "acc-1001");
    assert_eq!(first["transactions"].as_array().unwrap().len(), 10);
    let t = &first["transactions"][0];
    assert_eq!(t["amount"]["currency"], "USD");
    assert!(t["amount"]["amount"].as_str().unwrap().parse::<f64>().is_ok(), "{t}");
    assert_eq!(t["status"], "pending", "the newest are pending: {t}");
    let booked = t["booked_at"].as_str().unwrap();
    assert!(
        booked.len() == 20 && booked.ends_with('Z') && &booked[10..11] == "T",
        "ISO 8601 in UTC: {booked}"
    );
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut answer = first;
    loop {
        for t in answer["transactions"].as_array().unwrap() {
            seen.push((
                t["booked_at"].as_str().unwrap().into(),
                t["id"].as_str().unwrap().into(),
            ));
        }
        let Some(cursor) = answer["next_cursor"].as_str() else {
            break;
        };
        let r = page(&format!("?limit=10&cursor={cursor}")).await.unwrap();
        assert_eq!(r.status(), 200);
        answer = body_json(r).await;
    }
    assert_eq!(seen.len(), 36, "a few months of transactions");
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "strictly newest first, none twice"
    );

    // The page may also be asked for in the body; the query wins.
    let sized = |query: &'static str| {
        data_call(
            &b,
            &format!("/accounts/acc-1001/transactions{query}"),
            Some(&token),
            Some(key),
            Some(&jwt),
        )
        .json(&json!({"page": {"size": 3}}))
        .send()
    };
    let by_body = body_json(sized("").await.unwrap()).await;
    assert_eq!(by_body["transactions"].as_array().unwrap().len(), 3);
    let by_query = body_json(sized("?limit=2").await.unwrap()).await;
    assert_eq!(by_query["transactions"].as_array().unwrap().len(), 2);
    let default = body_json(page("").await.unwrap()).await;
    assert_eq!(default["transactions"].as_array().unwrap().len(), 20);

    // Another customer's account is exactly as absent as no account at all.
    for account in ["acc-2001", "acc-9999"] {
        let r = data_call(
            &b,
            &format!("/accounts/{account}/transactions"),
            Some(&token),
            Some(key),
            Some(&jwt),
        )
        .send()
        .await
        .unwrap();
        expect_error(r, 404, "account_not_found").await;
    }
    let bruno_jwt = login(&b, &bruno.username, &bruno.password).await;
    let r = data_call(
        &b,
        "/accounts/acc-2001/transactions",
        Some(&token),
        Some(key),
        Some(&bruno_jwt),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "bruno's own account");
    assert_eq!(body_json(r).await["transactions"][0]["amount"]["currency"], "EUR");

    for bad in [
        "?limit=0",
        "?limit=101",
        "?limit=ten",
        "?cursor=not-a-cursor",
        "?limit=1&limit=2",
    ] {
        expect_error(page(bad).await.unwrap(), 400, "invalid_request").await;
    }

    // All three credentials, each refused as /getprofile refuses it.
    let path = "/accounts/acc-1001/transactions";
    let r = data_call(&b, path, None, Some(key), Some(&jwt)).send().await.unwrap();
    expect_error(r, 401, "invalid_token").await;
    let r = data_call(&b, path, Some(&token), None, Some(&jwt))
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "invalid_api_key").await;
    let r = data_call(&b, path, Some(&token), Some(key), None).send().await.unwrap();
    expect_error(r, 401, "invalid_customer_token").await;
    let profile_only = b.backend.admin().add_api_key(&["getprofile".into()]).await.unwrap();
    let r = data_call(&b, path, Some(&token), Some(&profile_only.key), Some(&jwt))
        .send()
        .await
        .unwrap();
    expect_error(r, 403, "api_not_allowed").await;
    let c = &seed.clients[0];
    let narrow = client()
        .post(b.url("/access_token"))
        .basic_auth(&c.client_id, Some(&c.client_secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "profile:read")])
        .send()
        .await
        .unwrap();
    let narrow = body_json(narrow).await["access_token"].as_str().unwrap().to_string();
    let r = data_call(&b, path, Some(&narrow), Some(key), Some(&jwt))
        .send()
        .await
        .unwrap();
    let headers = expect_error(r, 403, "insufficient_scope").await;
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("scope=\"transactions:read\"")
    );
    let metrics = metrics_text(b.url("/metrics")).await;
    for counted in [
        r#"deskbridge_data_requests_total{api="gettransactions",outcome="account_not_found"} 2"#,
        r#"deskbridge_data_requests_total{api="gettransactions",outcome="insufficient_scope"} 1"#,
    ] {
        assert!(metrics.contains(counted), "{counted} in {metrics}");
    }
}

#[tokio::test]
async fn a_card_is_blocked_once_per_idempotency_key() {
    let (_dir, b) = started().await;
    let seed = b.seed().await;
    let (alice, bruno) = (&seed.users[0], &seed.users[1]);
    let jwt = login(&b, &alice.username, &alice.password).await;
    let token = access_token(&b, &seed).await;
    let key = seed.api_keys[0].key.as_str();
    let block = |card: &str, idempotency_key: Option<&str>, body: Value| {
        let mut request =
            data_call(&b, &format!("/cards/{card}/block"), Some(&token), Some(key), Some(&jwt)).json(&body);
        if let Some(k) = idempotency_key {
            request = request.header("idempotency-key", k);
        }
        request.send()
    };
    let profile_cards = || async {
        let r = get_profile(&b, Some(&token), Some(key), Some(&jwt)).await;
        body_json(r).await["cards"].clone()
    };
    let cards = profile_cards().await;
    assert_eq!(cards[0]["id"], "card-1101", "{cards}");
    assert_eq!(cards[0]["status"], "active", "{cards}");
    assert_eq!(cards[0]["last4"], "4821", "{cards}");

    let r = block("card-1101", None, json!({"reason": "lost"})).await.unwrap();
    expect_error(r, 400, "idempotency_key_required").await;

    let r = block("card-1101", Some("key-1"), json!({"reason": "lost"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("idempotent-replayed").is_none(),
        "the first answer is not a replay"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let first = body_json(r).await;
    assert_eq!(
        (
            first["id"].as_str(),
            first["status"].as_str(),
            first["block_reason"].as_str()
        ),
        (Some("card-1101"), Some("blocked"), Some("lost"))
    );
    assert_eq!(profile_cards().await[0]["status"], "blocked");

    // A minute later, the same key and body: the first answer again, nothing blocked anew.
    b.clock.advance(Duration::from_secs(60));
    let r = block("card-1101", Some("key-1"), json!({"reason": "lost"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    assert_eq!(body_json(r).await, first);

    // The same key for another request is refused, whatever the card.
    let r = block("card-1101", Some("key-1"), json!({"reason": "stolen"}))
        .await
        .unwrap();
    expect_error(r, 422, "idempotency_key_reused").await;
    let r = block("card-1102", Some("key-1"), json!({"reason": "lost"}))
        .await
        .unwrap();
    expect_error(r, 422, "idempotency_key_reused").await;

    // A new key on a blocked card: 200 with the card as it is (its first block stays).
    let r = block("card-1101", Some("key-2"), json!({"reason": "stolen"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("idempotent-replayed").is_none());
    let again = body_json(r).await;
    assert_eq!(
        (again["block_reason"].as_str(), again["blocked_at"].as_str()),
        (Some("lost"), first["blocked_at"].as_str())
    );

    // Another customer's card is not found; a bad body or key is a 400.
    let r = block("card-2101", Some("key-3"), json!({"reason": "lost"}))
        .await
        .unwrap();
    expect_error(r, 404, "card_not_found").await;
    for body in [json!({}), json!({"reason": "bored"}), json!(["lost"])] {
        let r = block("card-1102", Some("key-4"), body).await.unwrap();
        expect_error(r, 400, "invalid_request").await;
    }
    let r = block("card-1102", Some(&"k".repeat(256)), json!({"reason": "lost"}))
        .await
        .unwrap();
    expect_error(r, 400, "invalid_request").await;
    let r = data_call(&b, "/cards/card-1102/block", Some(&token), Some(key), Some(&jwt))
        .header("idempotency-key", "key-5")
        .header("idempotency-key", "key-6")
        .json(&json!({"reason": "lost"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_request").await;
    let r = data_call(&b, "/cards/card-1102/block", None, Some(key), Some(&jwt))
        .header("idempotency-key", "key-5")
        .json(&json!({"reason": "lost"}))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "invalid_token").await;

    // Keys are each customer's own: bruno's "key-1" is a new key.
    let bruno_jwt = login(&b, &bruno.username, &bruno.password).await;
    let r = data_call(&b, "/cards/card-2101/block", Some(&token), Some(key), Some(&bruno_jwt))
        .header("idempotency-key", "key-1")
        .json(&json!({"reason": "damaged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r).await["block_reason"], "damaged");

    // After 24 h a key is forgotten and may name a new request.
    b.clock.advance(Duration::from_secs(24 * 3600));
    let token = access_token(&b, &seed).await;
    let jwt = login(&b, &alice.username, &alice.password).await;
    let r = data_call(&b, "/cards/card-1102/block", Some(&token), Some(key), Some(&jwt))
        .header("idempotency-key", "key-1")
        .json(&json!({"reason": "damaged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r).await["id"], "card-1102");
    let metrics = metrics_text(b.url("/metrics")).await;
    assert!(
        metrics.contains(r#"deskbridge_data_requests_total{api="blockcard",outcome="idempotency_key_reused"} 2"#),
        "{metrics}"
    );
}
