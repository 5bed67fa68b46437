//! The `deskbridge backend` binary as an operator runs it.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{announced_url, deskbridge};

fn run(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = deskbridge()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn admin_commands_create_users_clients_keys_and_trace_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, seed, err) = run(&["backend", "--data-dir", d, "seed-demo", "--json"], "");
    assert!(ok, "{err}");
    let seed: Value = serde_json::from_str(&seed).unwrap();
    assert_eq!(seed["users"].as_array().unwrap().len(), 3);
    for field in ["client_id", "client_secret", "scopes"] {
        assert!(seed["clients"][0][field].is_string(), "{field}");
    }
    assert_eq!(
        seed["api_keys"][0]["apis"],
        serde_json::json!(["getprofile", "gettransactions", "blockcard"]),
        "the demo key grants every API"
    );
    assert_eq!(
        seed["clients"][0]["scopes"],
        "profile:read transactions:read cards:write"
    );

    let (ok, customer_id, err) = run(
        &[
            "backend",
            "--data-dir",
            d,
            "user",
            "add",
            "dana",
            "--name",
            "Dana Ruiz",
            "--account",
            "acc-9:checking:10.00:usd",
        ],
        "a-long-password\n",
    );
    assert!(ok, "{err}");
    let customer_id = customer_id.trim();
    assert!(customer_id.starts_with("cus_") && !customer_id.contains("dana"));
    let (ok, username, _) = run(&["backend", "--data-dir", d, "trace", customer_id], "");
    assert!(ok);
    assert_eq!(username.trim(), "dana");
    let (ok, _, err) = run(&["backend", "--data-dir", d, "trace", "cus_nobody"], "");
    assert!(!ok && err.contains("no user"), "{err}");
    let (ok, _, err) = run(
        &["backend", "--data-dir", d, "user", "add", "dana", "--name", "Again"],
        "another-password\n",
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = run(
        &["backend", "--data-dir", d, "user", "add", "eve", "--name", "Eve"],
        "short\n",
    );
    assert!(!ok && err.contains("8 to 256"), "{err}");
    // Profile values are checked before anything is stored, and a clash
    // with another user's account is named, not a database error.
    for (extra, expected) in [
        (["--account", "acc-x:checking:Infinity:USD"], "not a decimal number"),
        (["--account", "acc-x:checking:1e9:USD"], "not a decimal number"),
        (["--account", "acc-x:checking:10.00:12$"], "not a 3-letter code"),
        (["--member-since", "2019-02-29"], "YYYY-MM-DD"),
        (
            ["--account", "acc-9:savings:1.00:EUR"],
            "another user has the account id \"acc-9\"",
        ),
    ] {
        let mut args = vec!["backend", "--data-dir", d, "user", "add", "frank", "--name", "Frank"];
        args.extend(extra);
        let (ok, _, err) = run(&args, "a-long-password\n");
        assert!(!ok && err.contains(expected), "{extra:?}: {err}");
        assert!(
            !err.to_lowercase().contains("sqlite") && !err.contains("UNIQUE"),
            "{err}"
        );
    }
    let (ok, _, err) = run(
        &[
            "backend",
            "--data-dir",
            d,
            "user",
            "add",
            "frank",
            "--name",
            "Frank",
            "--member-since",
            "2020-02-29",
        ],
        "a-long-password\n",
    );
    assert!(ok, "a leap day is a date: {err}");
    // A reset and a removal, each of which ends the user's sessions.
    let (ok, out, err) = run(
        &["backend", "--data-dir", d, "user", "set-password", "frank"],
        "another-long-password\n",
    );
    assert!(ok && out.contains("sessions are ended"), "{out}{err}");
    let (ok, _, err) = run(
        &["backend", "--data-dir", d, "user", "set-password", "frank"],
        "short\n",
    );
    assert!(!ok && err.contains("8 to 256"), "{err}");
    let (ok, out, err) = run(&["backend", "--data-dir", d, "user", "remove", "frank"], "");
    assert!(ok && out.contains("removed frank"), "{out}{err}");
    let (ok, _, err) = run(&["backend", "--data-dir", d, "user", "remove", "frank"], "");
    assert!(!ok && err.contains("not found"), "{err}");

    let (ok, out, _) = run(
        &[
            "backend",
            "--data-dir",
            d,
            "client",
            "add",
            "acme-platform",
            "--scope",
            "profile:read",
        ],
        "",
    );
    assert!(ok && out.contains("client_secret:"), "{out}");
    let (ok, key, _) = run(&["backend", "--data-dir", d, "key", "add", "--api", "getprofile"], "");
    assert!(ok && key.trim().starts_with("dbk_"));
    let (ok, _, err) = run(&["backend", "--data-dir", d, "key", "add", "--api", "getprofle"], "");
    assert!(
        !ok && err.contains("no such API (it serves getprofile, gettransactions, blockcard)"),
        "{err}"
    );
    let (ok, out, _) = run(&["backend", "--data-dir", d, "signing-key", "rotate"], "");
    assert!(ok && out.contains("new signing key"));

    // What is wrong is said once, under the right name.
    let (_, _, err) = run(
        &["backend", "--data-dir", d, "user", "add", "gina", "--name", "Gina"],
        "short\n",
    );
    assert!(
        !err.contains("configuration"),
        "an argument, not the configuration: {err}"
    );
    let config = dir.path().join("backend.toml");
    std::fs::write(&config, "access_token_ttl_secs = 0\n").unwrap();
    let (ok, _, err) = run(&["backend", "--config", config.to_str().unwrap(), "seed-demo"], "");
    assert!(!ok && err.matches("configuration").count() == 1, "{err}");
    assert!(err.contains("backend.toml: token lifetimes"), "{err}");
}

