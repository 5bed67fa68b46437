//! Property tests of every parser that reads outside input: the
//! configuration, the token endpoint's answers, `WWW-Authenticate`
//! challenges, JSON Pointer mapping and error codes of the company's
//! answers, customer JWTs, cookies, and the messages of refused JSON bodies.
//! Each property says what is known of the answer, not only that there is one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::RngSeed;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use crate::config::{
    ClientAuthMethod, CustomerAuthPlacement, GatewayConfig, GrantTypeIn, OauthClient, SecretSource, SystemAuthConfig,
};
use crate::connector::{error_code, map_response, raw_pointer, set_pointer};
use crate::identity::IdentityError;
use crate::identity::testing::{jwks_server, signing_key, verifier};
use crate::system_token::{TokenDeps, TokenError, TokenSource, challenge_error, jwt_lifetime};
use clock::Clock;
use company::Metrics;
use company::share::LocalShare;

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

const SECTIONS: &[&str] = &[
    "[server]",
    "[server.http]",
    "[store]",
    "[crypto]",
    "[console]",
    "[console.throttle]",
    "[[connections]]",
    "[connections.system_auth]",
    "[connections.api_key]",
    "[connections.customer_auth]",
    "[connections.identity]",
    "[connections.breaker]",
    "[[connections.actions]]",
    "[connections.actions.response]",
    "[[channels]]",
    "[limits]",
    "[audit]",
];

const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "url",
    "token_key",
    "secure_cookies",
    "session_ttl_secs",
    "max_connections",
    "header_read_timeout_secs",
    "name",
    "base_url",
    "timeout_ms",
    "max_concurrency",
    "kind",
    "token_url",
    "client_id",
    "client_secret",
    "token",
    "header",
    "value",
    "in",
    "pointer",
    "format",
    "mode",
    "jwks_url",
    "issuer",
    "audience",
    "claim",
    "opacity",
    "failure_threshold",
    "open_secs",
    "method",
    "path",
    "cache_ttl_secs",
    "app_key",
    "allowed_origins",
    "field",
    "agent_per_second",
    "session_burst",
    "event_streams",
    "retention_days",
    "refusal_window_secs",
];

/// A TOML string: JSON's escapes are TOML's.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => (0u64..200_000).prop_map(|n| n.to_string()),
        2 => "\\PC{0,12}".prop_map(|s| quoted(&s)),
        1 => "\\PC{0,8}".prop_map(|s| format!("{{ env = {} }}", quoted(&s))),
        3 => select(vec![
            "true",
            "false",
            "1.5",
            "[]",
            "{}",
            "\"\"",
            "\"127.0.0.1:0\"",
            "\"http://127.0.0.1:1\"",
            "\"https://a.test/x\"",
            "\"sqlite::memory:\"",
            "\"oauth2_client_credentials\"",
            "\"static_bearer\"",
            "\"none\"",
            "\"jwt\"",
            "\"opaque\"",
            "\"body\"",
            "\"cookie\"",
            "\"/p/q\"",
            "\"/../p\"",
            "\"GET\"",
            "\"JWT {token}\"",
            "\"inline-secret\"",
            "{ file = \"/nonexistent/deskbridge-proptest\" }",
            "[\"https://a.test\"]",
            "[\"https://a.test/page\", 1]",
        ])
        .prop_map(String::from),
    ]
}

fn toml_line() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(SECTIONS).prop_map(String::from),
        6 => (select(KEYS), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "\\PC{0,20}",
    ]
}

