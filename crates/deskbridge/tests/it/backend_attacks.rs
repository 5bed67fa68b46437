//! Attacks on the reference backend, replayed: login CSRF, sessions that
//! outlive a password change, exposed data files, repeated credentials and
//! parameters, oversized bodies, and JWT header and claim tricks.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use crate::serving::{read_until_closed, sent};
use crate::support::{
    TestBackend, access_token, backend_with, client, config, expect_error, get_profile, json as body_json, login,
};

const HOSTILE: &str = "https://hostile.example";

fn cookie_mode(c: &mut backend::BackendConfig) {
    c.session_mode = backend::SessionMode::Cookie;
    c.site_origins = vec!["https://shop.example.com".into()];
}

fn demo_site(c: &mut backend::BackendConfig) {
    c.demo_site = Some(backend::config::DemoSiteConfig {
        gateway_url: "http://127.0.0.1:9".into(),
        app_key: "app-key".into(),
        channel: "web".into(),
        connection: "acme".into(),
    });
}

/// A bodiless POST to `path` with `headers` (a cookie, what a browser adds).
async fn post(b: &TestBackend, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    headers
        .iter()
        .fold(client().post(b.url(path)), |request, (name, value)| {
            request.header(*name, *value)
        })
        .send()
        .await
        .unwrap()
}

/// A login form post, with `headers` a browser would add.
async fn post_login(b: &TestBackend, username: &str, password: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    headers
        .iter()
        .fold(
            client()
                .post(b.url("/customer_authenticate"))
                .form(&[("username", username), ("password", password)]),
            |request, (name, value)| request.header(*name, *value),
        )
        .send()
        .await
        .unwrap()
}

/// The session cookie (`name=value`) an answer sets, if any.
fn set_cookie(response: &reqwest::Response) -> Option<String> {
    let value = response.headers().get("set-cookie")?.to_str().ok()?;
    Some(value.split(';').next()?.to_string())
}

