//! Which signature algorithms the gateway accepts on a customer's token,
//! key by key, through real sockets: a company JWKS endpoint the test
//! serves, the real gateway fetching it, and a channel opening sessions
//! with tokens signed every way a provider signs them (and some ways an
//! attacker would).

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::support::{APP_KEY, TestGateway, client, spawn_company};

const ISSUER: &str = "https://idp.acme.test";

/// A company's JWKS endpoint serving whatever keys the test publishes.
struct Company {
    keys: Arc<Mutex<Vec<Value>>>,
    gateway: TestGateway,
    _dir: tempfile::TempDir,
}

impl Company {
    async fn start() -> Self {
        let keys: Arc<Mutex<Vec<Value>>> = Arc::default();
        let served = keys.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let keys = served.lock().unwrap().clone();
                async move { axum::Json(json!({ "keys": keys })) }
            }),
        );
        let url = spawn_company(app).await;
        let dir = tempfile::tempdir().unwrap();
        let gateway = TestGateway::start(&format!(
            r#"
[server]
data_dir = "{data}"
[limits]
session_per_second = 1000
session_burst = 1000
[[connections]]
name = "acme"
base_url = "http://127.0.0.1:9"
[connections.system_auth]
kind = "none"
[connections.identity]
mode = "jwt"
jwks_url = "{url}/jwks"
issuer = "{ISSUER}"
audience = "deskbridge"
[[channels]]
name = "ios"
app_key = "{APP_KEY}"
"#,
            data = dir.path().display(),
        ))
        .await;
        Self {
            keys,
            gateway,
            _dir: dir,
        }
    }

    fn publish(&self, jwk: Value) {
        self.keys.lock().unwrap().push(jwk);
    }

    /// Opens a session with `token`; the status and the problem's detail.
    async fn open(&self, token: &str) -> (u16, String) {
        let response = client()
            .post(self.gateway.url("/v1/sessions"))
            .header("x-deskbridge-app-key", APP_KEY)
            .json(&json!({"channel": "ios", "connection": "acme", "auth": {"token": token}}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        (status, body["detail"].as_str().unwrap_or_default().to_string())
    }

    async fn accepts(&self, token: &str, case: &str) {
        let (status, detail) = self.open(token).await;
        assert_eq!(status, 201, "{case}: {detail}");
    }

    async fn refuses(&self, token: &str, reason: &str, case: &str) {
        let (status, detail) = self.open(token).await;
        assert_eq!(status, 401, "{case}: {detail}");
        assert!(detail.contains(reason), "{case}: {detail:?} should say {reason:?}");
    }
}

pub(crate) fn pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// A key pair of one type, and its public JWK under `kid`, without `alg`.
fn key(kind: &str, kid: &str) -> (EncodingKey, Value) {
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    };
    let (key, alg) = match kind {
        "RSA" => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> = aws_lc_rs::encoding::AsDer::as_der(&pair).unwrap();
            (
                EncodingKey::from_rsa_pem(pem(der.as_ref()).as_bytes()).unwrap(),
                Algorithm::RS256,
            )
        }
        "P-256" => {
            let der = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .unwrap()
                .to_pkcs8v1()
                .unwrap();
            (EncodingKey::from_ec_der(der.as_ref()), Algorithm::ES256)
        }
        "P-384" => {
            let der = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
                .unwrap()
                .to_pkcs8v1()
                .unwrap();
            (EncodingKey::from_ec_der(der.as_ref()), Algorithm::ES384)
        }
        "Ed25519" => {
            let der = Ed25519KeyPair::generate().unwrap().to_pkcs8v1().unwrap();
            (EncodingKey::from_ed_der(der.as_ref()), Algorithm::EdDSA)
        }
        other => panic!("no key type {other}"),
    };
    let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk.common.key_algorithm = None;
    (key, serde_json::to_value(jwk).unwrap())
}

fn claims() -> Value {
    let now = backend::Clock::unix_secs(&backend::SystemClock);
    json!({
        "iss": ISSUER,
        "aud": "deskbridge",
        "sub": format!("cus_{}", URL_SAFE_NO_PAD.encode(random_bytes())),
        "iat": now,
        "exp": now + 600,
    })
}

fn random_bytes() -> [u8; 24] {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    bytes
}

/// A compact JWS made by hand, so its header can say what jsonwebtoken's
/// `Header` cannot (`Ed25519`, `none`, `HS256`): `header_alg` is what the
/// header says, `signed_with` the computation that signs it.
fn token(header_alg: &str, kid: &str, claims: &Value, key: &EncodingKey, signed_with: Algorithm) -> String {
    let header = json!({"alg": header_alg, "kid": kid, "typ": "JWT"});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, signed_with).unwrap();
    format!("{input}.{signature}")
}

#[tokio::test]
async fn an_rsa_key_published_without_alg_takes_every_rs_and_ps_algorithm() {
    let company = Company::start().await;
    let (key, jwk) = key("RSA", "rsa-1");
    company.publish(jwk);
    for (name, alg) in [
        ("RS256", Algorithm::RS256),
        ("RS384", Algorithm::RS384),
        ("RS512", Algorithm::RS512),
        ("PS256", Algorithm::PS256),
        ("PS384", Algorithm::PS384),
        ("PS512", Algorithm::PS512),
    ] {
        company.accepts(&token(name, "rsa-1", &claims(), &key, alg), name).await;
    }
    // A PS256 header on an RS256 signature: the header decides the check.
    let mixed = token("PS256", "rsa-1", &claims(), &key, Algorithm::RS256);
    company
        .refuses(&mixed, "the signature does not verify", "PS256 header, RS256 signature")
        .await;
    company.gateway.stop().await;
}