/// The server prints its bound address, serves, never logs a secret even at
/// debug level, and stops cleanly on SIGTERM.
#[tokio::test]
async fn serve_prints_its_address_and_keeps_secrets_out_of_logs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, seed, err) = run(&["backend", "--data-dir", d, "seed-demo", "--json"], "");
    assert!(ok, "{err}");
    let seed: Value = serde_json::from_str(&seed).unwrap();
    let mut child = deskbridge()
        .args(["backend", "--data-dir", d, "--listen", "127.0.0.1:0"])
        .env("DESKBRIDGE_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = announced_url(&mut child);

    let c = crate::support::client();
    let user = &seed["users"][0];
    let (username, password) = (user["username"].as_str().unwrap(), user["password"].as_str().unwrap());
    let login: Value = c
        .post(format!("{url}/customer_authenticate"))
        .form(&[("username", username), ("password", password)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwt = login["JWT"].as_str().unwrap().to_string();
    let client_secret = seed["clients"][0]["client_secret"].as_str().unwrap();
    let token: Value = c
        .post(format!("{url}/access_token?grant_type=client_credentials"))
        .form(&[
            ("client_id", seed["clients"][0]["client_id"].as_str().unwrap()),
            ("client_secret", client_secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap().to_string();
    let key = seed["api_keys"][0]["key"].as_str().unwrap();
    let r = c
        .post(format!("{url}/getprofile"))
        .bearer_auth(&access)
        .header("api-key", key)
        .header("customer-auth", format!("JWT {jwt}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Failures too: a wrong password and a bad key.
    c.post(format!("{url}/customer_authenticate"))
        .form(&[("username", username), ("password", "wrong-password-123")])
        .send()
        .await
        .unwrap();
    c.post(format!("{url}/getprofile"))
        .bearer_auth(&access)
        .header("api-key", "dbk_wrong")
        .send()
        .await
        .unwrap();

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "clean exit on SIGTERM");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("/getprofile"), "request logging is on: {logs}");
    for secret in [
        password,
        "wrong-password-123",
        client_secret,
        key,
        jwt.as_str(),
        access.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret reached the log");
    }
}

#[test]
fn a_bad_config_file_is_reported_with_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("backend.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nsesion_mode = \"cookie\"\n").unwrap();
    let (ok, _, err) = run(
        &[
            "backend",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            dir.path().to_str().unwrap(),
            "trace",
            "x",
        ],
        "",
    );
    assert!(!ok && err.contains("sesion_mode"), "{err}");
}
