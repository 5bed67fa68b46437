//! `deskbridge demo`, as a newcomer runs it: start, follow the printed curl
//! lines to a profile, stop with a signal, start again on the same data.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the demo and returns it with everything it printed up to "Ctrl-C".
fn start(dir: &std::path::Path, backend: u16, gateway: u16) -> (Child, String) {
    let mut child = crate::support::deskbridge()
        .args(["demo", "--data-dir"])
        .arg(dir)
        .args(["--backend-listen", &format!("127.0.0.1:{backend}")])
        .args(["--gateway-listen", &format!("127.0.0.1:{gateway}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut printed = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    assert!(printed.contains("Ctrl-C"), "the demo did not start: {printed}");
    (child, printed)
}

fn stop(child: Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "clean exit on SIGTERM");
}

fn value_after<'a>(printed: &'a str, label: &str) -> &'a str {
    printed
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label} in {printed}"))
}

/// Runs the printed walkthrough with real curl, exactly as printed, and
/// checks its answers: the profile, then a page of transactions. Returns
/// its output (each answer on a line of its own, then `JWT=…`).
fn walk_through(printed: &str) -> String {
    let steps: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("JWT=") || l.starts_with("CONV=") || l.starts_with("curl "))
        .collect();
    assert_eq!(steps.len(), 4, "{printed}");
    let script: Vec<String> = steps
        .iter()
        .map(|step| match step.starts_with("curl ") {
            true => format!("{step}\necho"),
            false => step.to_string(),
        })
        .collect();
    let script = format!("set -e\n{}\necho \"JWT=$JWT\"", script.join("\n"));
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let profile: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(profile["data"]["name"], "Alice Martin", "{stdout}");
    let page: Value = serde_json::from_str(stdout.lines().nth(1).unwrap()).unwrap();
    let transactions = page["data"]["transactions"].as_array().expect("transactions");
    assert_eq!(transactions.len(), 5, "{stdout}");
    assert!(page["data"]["next_cursor"].is_string(), "{stdout}");
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn the_printed_walkthrough_reaches_a_profile_and_a_restart_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, gateway) = (free_port(), free_port());
    let (child, printed) = start(dir.path(), backend, gateway);
    let stdout = walk_through(&printed);
    let jwt = stdout.lines().find_map(|l| l.strip_prefix("JWT=")).unwrap().to_string();
    let first_password = value_after(&printed, "customer       alice    password").to_string();
    // The console comes first, with a sign-in that works.
    let first_url = printed.lines().find(|l| l.contains("http://")).unwrap();
    assert!(
        first_url.contains(&format!("http://127.0.0.1:{gateway}/console")),
        "{printed}"
    );
    let console_password = first_url.rsplit("password ").next().unwrap().trim_end_matches(')');
    let signed_in = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{gateway}/console/api/login"))
        .json(&json!({"username": "demo-agent", "password": console_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200, "{printed}");
    let site = reqwest::get(format!("http://127.0.0.1:{backend}/")).await.unwrap();
    assert_eq!(site.status(), 200, "the demo company site is at the backend's root");
    assert!(
        dir.path().join("gateway.toml").exists(),
        "the config it used is kept for copying"
    );
    stop(child);

    // Second start: same customers and keys; the old JWT still verifies.
    let (child, printed) = start(dir.path(), backend, gateway);
    assert_eq!(
        value_after(&printed, "customer       alice    password"),
        first_password
    );
    let app_key = value_after(&printed, "web app key").to_string();
    let agent = value_after(&printed, "agent token").to_string();
    let client = reqwest::Client::new();
    let session: Value = client
        .post(format!("http://127.0.0.1:{gateway}/v1/sessions"))
        .header("x-deskbridge-app-key", app_key)
        .json(&json!({"channel": "ios", "connection": "acme", "auth": {"token": jwt}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conversation = session["conversation_id"]
        .as_str()
        .expect("session opened with the old JWT");
    let r = client
        .post(format!(
            "http://127.0.0.1:{gateway}/v1/conversations/{conversation}/actions/getprofile"
        ))
        .bearer_auth(&agent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The file it wrote passes `config check`, and its write action runs once per key.
    let out = crate::support::deskbridge()
        .args(["config", "check"])
        .arg(dir.path().join("gateway.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let block = || {
        client
            .post(format!(
                "http://127.0.0.1:{gateway}/v1/conversations/{conversation}/actions/blockcard"
            ))
            .bearer_auth(&agent)
            .header("idempotency-key", "demo-test-block-1")
            .json(&json!({"input": {"card_id": "card-1102", "reason": "stolen"}}))
            .send()
    };
    for _ in 0..2 {
        let r = block().await.unwrap();
        assert_eq!(r.status(), 200);
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["data"]["status"], "blocked", "{answer}");
        assert_eq!(answer["data"]["block_reason"], "stolen", "{answer}");
    }
    stop(child);

    // A demo dir from before the data APIs (its client and key grant only
    // getprofile) is seeded again at start, so every action works.
    let credentials = dir.path().join("demo-credentials.json");
    let mut kept: Value = serde_json::from_str(&std::fs::read_to_string(&credentials).unwrap()).unwrap();
    kept["clients"][0]["scopes"] = json!("profile:read");
    kept["api_keys"][0]["apis"] = json!(["getprofile"]);
    std::fs::write(&credentials, kept.to_string()).unwrap();
    let (child, printed) = start(dir.path(), backend, gateway);
    assert_ne!(
        value_after(&printed, "customer       alice    password"),
        first_password,
        "seeded again"
    );
    walk_through(&printed);
    stop(child);
}
