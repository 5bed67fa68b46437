//! Property tests of the backend's parsers of outside input: its
//! configuration, system access tokens, customer JWTs (headers and claims),
//! HTTP Basic client credentials, and form parameters. Cookies are read by
//! `login::cookie`, whose properties the gateway's tests hold.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{RngSeed, TestRunner};
use serde_json::{Value, json};

use crate::access_tokens::{AccessTokens, Delegation, TokenRejection};
use crate::config::BackendConfig;
use crate::crypto::Secrets;
use crate::customer_auth::CustomerAuthError;
use crate::http::Params;
use crate::http::oauth::basic_credentials;
use crate::{Backend, ManualClock};

/// `cases` per property, from a fixed seed so that a run can be repeated
/// (`PROPTEST_RNG_SEED` picks another). A failure prints its smallest
/// input; nothing is written into the source tree.
fn cases(cases: u32) -> ProptestConfig {
    let defaults = ProptestConfig::default();
    ProptestConfig {
        cases,
        failure_persistence: None,
        rng_seed: match defaults.rng_seed {
            RngSeed::Random => RngSeed::Fixed(15),
            chosen => chosen,
        },
        ..defaults
    }
}

// ---------------------------------------------------------------- config

fn config_line() -> impl Strategy<Value = String> {
    let key = select(vec![
        "listen",
        "public_url",
        "issuer",
        "audience",
        "customer_token_ttl_secs",
        "access_token_ttl_secs",
        "session_mode",
        "cookie_name",
        "insecure_cookies",
        "signing_alg",
        "max_body_bytes",
        "max_failures",
        "header_read_timeout_secs",
        "max_connections",
        "gateway_url",
        "app_key",
        "connection",
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        "\\PC{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        select(vec![
            "true",
            "\"127.0.0.1:0\"",
            "\"https://api.example.com\"",
            "\"ftp://x\"",
            "\"cookie\"",
            "\"token\"",
            "\"EdDSA\"",
            "\"RS256\"",
            "\"a b\"",
            "\"\"",
            "[]",
        ])
        .prop_map(String::from),
    ];
    prop_oneof![
        2 => select(vec!["[http]", "[throttle]", "[demo_site]"]).prop_map(String::from),
        6 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "\\PC{0,20}",
    ]
}

