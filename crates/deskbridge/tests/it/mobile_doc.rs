//! docs/mobile.md shows an app's HTTP exchanges as fenced `http` blocks, a
//! request then its answer. This replays them in order against the real
//! gateway and reference backend, so the page cannot drift from the API:
//! `{{name}}` in a request is a value the app has (or an earlier answer
//! gave); in an answer it is captured the first time and must match after;
//! `…` in an answer's string matches anything after the text before it.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::gateway_flow::world_configured;
use crate::support::{APP_KEY, client};

const DOC: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/mobile.md"));
/// The company tokens' lifetime in the replay; the event stream's step
/// moves both clocks past it (and past the verifier's 30 s leeway).
const TOKEN_TTL_SECS: u64 = 60;
const PAST_EXPIRY: Duration = Duration::from_secs(2 * TOKEN_TTL_SECS);

/// The `http` blocks of a Markdown text, in order.
fn http_blocks(doc: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```http") => current = Some(Vec::new()),
            (Some(lines), "```") => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            (Some(lines), _) => lines.push(line),
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an http block is not closed");
    blocks
}

/// `text` with every `{{name}}` replaced, percent-encoded when `encode`.
fn fill(text: &str, vars: &HashMap<String, String>, encode: bool) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let close = rest[open..].find("}}").unwrap() + open;
        let name = &rest[open + 2..close];
        let value = vars
            .get(name)
            .unwrap_or_else(|| panic!("{{{{{name}}}}} is used before an answer gave it"));
        out.push_str(&rest[..open]);
        if encode {
            out.extend(percent_encoded(value));
        } else {
            out.push_str(value);
        }
        rest = &rest[close + 2..];
    }
    out.push_str(rest);
    out
}

fn percent_encoded(value: &str) -> impl Iterator<Item = String> + '_ {
    value.bytes().map(|b| {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            (b as char).to_string()
        } else {
            format!("%{b:02X}")
        }
    })
}

/// Head lines and body of a block.
fn split(block: &str) -> (Vec<&str>, &str) {
    match block.split_once("\n\n") {
        Some((head, body)) => (head.lines().collect(), body.trim()),
        None => (block.lines().collect(), ""),
    }
}

fn header<'a>(head: &[&'a str], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Whether `actual` is what the doc shows, capturing `{{name}}`s.
fn matches(shown: &Value, actual: &Value, vars: &mut HashMap<String, String>, at: &str) {
    match shown {
        Value::String(s) if s.starts_with("{{") && s.ends_with("}}") => {
            let name = &s[2..s.len() - 2];
            let got = actual
                .as_str()
                .unwrap_or_else(|| panic!("{at}: {actual} is not a string"));
            match vars.get(name) {
                Some(known) => assert_eq!(got, known, "{at}: not the {name} from before"),
                None => {
                    vars.insert(name.to_string(), got.to_string());
                }
            }
        }
        Value::String(s) if s.contains('…') => {
            let prefix = &s[..s.find('…').unwrap()];
            let got = match actual {
                Value::String(v) => v.clone(),
                Value::Null => panic!("{at}: missing"),
                other => other.to_string(),
            };
            assert!(got.starts_with(prefix), "{at}: {got:?} does not start with {prefix:?}");
        }
        Value::Object(fields) => {
            for (key, value) in fields {
                let got = actual
                    .get(key)
                    .unwrap_or_else(|| panic!("{at}.{key}: missing in {actual}"));
                matches(value, got, vars, &format!("{at}.{key}"));
            }
        }
        other => assert_eq!(actual, other, "{at}"),
    }
}

#[tokio::test]
async fn every_exchange_in_the_mobile_guide_is_what_the_gateway_does() {
    let w = world_configured(|c| c.customer_token_ttl_secs = TOKEN_TTL_SECS, true, |toml| toml).await;
    let user = &w.seed.users[0];
    let mut vars: HashMap<String, String> = HashMap::from([
        ("app_key".into(), APP_KEY.into()),
        ("username".into(), user.username.clone()),
        ("password".into(), user.password.clone()),
    ]);
    let blocks = http_blocks(DOC);
    assert!(
        blocks.len() >= 12 && blocks.len().is_multiple_of(2),
        "{} blocks",
        blocks.len()
    );
    for pair in blocks.chunks(2) {
        let (request, answer) = (&pair[0], &pair[1]);
        let (head, body) = split(request);
        let mut line = head[0].split(' ');
        let (method, path) = (line.next().unwrap(), fill(line.next().unwrap(), &vars, false));
        let base = match header(&head, "host") {
            Some("deskbridge.example.com") => w.gateway.url.clone(),
            Some("api.acme.example.com") => w.backend.url.clone(),
            other => panic!("{}: no server for Host {other:?}", head[0]),
        };
        let form = header(&head, "content-type") == Some("application/x-www-form-urlencoded");
        let mut call = client().request(method.parse().unwrap(), format!("{base}{path}"));
        for l in head.iter().skip(1) {
            let (name, value) = l.split_once(':').unwrap();
            if !name.eq_ignore_ascii_case("host") {
                call = call.header(name.trim(), fill(value.trim(), &vars, false));
            }
        }
        if !body.is_empty() {
            call = call.body(fill(body, &vars, form));
        }
        let what = format!("{method} {path}");

        let (shown_head, shown_body) = split(answer);
        let status: u16 = shown_head[0].split(' ').nth(1).unwrap().parse().unwrap();
        let content_type = header(&shown_head, "content-type").unwrap();
        let mut response = call.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        let got_type = response.headers()["content-type"].to_str().unwrap().to_string();
        assert!(got_type.starts_with(content_type), "{what}: {got_type}");

        if content_type == "text/event-stream" {
            // The stream is open: time passes, the customer's token expires,
            // and the gateway asks for a fresh one.
            let kind = shown_body.lines().find_map(|l| l.strip_prefix("event: ")).unwrap();
            let shown: Value =
                serde_json::from_str(shown_body.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
            w.backend.clock.advance(PAST_EXPIRY);
            let wanted = format!("event: {kind}\n");
            let mut seen = String::new();
            let data = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let chunk = response.chunk().await.unwrap().expect("the stream ended");
                    seen.push_str(&String::from_utf8_lossy(&chunk));
                    if let Some(at) = seen.find(&wanted)
                        && let Some(data) = seen[at..].lines().find_map(|l| l.strip_prefix("data: "))
                    {
                        return data.to_string();
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{what}: no {kind} event; saw {seen:?}"));
            matches(&shown, &serde_json::from_str(&data).unwrap(), &mut vars, &what);
        } else {
            let got: Value = response.json().await.unwrap();
            matches(&serde_json::from_str(shown_body).unwrap(), &got, &mut vars, &what);
        }
    }
    // Every value the guide names was really handed around.
    for name in ["jwt", "fresh_jwt", "session_id", "conversation_id"] {
        assert!(vars.contains_key(name), "{name} never came back");
    }
    assert_ne!(vars["jwt"], vars["fresh_jwt"]);
}