/// A configuration that parses, for mutations to start from.
const BASE: &str = r#"[server]
listen = "127.0.0.1:0"
[[connections]]
name = "acme"
base_url = "http://127.0.0.1:1"
[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "http://127.0.0.1:1/access_token"
client_id = "deskbridge"
client_secret = "inline-secret"
[connections.identity]
jwks_url = "http://127.0.0.1:1/jwks"
issuer = "http://127.0.0.1:1"
audience = "deskbridge"
[[connections.actions]]
name = "getprofile"
path = "/getprofile"
[connections.actions.response]
name = "/name"
[[channels]]
name = "web"
app_key = "inline-secret"
allowed_origins = ["https://a.test"]"#;

fn config_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::collection::vec(toml_line(), 0..24).prop_map(|lines| lines.join("\n")),
        // The base with a few lines replaced or added.
        1 => prop::collection::vec((0..BASE.lines().count() + 1, toml_line()), 1..4).prop_map(|edits| {
            let mut lines: Vec<String> = BASE.lines().map(String::from).collect();
            for (at, line) in edits {
                if at < lines.len() {
                    lines[at] = line;
                } else {
                    lines.push(line);
                }
            }
            lines.join("\n")
        }),
        // The base with a few values replaced: its keys stay where they
        // belong, so this often parses and `check` runs.
        4 => prop::collection::vec((any::<prop::sample::Index>(), toml_value()), 1..3).prop_map(|edits| {
            let mut lines: Vec<String> = BASE.lines().map(String::from).collect();
            for (at, value) in edits {
                let at = at.index(lines.len());
                if let Some((key, _)) = lines[at].split_once(" = ") {
                    lines[at] = format!("{key} = {value}");
                }
            }
            lines.join("\n")
        }),
        1 => "\\PC{0,200}",
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// True when `path` names a key of `config` as `check` reports it.
fn names_a_key(path: &str, config: &GatewayConfig) -> bool {
    let indexed = |rest: &str, len: usize| -> Option<String> {
        let (i, rest) = rest.split_once("].")?;
        (i.parse::<usize>().ok()? < len).then(|| rest.to_string())
    };
    if let Some(rest) = path.strip_prefix("connections[") {
        let Some((i, rest)) = rest.split_once("].") else {
            return false;
        };
        let Some(c) = i.parse::<usize>().ok().and_then(|i| config.connections.get(i)) else {
            return false;
        };
        return match rest.strip_prefix("actions[") {
            Some(rest) => indexed(rest, c.actions.len()).is_some(),
            None => !rest.is_empty(),
        };
    }
    if let Some(rest) = path.strip_prefix("channels[") {
        return indexed(rest, config.channels.len()).is_some();
    }
    [
        "crypto.token_key",
        "console.session_ttl_secs",
        "console.throttle.",
        "server.http.",
        "store.url",
        "limits.",
        "audit.",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

proptest! {
    #![proptest_config(cases(2048))]

    /// Any text: a configuration, or exactly one fatal problem on a line of
    /// the text; what parses is checked without a panic, and every problem
    /// names a key the configuration has.
    #[test]
    fn config_parse_fails_on_a_line_and_check_names_real_keys(text in config_text()) {
        match GatewayConfig::parse(&text) {
            Err(problems) => {
                prop_assert_eq!(problems.len(), 1);
                let line = problems[0].path.strip_prefix("line ").and_then(|n| n.parse::<usize>().ok());
                prop_assert!(problems[0].fatal);
                prop_assert!(
                    line.is_some_and(|n| n >= 1 && n <= text.lines().count() + 1),
                    "{:?} is not a line of the text", problems[0].path
                );
            }
            Ok(config) => {
                for problem in config.check() {
                    prop_assert!(names_a_key(&problem.path, &config), "{problem}");
                    prop_assert!(!problem.message.contains("inline-secret"), "{problem}");
                }
            }
        }
    }
}

// ------------------------------------------------- WWW-Authenticate challenges

/// RFC 6749 §5.2: an error code is 1*NQSCHAR.
fn is_error_code(code: &str) -> bool {
    !code.is_empty()
        && code
            .bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

const TOKEN: &str = "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,10}";

/// An auth-param value (RFC 9110 §11.2): a token, or a quoted string of any
/// visible text (commas, `=`, quotes and backslashes included).
fn param_value() -> impl Strategy<Value = String> {
    prop_oneof![
        TOKEN.prop_map(String::from),
        "[ -~]{0,16}".prop_map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))),
    ]
}

/// A well-formed challenge with an `error` parameter among others, and that error.
fn challenge() -> impl Strategy<Value = (String, String)> {
    let other = (
        TOKEN.prop_filter("not error", |n| !n.eq_ignore_ascii_case("error")),
        param_value(),
    );
    (
        prop_oneof![Just("Bearer".to_string()), TOKEN.prop_map(String::from)],
        prop::collection::vec(other, 0..4),
        "[ !#-\\[\\]-~]{1,20}",
        any::<prop::sample::Index>(),
        select(vec![",", ", ", " , ", ",  "]),
        select(vec!["=", " = "]),
        any::<bool>(),
    )
        .prop_map(|(scheme, mut params, error, at, comma, equals, quote)| {
            let value = if quote || !error.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                format!("\"{error}\"")
            } else {
                error.clone()
            };
            params.insert(at.index(params.len() + 1), (select_case("error", at.index(8)), value));
            let params: Vec<String> = params.into_iter().map(|(n, v)| format!("{n}{equals}{v}")).collect();
            (format!("{scheme} {}", params.join(comma)), error)
        })
}