proptest! {
    #![proptest_config(cases(512))]

    /// Any text: a configuration that holds what `validate` promises, or a
    /// configuration error; a TOML syntax or type error names its line.
    #[test]
    fn config_from_toml_refuses_or_holds_its_promises(lines in prop::collection::vec(config_line(), 0..8)) {
        let text = lines.join("\n");
        match BackendConfig::from_toml(&text) {
            Ok(c) => {
                prop_assert!(c.customer_token_ttl_secs > 0 && c.access_token_ttl_secs > 0);
                prop_assert!(c.max_body_bytes >= 256 && !c.audience.is_empty());
                prop_assert!(!c.cookie_name.is_empty());
                prop_assert!(c.cookie_name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
                prop_assert!(c.public_url().starts_with("http://") || c.public_url().starts_with("https://"));
                prop_assert!(c.issuer().starts_with("http://") || c.issuer().starts_with("https://"));
            }
            Err(crate::BackendError::Config(message)) => {
                if toml::from_str::<BackendConfig>(&text).is_err() {
                    prop_assert!(message.contains("line "), "{message}");
                }
            }
            Err(other) => prop_assert!(false, "{other:?}"),
        }
    }
}

// ------------------------------------------------------ system access tokens

fn secrets() -> (tempfile::TempDir, Secrets) {
    let dir = tempfile::tempdir().unwrap();
    let secrets = Secrets::load_or_create(&dir.path().join("server.secret")).unwrap();
    (dir, secrets)
}

#[test]
fn access_tokens_verify_as_issued_and_refuse_any_change() {
    let (_dir, secrets) = secrets();
    let tokens = AccessTokens::default();
    let now_ms = 1_800_000_000_000;
    let mut runner = TestRunner::new(cases(512));
    let strategy = (
        "\\PC{0,20}",
        "\\PC{0,20}",
        1u64..100_000,
        any::<prop::sample::Index>(),
        any::<char>(),
    );
    let result = runner.run(&strategy, |(client, scope, ttl, at, replacement)| {
        // Every other token comes from a token exchange: a customer and an actor.
        let delegation = (ttl % 2 == 0).then(|| Delegation {
            customer_id: format!("cus_{scope}"),
            actor: (ttl % 4 == 0).then(|| format!("agent:{client}")),
        });
        let (token, grant) = tokens
            .issue(&secrets, &client, &scope, now_ms, ttl, delegation)
            .unwrap();
        prop_assert_eq!(tokens.verify(&secrets, &token, now_ms / 1000), Ok(grant.clone()));
        prop_assert_eq!(
            tokens.verify(&secrets, &token, grant.expires_at),
            Err(TokenRejection::Expired)
        );
        // Any one character changed (past the prefix) breaks the MAC or the encoding.
        let mut chars: Vec<char> = token.chars().collect();
        let at = 5 + at.index(chars.len() - 5);
        if chars[at] != replacement {
            chars[at] = replacement;
            let changed: String = chars.into_iter().collect();
            prop_assert_eq!(
                tokens.verify(&secrets, &changed, now_ms / 1000),
                Err(TokenRejection::Malformed)
            );
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

proptest! {
    #![proptest_config(cases(512))]

    /// Text that only looks like a token is malformed, never anything else.
    #[test]
    fn any_text_is_a_malformed_access_token(
        text in prop_oneof!["\\PC{0,80}", "dbat_[A-Za-z0-9_-]{0,120}", "dbat_[A-Za-z0-9_=+/-]{40,60}"],
    ) {
        let (_dir, secrets) = secrets();
        prop_assert_eq!(AccessTokens::default().verify(&secrets, &text, 0), Err(TokenRejection::Malformed));
    }
}

// ------------------------------------------------------------ customer JWTs

const NOW: u64 = 1_800_000_000;

/// A backend that signs customer JWTs with a key the test also holds, and
/// that key's id, on a clock standing at `NOW`.
struct Signer {
    _dir: tempfile::TempDir,
    backend: Backend,
    key: EncodingKey,
    kid: String,
}

fn signer(rt: &tokio::runtime::Runtime) -> Signer {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING)
        .unwrap()
        .to_pkcs8v1()
        .unwrap();
    let key_file = dir.path().join("signing.pem");
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
    crate::crypto::write_private_file(&key_file, pem.as_bytes()).unwrap();
    let config = BackendConfig {
        data_dir: dir.path().join("data"),
        signing_key_file: Some(key_file),
        password_hash_concurrency: Some(1),
        ..BackendConfig::default()
    };
    let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)));
    let backend = rt.block_on(Backend::open(config, clock)).unwrap();
    let signed = backend.state.keyring().sign(&json!({})).unwrap();
    let kid = jsonwebtoken::decode_header(&signed).unwrap().kid.unwrap();
    Signer {
        _dir: dir,
        backend,
        key: EncodingKey::from_ec_der(pkcs8.as_ref()),
        kid,
    }
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Claims near the valid ones: each may be missing, of the wrong kind, or
/// off (issuer, audience, expired, issued in the future).
fn claims() -> impl Strategy<Value = Value> {
    // Mostly the good value, so that whole tokens are often sound.
    let field = |good: Value, others: Vec<Value>| {
        prop_oneof![
            12 => Just(Some(good)),
            1 => Just(None),
            2 => select(others).prop_map(Some),
        ]
    };
    (
        field(
            json!("http://127.0.0.1:8081"),
            vec![json!("https://evil.test"), json!(1)],
        ),
        field(json!("deskbridge"), vec![json!("other"), json!(["deskbridge"])]),
        field(json!("cus_1"), vec![json!(7), json!(null)]),
        field(
            json!(NOW - 10),
            vec![json!(NOW + 60), json!(NOW + 61), json!(-1), json!("x")],
        ),
        field(
            json!(NOW + 600),
            vec![json!(NOW), json!(NOW - 1), json!(NOW + 1), json!(1.5)],
        ),
        field(json!("j"), vec![json!(5)]),
    )
        .prop_map(|(iss, aud, sub, iat, exp, jti)| {
            let mut claims = serde_json::Map::new();
            for (name, value) in [
                ("iss", iss),
                ("aud", aud),
                ("sub", sub),
                ("iat", iat),
                ("exp", exp),
                ("jti", jti),
            ] {
                if let Some(value) = value {
                    claims.insert(name.into(), value);
                }
            }
            Value::Object(claims)
        })
}

/// What the backend must answer for these claims, when signed soundly.
fn verdict(claims: &Value) -> Result<String, CustomerAuthError> {
    let invalid = Err(CustomerAuthError::Invalid(""));
    let (Some(iss), Some(aud), Some(sub), Some(iat), Some(exp), Some(_)) = (
        claims["iss"].as_str(),
        claims["aud"].as_str(),
        claims["sub"].as_str(),
        claims["iat"].as_u64(),
        claims["exp"].as_u64(),
        claims["jti"].as_str(),
    ) else {
        return invalid;
    };
    if iss != "http://127.0.0.1:8081" || aud != "deskbridge" || iat > NOW + 60 {
        return invalid;
    }
    if exp <= NOW {
        return Err(CustomerAuthError::Expired);
    }
    Ok(sub.to_string())
}

#[test]
fn customer_jwts_are_judged_by_key_algorithm_signature_and_claims() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = signer(&rt);
    let header = (
        prop_oneof![
            6 => Just("ES256"),
            1 => select(vec!["ES384", "HS256", "RS256", "EdDSA", "none", ""]),
        ],
        prop_oneof![6 => Just(Some(s.kid.clone())), 1 => Just(Some("other".to_string())), 1 => Just(None)],
        prop::option::of(select(vec![
            json!("JWT"),
            json!(5),
            json!(["x"]),
            json!("https://evil.test"),
        ])),
        prop::bool::weighted(0.1),
    );
    let mut runner = TestRunner::new(cases(1024));
    let result = runner.run(
        &(header, claims(), prop::bool::weighted(0.9)),
        |((alg, kid, extra, crit), claims, signed)| {
            let mut header = json!({"alg": alg, "typ": "JWT"});
            if let Some(kid) = &kid {
                header["kid"] = json!(kid);
            }
            if let Some(extra) = extra {
                header["jku"] = extra;
            }
            if crit {
                header["crit"] = json!(["exp"]);
            }
            let message = format!("{}.{}", b64(&header), b64(&claims));
            let signature = if signed {
                jsonwebtoken::crypto::sign(message.as_bytes(), &s.key, Algorithm::ES256).unwrap()
            } else {
                URL_SAFE_NO_PAD.encode(b"not a signature")
            };
            let token = format!("{message}.{signature}");
            // RFC 7515 §4.1.11: extensions listed as critical must be understood; none is.
            let sound = signed
                && !crit
                && alg == "ES256"
                && kid.as_deref() == Some(s.kid.as_str())
                && jsonwebtoken::decode_header(&token).is_ok();
            let expected = if sound {
                verdict(&claims)
            } else {
                Err(CustomerAuthError::Invalid(""))
            };
            let got = s.backend.state.verify_customer_jwt(&token);
            let kind = |r: &Result<String, CustomerAuthError>| match r {
                Ok(sub) => Ok(sub.clone()),
                Err(CustomerAuthError::Invalid(_)) => Err("invalid"),
                Err(CustomerAuthError::Expired) => Err("expired"),
            };
            prop_assert_eq!(kind(&got), kind(&expected), "{} {}", header, claims);
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Found by the property above: a token naming a critical extension was
/// accepted (the gateway's verifier refused it).
#[test]
fn a_customer_jwt_with_critical_extensions_is_invalid() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = signer(&rt);
    let claims = json!({"iss": "http://127.0.0.1:8081", "aud": "deskbridge", "sub": "cus_1",
                        "iat": NOW, "exp": NOW + 600, "jti": "j"});
    let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
    header.kid = Some(s.kid.clone());
    let plain = jsonwebtoken::encode(&header, &claims, &s.key).unwrap();
    assert_eq!(s.backend.state.verify_customer_jwt(&plain), Ok("cus_1".to_string()));
    header.crit = Some(vec!["exp".into()]);
    let critical = jsonwebtoken::encode(&header, &claims, &s.key).unwrap();
    assert!(matches!(
        s.backend.state.verify_customer_jwt(&critical),
        Err(CustomerAuthError::Invalid(_))
    ));
}

#[test]
fn any_text_as_a_customer_jwt_is_invalid() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = signer(&rt);
    let strategy = prop_oneof![
        "\\PC{0,120}",
        "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}",
        ("[ -~]{0,40}", "[ -~]{0,40}").prop_map(|(h, c)| format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(h),
            URL_SAFE_NO_PAD.encode(c)
        )),
    ];
    let mut runner = TestRunner::new(cases(512));
    let result = runner.run(&strategy, |token| {
        let got = s.backend.state.verify_customer_jwt(&token);
        prop_assert!(matches!(got, Err(CustomerAuthError::Invalid(_))), "{token}: {got:?}");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ------------------------------------------- Basic credentials, form parameters

fn authorization(value: &str) -> Option<HeaderMap> {
    let value = HeaderValue::from_str(value).ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    Some(headers)
}

proptest! {
    #![proptest_config(cases(512))]

    /// RFC 6749 §2.3.1: any id and secret, form-urlencoded and then base64
    /// encoded (as the gateway sends them), come back as they were.
    #[test]
    fn basic_credentials_round_trip(id in "\\PC{0,20}", secret in "\\PC{0,20}", scheme in select(vec!["Basic", "basic", "BASIC"])) {
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let headers = authorization(&format!("{scheme} {}", STANDARD.encode(format!("{}:{}", enc(&id), enc(&secret))))).unwrap();
        prop_assert_eq!(basic_credentials(&headers).ok(), Some(Some((id, secret))));
    }

    /// Any Authorization header: an answer, never a panic; no header, no credentials.
    #[test]
    fn basic_credentials_read_any_header(value in prop_oneof!["\\PC{0,60}", "Basic [A-Za-z0-9+/=%:]{0,40}"]) {
        if let Some(headers) = authorization(&value) {
            let _ = basic_credentials(&headers);
        }
        prop_assert!(matches!(basic_credentials(&HeaderMap::new()), Ok(None)));
    }

    /// Form parameters: what was sent once comes back; a repeated name
    /// with a value is refused; any bytes are read without a panic.
    #[test]
    fn form_parameters_round_trip(
        pairs in prop::collection::btree_map("\\PC{1,8}", "\\PC{1,8}", 0..6),
        repeat: bool,
        bytes in prop::collection::vec(any::<u8>(), 0..60),
    ) {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &pairs {
            form.append_pair(name, value);
        }
        let repeated = repeat && !pairs.is_empty();
        if let Some((name, value)) = pairs.iter().next().filter(|_| repeated) {
            form.append_pair(name, value);
        }
        let parsed = Params::parse(form.finish().as_bytes());
        if repeated {
            prop_assert!(parsed.is_err());
        } else {
            let parsed = parsed.unwrap();
            for (name, value) in &pairs {
                prop_assert_eq!(parsed.get(name), Some(value.as_str()));
            }
        }
        let _ = Params::parse(&bytes);
    }
}
