//! What the web SDK needs from the gateway, on real sockets: the origin
//! check any page may call, the versioned SDK URL with its integrity value
//! (the one in docs/web-sdk.md), `deskbridge demo --allow-origin`, and the
//! card's custom element for desks' pages.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::json;

use crate::gateway_flow::{expect_problem, world_configured};
use crate::support::{APP_KEY, client, json as body_json};

/// The origin check answers any origin (CORS open, preflight included), for
/// that origin only, and only with the channel's app key.
#[tokio::test]
async fn any_page_may_ask_whether_its_origin_may_use_a_channel() {
    let w = world_configured(|_| {}, false, |t| t).await;
    let url = w.gateway.url("/v1/channels/web/origin");

    // A browser's preflight from a page the channel does not list.
    let preflight = client()
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "x-deskbridge-app-key")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let allowed_headers = preflight.headers()["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed_headers.contains("x-deskbridge-app-key"), "{allowed_headers}");

    let ask = |origin: Option<&'static str>, key: &'static str| {
        let mut r = client().get(&url).header("x-deskbridge-app-key", key);
        if let Some(origin) = origin {
            r = r.header("origin", origin);
        }
        r.send()
    };
    let refused = ask(Some("http://localhost:5173"), APP_KEY).await.unwrap();
    assert_eq!(refused.status(), 200);
    assert_eq!(refused.headers()["access-control-allow-origin"], "*");
    let refused = body_json(refused).await;
    assert_eq!(
        refused,
        json!({"channel": "web", "origin": "http://localhost:5173", "allowed": false})
    );
    // Exactly: the listed origin with another host spelling or a path is not it.
    for near in ["https://shop.example.com:443/", "http://shop.example.com"] {
        let r = body_json(ask(Some(near), APP_KEY).await.unwrap()).await;
        assert_eq!(r["allowed"], false, "{near}: {r}");
    }
    let listed = body_json(ask(Some("https://shop.example.com"), APP_KEY).await.unwrap()).await;
    assert_eq!(
        listed,
        json!({"channel": "web", "origin": "https://shop.example.com", "allowed": true})
    );
    // Not a browser: nothing to refuse.
    let no_origin = body_json(ask(None, APP_KEY).await.unwrap()).await;
    assert_eq!(no_origin, json!({"channel": "web", "origin": null, "allowed": true}));

    // Without the app key, or for a channel that does not exist, nothing is
    // said about origins; the answer is still readable by the page.
    let wrong_key = ask(Some("https://shop.example.com"), "wrong-key").await.unwrap();
    assert_eq!(wrong_key.headers()["access-control-allow-origin"], "*");
    let body = expect_problem(wrong_key, 401, "invalid_app_key").await;
    assert!(!body.to_string().contains("shop.example.com"), "{body}");
    let unknown = client()
        .get(w.gateway.url("/v1/channels/nope/origin"))
        .header("x-deskbridge-app-key", APP_KEY)
        .header("origin", "https://shop.example.com")
        .send()
        .await
        .unwrap();
    expect_problem(unknown, 401, "invalid_app_key").await;
    let posted = client()
        .post(&url)
        .header("x-deskbridge-app-key", APP_KEY)
        .send()
        .await
        .unwrap();
    expect_problem(posted, 405, "method_not_allowed").await;
}

/// The sha384 SRI value of a body, as a browser computes it.
fn integrity_of(body: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, body);
    format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