/// `name` with the letters picked by the bits of `bits` in upper case.
fn select_case(name: &str, bits: usize) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| if bits >> i & 1 == 1 { c.to_ascii_uppercase() } else { c })
        .collect()
}

proptest! {
    #![proptest_config(cases(2048))]

    #[test]
    fn challenge_error_finds_the_error_of_any_well_formed_challenge((header, error) in challenge()) {
        prop_assert_eq!(challenge_error(&header), Some(error), "{}", header);
    }

    #[test]
    fn challenge_error_answers_only_an_error_code(header in prop_oneof!["\\PC{0,60}", "Bearer [ -~]{0,60}"]) {
        if let Some(code) = challenge_error(&header) {
            prop_assert!(is_error_code(&code), "{code:?} from {header:?}");
        }
    }
}

// ----------------------------------------------------------- JSON Pointer

/// Object keys and array tokens that pointers find hard: escapes, digits,
/// leading zeros, signs, `-`, the empty string.
fn key() -> impl Strategy<Value = String> {
    prop_oneof!["[a~/0-1]{0,4}", "(0|1|2|01|00|\\+1|-1|-| 1|1 )", "\\PC{0,6}",]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        key().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Every pointer into `value`, with what it points at.
fn pointers<'a>(at: String, value: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    out.push((at.clone(), value));
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(format!("{at}/{i}"), item, out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                pointers(format!("{at}/{}", escape(k)), item, out);
            }
        }
        _ => {}
    }
}

/// A pointer made of hard tokens, or any text at all.
fn pointer() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(key(), 0..4).prop_map(|keys| keys.iter().map(|k| format!("/{k}")).collect()),
        prop::collection::vec(key(), 0..4).prop_map(|keys| keys.iter().map(|k| format!("/{}", escape(k))).collect()),
        "\\PC{0,12}",
    ]
}

/// The body as the company may have written it: compact or spaced out.
fn body_text(value: &Value, pretty: bool) -> String {
    if pretty {
        format!("\n {}\t", serde_json::to_string_pretty(value).unwrap())
    } else {
        value.to_string()
    }
}

fn parsed(raw: Option<&RawValue>) -> Option<Value> {
    raw.map(|r| serde_json::from_str(r.get()).unwrap())
}