#[tokio::test]
async fn an_ec_key_published_without_alg_takes_the_algorithm_of_its_curve_only() {
    let company = Company::start().await;
    let (p256, jwk) = key("P-256", "p256");
    company.publish(jwk);
    let (p384, jwk) = key("P-384", "p384");
    company.publish(jwk);
    company
        .accepts(
            &token("ES256", "p256", &claims(), &p256, Algorithm::ES256),
            "ES256 on P-256",
        )
        .await;
    company
        .accepts(
            &token("ES384", "p384", &claims(), &p384, Algorithm::ES384),
            "ES384 on P-384",
        )
        .await;
    // The P-384 key signing with its own curve, but the header claiming
    // ES256: wrong for the key, named as such.
    company
        .refuses(
            &token("ES256", "p384", &claims(), &p384, Algorithm::ES384),
            "wrong algorithm for its key: the token says ES256, the key takes ES384",
            "ES256 on P-384",
        )
        .await;
    company.gateway.stop().await;
}

#[tokio::test]
async fn an_okp_key_published_without_alg_takes_eddsa_and_the_fully_specified_ed25519() {
    let company = Company::start().await;
    let (key, jwk) = key("Ed25519", "ed");
    company.publish(jwk);
    company
        .accepts(&token("EdDSA", "ed", &claims(), &key, Algorithm::EdDSA), "EdDSA")
        .await;
    company
        .accepts(&token("Ed25519", "ed", &claims(), &key, Algorithm::EdDSA), "Ed25519")
        .await;
    // An OKP key verifies no RSA algorithm, whatever the header says.
    company
        .refuses(
            &token("RS256", "ed", &claims(), &key, Algorithm::EdDSA),
            "wrong algorithm for its key: the token says RS256, the key takes EdDSA, Ed25519",
            "RS256 on an OKP key",
        )
        .await;
    company.gateway.stop().await;
}

#[tokio::test]
async fn a_key_published_with_alg_takes_that_algorithm_alone() {
    let company = Company::start().await;
    let (rsa, mut jwk) = key("RSA", "rs256-only");
    jwk["alg"] = json!("RS256");
    company.publish(jwk);
    let (ed, mut jwk) = key("Ed25519", "ed25519-only");
    jwk["alg"] = json!("Ed25519");
    company.publish(jwk);
    company
        .accepts(
            &token("RS256", "rs256-only", &claims(), &rsa, Algorithm::RS256),
            "RS256 pinned",
        )
        .await;
    company
        .refuses(
            &token("PS256", "rs256-only", &claims(), &rsa, Algorithm::PS256),
            "wrong algorithm for its key: the token says PS256, the key takes RS256",
            "PS256 on an RS256 key",
        )
        .await;
    company
        .accepts(
            &token("Ed25519", "ed25519-only", &claims(), &ed, Algorithm::EdDSA),
            "Ed25519 pinned",
        )
        .await;
    company
        .refuses(
            &token("EdDSA", "ed25519-only", &claims(), &ed, Algorithm::EdDSA),
            "the token says EdDSA, the key takes Ed25519",
            "EdDSA on an Ed25519 key",
        )
        .await;
    company.gateway.stop().await;
}

#[tokio::test]
async fn an_unsigned_token_is_refused_as_unsigned() {
    let company = Company::start().await;
    let (_, jwk) = key("P-256", "p256");
    company.publish(jwk);
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": "p256"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    company
        .refuses(&format!("{header}.{payload}."), "unsigned (alg none)", "alg none")
        .await;
    company.gateway.stop().await;
}

#[tokio::test]
async fn an_hmac_token_keyed_with_the_published_rsa_key_is_refused() {
    let company = Company::start().await;
    let (_, jwk) = key("RSA", "rsa-1");
    company.publish(jwk.clone());
    // The alg-confusion attack: the public key, which anyone can read, as
    // an HMAC secret.
    let public = EncodingKey::from_secret(jwk.to_string().as_bytes());
    for alg in [
        ("HS256", Algorithm::HS256),
        ("HS384", Algorithm::HS384),
        ("HS512", Algorithm::HS512),
    ] {
        company
            .refuses(
                &token(alg.0, "rsa-1", &claims(), &public, alg.1),
                &format!("alg {} is a shared-secret MAC, never accepted", alg.0),
                alg.0,
            )
            .await;
    }
    company.gateway.stop().await;
}

#[tokio::test]
async fn an_algorithm_no_key_takes_is_named_as_unsupported_not_as_garbage() {
    let company = Company::start().await;
    let (key, jwk) = key("P-256", "p256");
    company.publish(jwk);
    let es512 = token("ES512", "p256", &claims(), &key, Algorithm::ES256);
    company.refuses(&es512, "unsupported algorithm ES512", "ES512").await;
    company.refuses("not.a-token", "not a JWT", "two parts").await;
    company.gateway.stop().await;
}

#[tokio::test]
async fn a_list_audience_naming_the_gateway_is_accepted_and_one_that_does_not_is_refused() {
    let company = Company::start().await;
    let (key, jwk) = key("P-256", "p256");
    company.publish(jwk);
    let mut listed = claims();
    listed["aud"] = json!(["https://api.acme.test", "deskbridge"]);
    company
        .accepts(&token("ES256", "p256", &listed, &key, Algorithm::ES256), "aud list")
        .await;
    let mut other = claims();
    other["aud"] = json!(["https://api.acme.test"]);
    company
        .refuses(
            &token("ES256", "p256", &other, &key, Algorithm::ES256),
            "wrong audience",
            "aud list without us",
        )
        .await;
    company.gateway.stop().await;
}
