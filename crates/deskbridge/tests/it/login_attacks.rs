//! Attacks on customer login, replayed through real sockets: concurrent
//! guesses racing the throttle, password spraying from one address, and a
//! burst that would queue every login behind its password hashes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::support::{TestBackend, backend_with};

/// A client whose connections come from `address` (any 127.x.y.z is
/// loopback on Linux), so the backend sees another client address.
fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(address))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn try_login(c: &reqwest::Client, b: &TestBackend, username: &str, password: &str) -> u16 {
    c.post(b.url("/customer_authenticate"))
        .form(&[("username", username), ("password", password)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Sends all `(username, password)` logins at once; counts answers by status.
async fn burst(c: &reqwest::Client, b: &TestBackend, logins: &[(String, String)]) -> HashMap<u16, usize> {
    let statuses = join_all(logins.iter().map(|(u, p)| try_login(c, b, u, p))).await;
    let mut counts = HashMap::new();
    for status in statuses {
        *counts.entry(status).or_default() += 1;
    }
    counts
}

/// Bursts of `logins` until one has no password checked (no 401), as an
/// attacker would go on; returns how many were checked in all.
async fn guesses_checked(c: &reqwest::Client, b: &TestBackend, logins: &[(String, String)]) -> usize {
    let mut checked = 0;
    for _ in 0..10 {
        let counts = burst(c, b, logins).await;
        assert_eq!(counts.get(&200), None, "{counts:?}");
        let unexpected = counts.keys().filter(|s| ![401, 429, 503].contains(s)).count();
        assert_eq!(unexpected, 0, "{counts:?}");
        match counts.get(&401) {
            Some(n) => checked += n,
            None => return checked,
        }
    }
    panic!("guesses were still checked after ten bursts");
}

async fn started() -> (tempfile::TempDir, TestBackend) {
    // Room for a burst's connections from one address; the throttle is
    // what is under test, at its defaults (5 per user, 20 per address).
    backend_with(|c| c.http.max_connections_per_address = 5_000).await
}

#[tokio::test]
async fn concurrent_guesses_for_one_user_are_checked_no_more_than_the_limit() {
    let (_dir, b) = started().await;
    let seed = b.seed().await;
    let alice = &seed.users[0];
    let attacker = client_from([127, 0, 0, 11]);
    let guesses: Vec<_> = (0..500)
        .map(|n| (alice.username.clone(), format!("guess-{n}")))
        .collect();

    let checked = guesses_checked(&attacker, &b, &guesses).await;
    assert_eq!(checked, 5, "max_failures_per_user guesses are checked, no more");
    // The lock holds: the right password is refused too, from anywhere.
    let elsewhere = client_from([127, 0, 0, 12]);
    assert_eq!(try_login(&elsewhere, &b, &alice.username, &alice.password).await, 429);
}

#[tokio::test]
async fn password_spraying_from_one_address_stops_at_its_cap() {
    let (_dir, b) = started().await;
    let seed = b.seed().await;
    let attacker = client_from([127, 0, 0, 21]);
    let mut sprayed: Vec<_> = (0..497)
        .map(|n| (format!("user{n}"), "Winter2026!".to_string()))
        .collect();
    sprayed.extend(
        seed.users
            .iter()
            .map(|u| (u.username.clone(), "Winter2026!".to_string())),
    );

    let checked = guesses_checked(&attacker, &b, &sprayed).await;
    assert_eq!(checked, 20, "max_failures_per_address guesses are checked, no more");
    // Another address is not locked out.
    let bruno = &seed.users[1];
    let elsewhere = client_from([127, 0, 0, 22]);
    assert_eq!(try_login(&elsewhere, &b, &bruno.username, &bruno.password).await, 200);
}

#[tokio::test]
async fn a_login_burst_from_one_address_does_not_hold_up_another() {
    let (_dir, b) = started().await;
    let seed = b.seed().await;
    let (alice, bruno) = (&seed.users[0], &seed.users[1]);
    // Right passwords, so the throttle never steps in: only the hash
    // queue's bound and its per-address share stand in the way.
    let attacker = client_from([127, 0, 0, 31]);
    let logins: Vec<_> = (0..2_000)
        .map(|_| (alice.username.clone(), alice.password.clone()))
        .collect();
    // Connected before the burst: 2,000 connections at once overflow the
    // kernel's accept queue, and a new connection then waits a SYN
    // retransmission (1 s), whatever the server does.
    let legitimate = client_from([127, 0, 0, 32]);
    legitimate.get(b.url("/healthz")).send().await.unwrap();
    let measured = async {
        let mut latencies = Vec::new();
        for _ in 0..20 {
            let started = Instant::now();
            assert_eq!(try_login(&legitimate, &b, &bruno.username, &bruno.password).await, 200);
            latencies.push(started.elapsed());
        }
        latencies
    };
    let (counts, mut latencies) = tokio::join!(burst(&attacker, &b, &logins), measured);

    let refused = counts.get(&429).unwrap_or(&0) + counts.get(&503).unwrap_or(&0);
    assert!(refused > 1_000 && counts.contains_key(&503), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 2_000, "{counts:?}");
    latencies.sort();
    let p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1];
    eprintln!(
        "legitimate logins during a 2,000-login burst: p50 {:?}, p99 {p99:?}",
        latencies[latencies.len() / 2]
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}: {latencies:?}");
}