proptest! {
    #![proptest_config(cases(1024))]

    /// RFC 6901, with serde_json's `Value::pointer` as the reference: the
    /// same answer for every pointer into the body and for any other text.
    #[test]
    fn raw_pointer_agrees_with_serde_json(value in json_value(), pretty: bool, others in prop::collection::vec(pointer(), 0..8)) {
        let text = body_text(&value, pretty);
        let raw: &RawValue = serde_json::from_str(&text).unwrap();
        let mut all = Vec::new();
        pointers(String::new(), &value, &mut all);
        for (p, expected) in all {
            prop_assert_eq!(parsed(raw_pointer(raw, &p)), Some(expected.clone()), "{}", p);
        }
        for p in others {
            prop_assert_eq!(parsed(raw_pointer(raw, &p)), value.pointer(&p).cloned(), "{}", p);
        }
    }

    /// The mapped answer is always a JSON object with exactly the mapped
    /// fields, each the value at its pointer or null.
    #[test]
    fn map_response_is_valid_json_with_every_field(
        value in json_value(),
        pretty: bool,
        fields in prop::collection::btree_map("\\PC{0,6}", pointer(), 0..6),
    ) {
        let text = body_text(&value, pretty);
        let raw: &RawValue = serde_json::from_str(&text).unwrap();
        let mapped = map_response(raw, &fields).unwrap();
        let Value::Object(out) = serde_json::from_str::<Value>(mapped.get()).unwrap() else {
            panic!("not an object: {}", mapped.get());
        };
        prop_assert_eq!(out.len(), fields.len());
        for (field, p) in &fields {
            let expected = value.pointer(p).cloned().unwrap_or(Value::Null);
            prop_assert_eq!(out.get(field), Some(&expected), "{} = {}", field, p);
        }
    }

    /// A pointer built by escaping any keys puts the value where the same
    /// pointer reads it back, whatever the document held before.
    #[test]
    fn set_pointer_round_trips_through_raw_pointer(
        start in json_value(),
        keys in prop::collection::vec(key(), 1..5),
        value in json_value(),
    ) {
        let p: String = keys.iter().map(|k| format!("/{}", escape(k))).collect();
        let mut doc = start;
        set_pointer(&mut doc, &p, value.clone());
        prop_assert_eq!(doc.pointer(&p), Some(&value));
        let text = doc.to_string();
        let raw: &RawValue = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(parsed(raw_pointer(raw, &p)), Some(value));
    }

    /// A company's refusal yields its `error` only when that is a short
    /// word; never free text.
    #[test]
    fn error_code_is_a_short_word_from_the_body(
        code in prop_oneof!["[A-Za-z0-9_.:-]{1,64}", "\\PC{0,70}"],
        other in json_value(),
        garbage in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let body = json!({"error": code, "error_description": other}).to_string();
        let word = code.len() <= 64 && !code.is_empty()
            && code.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        prop_assert_eq!(error_code(body.as_bytes()), word.then(|| code.clone()));
        if let Some(found) = error_code(&garbage) {
            let value: Value = serde_json::from_slice(&garbage).unwrap();
            prop_assert_eq!(value["error"].as_str(), Some(found.as_str()));
        }
    }
}

// -------------------------------------------------------------- cookies

const COOKIE_NAME: &str = "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}";
/// RFC 6265 cookie-octets.
const COOKIE_VALUE: &str = "[!#-+\\--:<-\\[\\]-~]{0,16}";

fn cookie_headers(lines: &[Vec<(String, String)>]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for pairs in lines {
        let line: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
        headers.append(header::COOKIE, HeaderValue::from_str(&line.join("; ")).unwrap());
    }
    headers
}