/// The versioned URL serves the same SDK, cached for long, revalidated by
/// its integrity value; docs/web-sdk.md quotes that value.
#[tokio::test]
async fn the_versioned_sdk_is_cached_long_and_its_integrity_is_the_documented_one() {
    let w = world_configured(|_| {}, false, |t| t).await;
    let r = client()
        .get(w.gateway.url("/sdk/v1/deskbridge.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    let body = r.bytes().await.unwrap();
    let integrity = integrity_of(&body);
    assert_eq!(integrity, gateway::sdk_integrity());
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    let cache = headers["cache-control"].to_str().unwrap();
    assert!(cache.contains("max-age=604800"), "{cache}");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(headers["etag"].to_str().unwrap(), format!("\"{integrity}\""));
    // Deskbridge.version is the release; the npm package has the same (sdk/pack.sh).
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(&format!("var VERSION = \"{}\";", env!("CARGO_PKG_VERSION"))),
        "deskbridge.js must say the workspace's version {}",
        env!("CARGO_PKG_VERSION")
    );
    let unversioned = client().get(w.gateway.url("/sdk/deskbridge.js")).send().await.unwrap();
    assert_eq!(unversioned.bytes().await.unwrap(), body, "one SDK under both URLs");

    let again = client()
        .get(w.gateway.url("/sdk/v1/deskbridge.js"))
        .header("if-none-match", format!("\"{integrity}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    let stale = client()
        .get(w.gateway.url("/sdk/v1/deskbridge.js"))
        .header("if-none-match", "\"sha384-old\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);

    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/web-sdk.md")).unwrap();
    assert!(
        docs.contains(&format!("integrity=\"{integrity}\"")),
        "docs/web-sdk.md must quote the SDK's integrity value: integrity=\"{integrity}\""
    );
}

/// `<deskbridge-card>` is served like the SDK, for desks' pages on other
/// origins: a script any origin may load, and that defines the element.
#[tokio::test]
async fn the_card_element_is_served_to_pages_of_any_origin() {
    let w = world_configured(|_| {}, false, |t| t).await;
    let r = client()
        .get(w.gateway.url(gateway::CARD_ELEMENT_PATH))
        .header("origin", "https://desk.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cross-origin-resource-policy"], "cross-origin");
    // Pinned like the versioned SDK: cached for long, its integrity the
    // ETag and the value docs/agent-card.md quotes.
    let cache = headers["cache-control"].to_str().unwrap();
    assert!(cache.contains("max-age=604800"), "{cache}");
    let text = r.text().await.unwrap();
    let integrity = integrity_of(text.as_bytes());
    assert_eq!(integrity, gateway::card_element_integrity());
    assert_eq!(headers["etag"].to_str().unwrap(), format!("\"{integrity}\""));
    assert!(text.contains(r#"var NAME = "deskbridge-card";"#), "{text}");
    assert!(text.contains("customElements.define(NAME"), "{text}");
    let again = client()
        .get(w.gateway.url(gateway::CARD_ELEMENT_PATH))
        .header("if-none-match", format!("\"{integrity}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/agent-card.md")).unwrap();
    assert!(
        docs.contains(&format!("integrity=\"{integrity}\"")),
        "docs/agent-card.md must quote the element's integrity value: integrity=\"{integrity}\""
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `deskbridge demo --allow-origin`: a page of one's own, on another origin,
/// may open sessions on the demo's web channel; the demo site still may; a
/// page not given may not. An origin with a path is refused at the start.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_lets_the_pages_given_with_allow_origin_use_its_web_channel() {
    let refused = crate::support::deskbridge()
        .args(["demo", "--allow-origin", "http://localhost:5173/app"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("is not an origin") && said.contains("http://localhost:5173"),
        "{said}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (backend, gateway) = (free_port(), free_port());
    let mut child = crate::support::deskbridge()
        .args(["demo", "--data-dir"])
        .arg(dir.path())
        .args(["--backend-listen", &format!("127.0.0.1:{backend}")])
        .args(["--gateway-listen", &format!("127.0.0.1:{gateway}")])
        // A trailing slash is forgiven; the second spelling is its own origin.
        .args(["--allow-origin", "http://localhost:5173/"])
        .args(["--allow-origin", "http://127.0.0.1:5173"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut printed = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    let app_key = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("web app key"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{printed}"))
        .to_string();
    assert!(printed.contains("your page      http://localhost:5173 "), "{printed}");
    assert!(
        printed.contains(&format!("integrity {}", gateway::sdk_integrity())),
        "{printed}"
    );
    assert!(
        printed.contains(&format!(
            "card element   http://127.0.0.1:{gateway}/sdk/v1/deskbridge-card.js   integrity {}",
            gateway::card_element_integrity()
        )),
        "{printed}"
    );

    let gateway_url = format!("http://127.0.0.1:{gateway}");
    let open = |origin: String| {
        client()
            .post(format!("{gateway_url}/v1/sessions"))
            .header("x-deskbridge-app-key", &app_key)
            .header("origin", origin)
            .json(&json!({"channel": "web", "connection": "acme"}))
            .send()
    };
    for origin in [
        "http://localhost:5173".to_string(),
        "http://127.0.0.1:5173".to_string(),
        format!("http://127.0.0.1:{backend}"),
    ] {
        let preflight = client()
            .request(reqwest::Method::OPTIONS, format!("{gateway_url}/v1/sessions"))
            .header("origin", &origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-deskbridge-app-key")
            .send()
            .await
            .unwrap();
        assert_eq!(
            preflight
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap()),
            Some(origin.as_str()),
            "preflight from {origin}"
        );
        let opened = open(origin.clone()).await.unwrap();
        assert_eq!(opened.status(), 201, "{origin}");
    }
    expect_problem(
        open("http://localhost:3000".into()).await.unwrap(),
        403,
        "origin_not_allowed",
    )
    .await;
    let toml = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
    assert!(toml.contains("\"http://localhost:5173\""), "{toml}");

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(child.wait().unwrap().success());
}