#[tokio::test]
async fn cross_site_logins_and_logouts_are_refused() {
    let (_dir, b) = backend_with(cookie_mode).await;
    let seed = b.seed().await;
    let alice = &seed.users[0];

    for hostile in [
        vec![("origin", HOSTILE)],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
    ] {
        let r = post_login(&b, &alice.username, &alice.password, &hostile).await;
        let headers = expect_error(r, 403, "cross_site_request").await;
        assert!(headers.get("set-cookie").is_none(), "{hostile:?}");
    }
    // The backend's own pages, the configured site, and callers that are
    // not browsers (the gateway, check, curl) still sign in.
    let own = b.url.clone();
    for fine in [
        vec![("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
        vec![("origin", "https://shop.example.com"), ("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-origin")],
        vec![],
    ] {
        let r = post_login(&b, &alice.username, &alice.password, &fine).await;
        assert_eq!(r.status(), 200, "{fine:?}");
        assert!(set_cookie(&r).is_some());
    }
    // Logging a visitor out from another site is refused too.
    let r = post_login(&b, &alice.username, &alice.password, &[]).await;
    let session = set_cookie(&r).unwrap();
    let out = post(&b, "/customer_logout", &[("cookie", &session), ("origin", HOSTILE)]).await;
    expect_error(out, 403, "cross_site_request").await;
    let out = post(&b, "/customer_logout", &[("cookie", &session)]).await;
    assert_eq!(out.status(), 204);
}

#[tokio::test]
async fn the_demo_sites_endpoints_refuse_other_sites() {
    let (_dir, b) = backend_with(demo_site).await;
    let seed = b.seed().await;
    let alice = &seed.users[0];
    let r = post_login(&b, &alice.username, &alice.password, &[("origin", HOSTILE)]).await;
    assert_eq!(set_cookie(&r), None);
    expect_error(r, 403, "cross_site_request").await;
    let r = post_login(&b, &alice.username, &alice.password, &[("origin", &b.url)]).await;
    let site = set_cookie(&r).unwrap();
    for path in ["/demo/token", "/demo/logout"] {
        let r = post(&b, path, &[("cookie", &site), ("sec-fetch-site", "cross-site")]).await;
        expect_error(r, 403, "cross_site_request").await;
    }
    let r = post(&b, "/demo/token", &[("cookie", &site)]).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_password_reset_or_removal_ends_the_users_sessions() {
    let (_dir, b) = backend_with(cookie_mode).await;
    let seed = b.seed().await;
    let (alice, bruno) = (&seed.users[0], &seed.users[1]);
    let token = access_token(&b, &seed).await;
    let key = seed.api_keys[0].key.as_str();
    let profile = |session: String| {
        client()
            .post(b.url("/getprofile"))
            .bearer_auth(&token)
            .header("api-key", key)
            .header("cookie", session)
            .send()
    };
    let alices = set_cookie(&post_login(&b, &alice.username, &alice.password, &[]).await).unwrap();
    let brunos = set_cookie(&post_login(&b, &bruno.username, &bruno.password, &[]).await).unwrap();
    assert_eq!(profile(alices.clone()).await.unwrap().status(), 200);

    b.backend
        .admin()
        .set_password(&alice.username, "a-new-password-1")
        .await
        .unwrap();
    expect_error(profile(alices).await.unwrap(), 401, "invalid_customer_token").await;
    assert_eq!(
        profile(brunos.clone()).await.unwrap().status(),
        200,
        "others keep theirs"
    );

    b.backend.admin().remove_user(&bruno.username).await.unwrap();
    expect_error(profile(brunos).await.unwrap(), 401, "invalid_customer_token").await;
}

#[tokio::test]
async fn a_password_reset_ends_demo_site_sessions() {
    let (_dir, b) = backend_with(demo_site).await;
    let seed = b.seed().await;
    let alice = &seed.users[0];
    let r = post_login(&b, &alice.username, &alice.password, &[]).await;
    let site = set_cookie(&r).unwrap();
    let with_site = [("cookie", site.as_str())];
    let fresh_token = || post(&b, "/demo/token", &with_site);
    assert_eq!(fresh_token().await.status(), 200);
    b.backend
        .admin()
        .set_password(&alice.username, "a-new-password-1")
        .await
        .unwrap();
    expect_error(fresh_token().await, 401, "invalid_customer_token").await;
}

#[cfg(unix)]
#[tokio::test]
async fn shared_data_files_and_weak_secrets_are_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let chmod =
        |path: &std::path::Path, mode| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    let open = |cfg| async { backend::Backend::open(cfg, std::sync::Arc::new(backend::SystemClock)).await };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(open(config(&data)).await.unwrap());
    for file in ["backend.db", "server.secret"] {
        let path = data.join(file);
        chmod(&path, 0o644);
        let refused = open(config(&data)).await.err().expect("a shared file was accepted");
        assert!(refused.to_string().contains("chmod"), "{refused}");
        chmod(&path, 0o600);
    }
    drop(open(config(&data)).await.unwrap());
    // A server secret of 32 zero bytes, even private, is no secret.
    let secret = data.join("server.secret");
    std::fs::write(&secret, B64.encode([0u8; 32])).unwrap();
    let refused = open(config(&data)).await.err().expect("a zero secret was accepted");
    assert!(refused.to_string().contains("not random"), "{refused}");
}

#[tokio::test]
async fn repeated_credentials_and_scopes_are_refused() {
    let (_dir, b) = backend_with(|_| {}).await;
    let seed = b.seed().await;
    let alice = &seed.users[0];
    let jwt = login(&b, &alice.username, &alice.password).await;
    let token = access_token(&b, &seed).await;
    let key = seed.api_keys[0].key.as_str();
    let bearer = format!("Bearer {token}");
    let customer = format!("JWT {jwt}");
    for repeated in ["authorization", "api-key", "customer-auth"] {
        let mut request = client()
            .post(b.url("/getprofile"))
            .header("authorization", &bearer)
            .header("api-key", key)
            .header("customer-auth", &customer);
        // reqwest appends: the header is sent twice.
        request = match repeated {
            "authorization" => request.header(repeated, "Bearer dbat_other"),
            "api-key" => request.header(repeated, "dbk_other"),
            _ => request.header(repeated, "JWT other"),
        };
        let body = body_json(request.send().await.unwrap()).await;
        assert_eq!(body["error"], "invalid_request", "{repeated}: {body}");
        assert!(body["error_description"].as_str().unwrap().contains(repeated), "{body}");
    }
    let c = &seed.clients[0];
    let both = client()
        .post(b.url("/access_token?scope=profile:read"))
        .basic_auth(&c.client_id, Some(&c.client_secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "profile:read")])
        .send()
        .await
        .unwrap();
    expect_error(both, 400, "invalid_request").await;
    // One place is fine.
    let once = client()
        .post(b.url("/access_token?scope=profile:read"))
        .basic_auth(&c.client_id, Some(&c.client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(once.status(), 200);
}

#[tokio::test]
async fn a_declared_oversized_body_is_refused_before_it_is_sent() {
    let (_dir, b) = backend_with(|_| {}).await;
    let started = std::time::Instant::now();
    for expect in ["", "expect: 100-continue\r\n"] {
        let head = format!(
            "POST /customer_authenticate HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\
             content-type: application/x-www-form-urlencoded\r\ncontent-length: 10000000\r\n{expect}\r\n"
        );
        let answer = read_until_closed(&mut sent(&b.url, head.as_bytes()).await).await;
        // No 100 Continue first: the client is told at once not to send it.
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("payload_too_large"), "{answer}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not at once: {:?}",
        started.elapsed()
    );
}

/// A private key the backend signs with (its `signing_key_file`), so a test
/// can sign tokens the backend trusts.
fn signing_key(dir: &std::path::Path) -> (std::path::PathBuf, EncodingKey) {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let der = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .unwrap()
        .to_pkcs8v1()
        .unwrap();
    let body = STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    let path = dir.join("signing.pem");
    std::fs::write(&path, pem).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (path, EncodingKey::from_ec_der(der.as_ref()))
}

/// A JWT's header and claims, decoded.
fn parts(jwt: &str) -> (Value, Value) {
    let mut parts = jwt
        .split('.')
        .map(|p| serde_json::from_slice(&B64.decode(p).unwrap()).unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

#[tokio::test]
async fn jwts_not_yet_valid_or_with_critical_extensions_are_refused() {
    let keys = tempfile::tempdir().unwrap();
    let (key_file, signer) = signing_key(keys.path());
    let (_dir, b) = backend_with(|c| c.signing_key_file = Some(key_file)).await;
    let seed = b.seed().await;
    let jwt = login(&b, &seed.users[0].username, &seed.users[0].password).await;
    let token = access_token(&b, &seed).await;
    let key = seed.api_keys[0].key.as_str();
    let (header, claims) = parts(&jwt);
    let mut signed_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    signed_header.kid = header["kid"].as_str().map(str::to_string);
    let sign = |h: &Header, c: &Value| jsonwebtoken::encode(h, c, &signer).unwrap();
    assert_eq!(
        get_profile(&b, Some(&token), Some(key), Some(&sign(&signed_header, &claims)))
            .await
            .status(),
        200,
        "the test's signature is the backend's"
    );

    let mut early = claims.clone();
    early["nbf"] = json!(claims["iat"].as_u64().unwrap() + 3600);
    let r = get_profile(&b, Some(&token), Some(key), Some(&sign(&signed_header, &early))).await;
    expect_error(r, 401, "invalid_customer_token").await;

    let mut critical = signed_header.clone();
    critical.crit = Some(vec!["exp-ext".into()]);
    let r = get_profile(&b, Some(&token), Some(key), Some(&sign(&critical, &claims))).await;
    expect_error(r, 401, "invalid_customer_token").await;
}

#[tokio::test]
async fn cookie_mode_takes_jwts_only_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBackend::start(config(dir.path())).await;
    let seed = b.seed().await;
    let jwt = login(&b, &seed.users[0].username, &seed.users[0].password).await;
    let (data_dir, clock) = b.stop().await;
    for accepts in [false, true] {
        let mut cfg = config(&data_dir);
        cookie_mode(&mut cfg);
        cfg.cookie_mode_accepts_jwts = accepts;
        let b = TestBackend::start_at(cfg, clock.clone()).await;
        let token = access_token(&b, &seed).await;
        let r = get_profile(&b, Some(&token), Some(&seed.api_keys[0].key), Some(&jwt)).await;
        if accepts {
            assert_eq!(r.status(), 200);
        } else {
            expect_error(r, 401, "invalid_customer_token").await;
        }
        b.stop().await;
    }
}