proptest! {
    #![proptest_config(cases(1024))]

    /// The first cookie of that name, across every `Cookie` header.
    #[test]
    fn cookie_finds_the_first_of_its_name(
        lines in prop::collection::vec(prop::collection::vec((COOKIE_NAME, COOKIE_VALUE), 1..5), 0..3),
        pick: prop::sample::Index,
        other in COOKIE_NAME,
    ) {
        let headers = cookie_headers(&lines);
        let all: Vec<&(String, String)> = lines.iter().flatten().collect();
        let name = if all.is_empty() { other } else { all[pick.index(all.len())].0.clone() };
        let expected = all.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        prop_assert_eq!(login::cookie(&headers, &name), expected);
    }

    /// Any header bytes: a value found is part of the header, without a `;`.
    #[test]
    fn cookie_reads_any_header_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..80), name in COOKIE_NAME) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, value);
            if let Some(found) = login::cookie(&headers, &name) {
                prop_assert!(!found.contains(';'));
                prop_assert!(String::from_utf8_lossy(&bytes).contains(found));
            }
        }
    }

    /// The console's session is its cookie when that is 1 to 256 bytes.
    #[test]
    fn console_session_cookie_is_bounded(value in "[!#-+\\--:<-\\[\\]-~]{0,300}", before in COOKIE_VALUE) {
        let headers = cookie_headers(&[vec![
            ("other".to_string(), before),
            (crate::console::SESSION_COOKIE.to_string(), value.clone()),
        ]]);
        let expected = (!value.is_empty() && value.len() <= crate::console::MAX_CREDENTIAL_LEN).then_some(value.as_str());
        prop_assert_eq!(crate::console::session_cookie(&headers), expected);
    }
}

proptest! {
    #![proptest_config(cases(1024))]

    /// A customer token taken at intake travels as itself: in a cookie as
    /// one cookie (none injected beside it), in a header as a valid value,
    /// in a JSON body as the same text.
    #[test]
    fn a_token_that_fits_its_placement_arrives_whole(
        token in prop_oneof!["[!-~]{1,40}", "[ -~]{0,40}", "\\PC{0,40}", "[a-z]{1,8}; admin=true"],
    ) {
        if CustomerAuthPlacement::Cookie.refuses(&token).is_none() {
            let headers = cookie_headers(&[vec![("SESSION".to_string(), token.clone())]]);
            prop_assert_eq!(login::cookie(&headers, "SESSION"), Some(token.as_str()));
            prop_assert!(!token.contains([';', ',', ' ', '"', '\\']));
        }
        if CustomerAuthPlacement::Header.refuses(&token).is_none() {
            let value = format!("JWT {token}");
            prop_assert!(HeaderValue::from_str(&value).is_ok(), "{}", value);
        }
        prop_assert_eq!(CustomerAuthPlacement::Body.refuses(&token), None);
        let mut body = Value::Object(Default::default());
        set_pointer(&mut body, "/customer_auth", Value::String(token.clone()));
        let sent: Value = serde_json::from_str(&body.to_string()).unwrap();
        prop_assert_eq!(sent["customer_auth"].as_str(), Some(token.as_str()));
    }
}

// ------------------------------------------- refused JSON bodies (without_values)

#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Handoff {
    token: Option<String>,
    expires_in: Option<u64>,
}

/// A value of the wrong type for one of `Handoff`'s fields, carrying `SeCrEt`.
fn wrong_value() -> impl Strategy<Value = (&'static str, Value)> {
    let secret = prop_oneof!["\\PC{0,24}", "\\PC{0,6}, expected \\PC{0,6}"].prop_map(|s| format!("SeCrEt{s}SeCrEt"));
    prop_oneof![
        secret.clone().prop_map(|s| ("expires_in", Value::String(s))),
        secret.clone().prop_map(|s| ("expires_in", json!([s]))),
        secret.prop_map(|s| ("token", json!({ s: 1 }))),
        (1_000_000_000_000i64..i64::MAX).prop_map(|n| ("token", json!(n))),
        (1_000_000_000_000i64..i64::MAX).prop_map(|n| ("expires_in", json!(-n))),
    ]
}

proptest! {
    #![proptest_config(cases(512))]

    /// A refused body's message keeps the field and what was expected, and
    /// never the value that was sent (a token sent with the wrong type).
    #[test]
    fn without_values_never_repeats_the_value((field, value) in wrong_value()) {
        let body = json!({ field: value }).to_string();
        let Err(rejection) = axum::Json::<Handoff>::from_bytes(body.as_bytes()) else {
            panic!("{body} was accepted");
        };
        let message = crate::http::without_values(&rejection.body_text());
        let shown = match &value {
            Value::Number(n) => n.to_string().trim_start_matches('-').to_string(),
            _ => "SeCrEt".to_string(),
        };
        prop_assert!(!message.contains(&shown), "{message}");
        prop_assert!(message.contains(field) && message.contains("expected"), "{message}");
    }
}

// ------------------------------------------------------- token endpoint

/// A token endpoint's answer: status, `WWW-Authenticate`, body.
type TokenAnswer = (u16, Option<String>, Vec<u8>);

/// A token endpoint whose next answer the test sets.
struct TokenEndpoint {
    url: String,
    answer: Arc<Mutex<TokenAnswer>>,
}

fn token_endpoint(rt: &Runtime) -> TokenEndpoint {
    let answer: Arc<Mutex<TokenAnswer>> = Arc::default();
    let served = answer.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let (status, challenge, body) = served.lock().unwrap().clone();
            async move {
                let mut response = axum::response::Response::new(axum::body::Body::from(body));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                if let Some(c) = challenge {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_str(&c).unwrap());
                }
                response
            }
        }),
    );
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    TokenEndpoint { url, answer }
}

fn token_source(url: &str) -> TokenSource {
    let config = SystemAuthConfig::Oauth2ClientCredentials(OauthClient {
        token_url: Some(url.to_string()),
        issuer: None,
        client_id: "deskbridge".into(),
        client_secret: Some(SecretSource::Inline("client-secret".into())),
        private_key: None,
        key_id: None,
        auth_method: ClientAuthMethod::ClientSecretBasic,
        grant_type_in: GrantTypeIn::Body,
        scope: None,
        audience: None,
        resource: None,
        subject_token_type: None,
        default_expires_in_secs: 300,
        expired_when: None,
    });
    let metrics = Arc::new(Metrics::default());
    // As the gateway's own client: redirects are answers, not followed.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let deps = TokenDeps {
        http,
        timeout: Duration::from_secs(5),
        metrics,
        share: Arc::new(LocalShare::default()),
        clock: Arc::new(clock::SystemClock),
    };
    TokenSource::new("acme", config, deps).unwrap()
}

/// Mostly close to a real token endpoint's answer, sometimes not JSON.
fn token_answer() -> impl Strategy<Value = TokenAnswer> {
    let token_type = prop_oneof![
        select(vec!["Bearer", "bearer", "BEARER", "mac", "", "Bearer "]).prop_map(|s| json!(s)),
        Just(json!(7)),
    ];
    let access_token = prop_oneof![
        "[!-~]{1,40}".prop_map(|t| json!(format!("TokEn{t}"))),
        "\\PC{0,20}".prop_map(|t| json!(format!("TokEn{t}"))),
        "[ \\t\\r\\n\\x00a]{0,4}".prop_map(|t| json!(t)),
        Just(json!(12345)),
    ];
    let expires_in = prop_oneof![
        Just(None),
        (0u64..100_000).prop_map(|n| Some(json!(n))),
        (0u64..100_000).prop_map(|n| Some(json!(format!(" {n} ")))),
        select(vec![json!(-1), json!(1.5), json!("soon"), json!(null), json!(u64::MAX)]).prop_map(Some),
    ];
    let ok_body = (token_type, access_token, expires_in).prop_map(|(tt, at, ei)| {
        let mut body = json!({"token_type": tt, "access_token": at});
        if let Some(ei) = ei {
            body["expires_in"] = ei;
        }
        body.to_string().into_bytes()
    });
    let refusal = (
        prop_oneof![
            select(vec![
                "invalid_request",
                "invalid_client",
                "invalid_scope",
                "unauthorized_client"
            ])
            .prop_map(String::from),
            "\\PC{0,12}"
        ],
        "\\PC{0,20}",
    )
        .prop_map(|(error, description)| {
            json!({"error": error, "error_description": format!("FrEeTeXt{description}")})
                .to_string()
                .into_bytes()
        });
    let status = prop_oneof![
        Just(200u16),
        select(vec![400u16, 401, 403, 404, 429, 500, 502, 503]),
        200u16..600
    ];
    let challenge = prop::option::of(prop_oneof![
        challenge().prop_map(|(h, _)| h),
        "Bearer [ -~]{0,30}".prop_map(String::from)
    ]);
    let body = prop_oneof![ok_body, refusal, prop::collection::vec(any::<u8>(), 0..40)];
    (status, challenge, body)
}

#[test]
fn token_responses_are_read_as_documented() {
    let rt = Runtime::new().unwrap();
    let endpoint = token_endpoint(&rt);
    let mut runner = proptest::test_runner::TestRunner::new(cases(256));
    let result = runner.run(&token_answer(), |(status, challenge, body)| {
        *endpoint.answer.lock().unwrap() = (status, challenge, body.clone());
        // A new source each time: a failure makes one back off.
        let source = token_source(&endpoint.url);
        let outcome = rt.block_on(source.fetch_now());
        let parsed = serde_json::from_slice::<contract::AccessTokenResponse>(&body).ok();
        match outcome {
            Ok(()) => {
                prop_assert_eq!(status, 200);
                let parsed = parsed.unwrap();
                prop_assert!(parsed.token_type.eq_ignore_ascii_case("bearer"));
                let bearer = rt.block_on(source.get()).unwrap().unwrap();
                let expected = format!("Bearer {}", parsed.access_token);
                prop_assert_eq!(bearer.header().as_bytes(), expected.as_bytes());
            }
            Err(TokenError::Refused { status: s, error }) => {
                prop_assert!((201..500).contains(&status));
                prop_assert_eq!(s, status);
                prop_assert!(
                    contract::registered_oauth_error(&error).is_some()
                        || error == "no error code"
                        || error == "an unregistered error code",
                    "{}",
                    error
                );
            }
            Err(TokenError::Unavailable(message)) => {
                prop_assert!(status >= 500 || status == 200, "{status}: {message}");
                if status == 200
                    && let Some(p) = &parsed
                {
                    // Only a token the gateway cannot send is refused, and it is not repeated.
                    let sendable = !p.access_token.trim().is_empty()
                        && HeaderValue::from_str(&format!("Bearer {}", p.access_token)).is_ok();
                    prop_assert!(!(sendable && p.token_type.eq_ignore_ascii_case("bearer")), "{message}");
                }
                prop_assert!(!message.contains("TokEn") && !message.contains("FrEeTeXt"), "{message}");
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

proptest! {
    #![proptest_config(cases(256))]

    /// The lifetime read from an unverified JWT's `exp`: what is left of
    /// it, and nothing from anything else.
    #[test]
    fn jwt_lifetime_reads_exp_and_nothing_else(left in 0u64..1_000_000, garbage in "\\PC{0,60}", header in json_value()) {
        let now = clock::SystemClock.unix_secs();
        let claims = URL_SAFE_NO_PAD.encode(json!({"exp": now + left, "sub": "x"}).to_string());
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        let lifetime = jwt_lifetime(&format!("{header}.{claims}.c2ln"), now).unwrap();
        prop_assert_eq!(lifetime, left);
        let _ = jwt_lifetime(&garbage, now);
        let claims = URL_SAFE_NO_PAD.encode(json!({"exp": now.saturating_sub(left + 1)}).to_string());
        prop_assert_eq!(jwt_lifetime(&format!("{header}.{claims}.c2ln"), now), None);
    }
}

// ---------------------------------------------------------- customer JWTs

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Text that is a JWT in shape at most: three parts of base64url-ish text,
/// or parts that decode to JSON of any kind, or anything at all.
fn not_a_jwt() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,120}",
        "[A-Za-z0-9_=+/-]{0,40}\\.[A-Za-z0-9_=+/-]{0,40}\\.[A-Za-z0-9_=+/-]{0,40}",
        (json_value(), json_value(), "[A-Za-z0-9_-]{0,40}").prop_map(|(h, c, s)| format!(
            "{}.{}.{s}",
            b64(&h),
            b64(&c)
        )),
        (json_value(), "[a-z]{0,3}")
            .prop_map(|(extra, kid)| { format!("{}.e30.c2ln", b64(&json!({"alg": "ES256", "kid": kid, "x": extra}))) }),
    ]
}

/// A customer JWT under `kid` "k" with a hostile header: any algorithm,
/// standard fields of any type, extensions, `crit`; signed by the real
/// key or not at all.
fn hostile_header() -> impl Strategy<Value = (Value, bool)> {
    // Mostly the right algorithm and a real signature, so that whole tokens
    // are often sound and what the other fields do decides.
    let alg = prop_oneof![
        6 => Just("ES256"),
        1 => select(vec!["ES384", "HS256", "RS256", "PS256", "EdDSA", "none", "es256", ""]),
    ];
    let field = select(vec![
        "typ", "cty", "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit", "zip", "enc", "url", "nonce", "b64",
        "kid2",
    ]);
    let value = prop_oneof![
        json_value(),
        Just(json!("JWT")),
        Just(json!("https://evil.test/jwks")),
        Just(json!(["exp"])),
        Just(json!([])),
    ];
    let fields = prop::collection::btree_map(field, value, 0..3);
    (alg, fields, prop::bool::weighted(0.8)).prop_map(|(alg, fields, signed)| {
        let mut header = json!({"alg": alg, "kid": "k"});
        for (name, value) in fields {
            header[name] = value;
        }
        (header, signed)
    })
}

#[test]
fn any_text_as_a_customer_token_is_refused() {
    let rt = Runtime::new().unwrap();
    // No JWKS to reach: a token that names a key is refused as unverifiable.
    let closed = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let verifier = verifier(
        &format!("http://{}/jwks", closed.local_addr().unwrap()),
        Duration::from_secs(5),
    );
    drop(closed);
    let mut runner = proptest::test_runner::TestRunner::new(cases(512));
    let result = runner.run(&not_a_jwt(), |token| {
        let outcome = rt.block_on(verifier.verify(&token));
        let malformed = jsonwebtoken::decode_header(&token).map_or(true, |h| h.kid.is_none() || h.crit.is_some());
        match outcome {
            Err(IdentityError::Invalid(_)) => {}
            Err(IdentityError::KeysUnavailable(_)) => prop_assert!(!malformed, "{token}"),
            other => prop_assert!(false, "{token}: {other:?}"),
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn hostile_jwt_headers_are_refused_and_only_a_sound_token_passes() {
    let rt = Runtime::new().unwrap();
    let jwks = rt.block_on(jwks_server());
    let (key, jwk) = signing_key("k");
    jwks.keys.lock().unwrap().push(jwk);
    let verifier = verifier(&jwks.url, Duration::from_secs(5));

    let now = clock::SystemClock.unix_secs();
    let claims = b64(&json!({"iss": "https://acme.test", "aud": "deskbridge", "sub": "cus_1", "exp": now + 600}));
    let mut runner = proptest::test_runner::TestRunner::new(cases(1024));
    let result = runner.run(
        &(hostile_header(), "[A-Za-z0-9_-]{0,90}"),
        |((header, signed), garbage)| {
            let message = format!("{}.{claims}", b64(&header));
            let signature = if signed {
                jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::ES256).unwrap()
            } else {
                garbage
            };
            let token = format!("{message}.{signature}");
            let outcome = rt.block_on(verifier.verify(&token));
            let sound = signed
                && header["alg"] == "ES256"
                && header.get("crit").is_none_or(Value::is_null)
                && jsonwebtoken::decode_header(&token).is_ok();
            match outcome {
                Ok(customer) => prop_assert!(sound && customer.customer_key == "cus_1", "{header}"),
                Err(IdentityError::Invalid(_)) => prop_assert!(!sound, "{header}"),
                Err(e) => prop_assert!(false, "{header}: {e:?}"),
            }
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
