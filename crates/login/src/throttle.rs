//! Throttling of failed logins, per username and per client address, in a
//! fixed window. Only failures count; a success clears its username.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde::Deserialize;

/// Throttling of *failed* logins. Successful logins never count.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    pub max_failures_per_user: u32,
    pub max_failures_per_address: u32,
    pub window_secs: u64,
}

impl ThrottleConfig {
    /// What is wrong with the settings, by key: a zero window would turn
    /// throttling off, a zero limit would lock every name at its first slip.
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if self.window_secs == 0 {
            out.push(("window_secs", "must be at least 1"));
        }
        if self.max_failures_per_user == 0 {
            out.push(("max_failures_per_user", "must be at least 1"));
        }
        if self.max_failures_per_address == 0 {
            out.push(("max_failures_per_address", "must be at least 1"));
        }
        out
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            max_failures_per_user: 5,
            max_failures_per_address: 20,
            window_secs: 900,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    User(String),
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: u64,
    failures: u32,
}

/// Above this many tracked subjects, expired windows are swept on insert,
/// which bounds memory under a spray of random usernames.
const SWEEP_ABOVE: usize = 10_000;

pub struct LoginThrottle {
    config: ThrottleConfig,
    windows: Mutex<HashMap<Subject, Window>>,
}

impl LoginThrottle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn limit(&self, subject: &Subject) -> u32 {
        match subject {
            Subject::User(_) => self.config.max_failures_per_user,
            Subject::Address(_) => self.config.max_failures_per_address,
        }
    }

    /// A sign-in without a username (e.g. with a token) counts against its
    /// address only, so nobody can lock such sign-ins out for everyone.
    /// Usernames count as written: logins match them exactly, so `Dana` is
    /// another account than `dana`, and failures for one must not lock the
    /// other out.
    fn subjects(username: Option<&str>, address: IpAddr) -> impl Iterator<Item = Subject> {
        username
            .map(|u| Subject::User(u.to_string()))
            .into_iter()
            .chain([Subject::Address(address)])
    }

    /// `Err(seconds)` to wait when either the username or the address has
    /// used up its failures in the current window.
    pub fn check(&self, username: Option<&str>, address: IpAddr, now: u64) -> Result<(), u64> {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = 0;
        for subject in Self::subjects(username, address) {
            if let Some(w) = windows.get(&subject) {
                let ends = w.started + self.config.window_secs;
                if now < ends && w.failures >= self.limit(&subject) {
                    wait = wait.max(ends - now);
                }
            }
        }
        if wait > 0 { Err(wait) } else { Ok(()) }
    }

    pub fn record_failure(&self, username: Option<&str>, address: IpAddr, now: u64) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let window_secs = self.config.window_secs;
        if windows.len() > SWEEP_ABOVE {
            windows.retain(|_, w| now < w.started + window_secs);
        }
        for subject in Self::subjects(username, address) {
            let w = windows.entry(subject).or_insert(Window {
                started: now,
                failures: 0,
            });
            if now >= w.started + window_secs {
                *w = Window {
                    started: now,
                    failures: 0,
                };
            }
            w.failures += 1;
        }
    }

    pub fn record_success(&self, username: &str) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        windows.remove(&Subject::User(username.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(ThrottleConfig {
            max_failures_per_user: 3,
            max_failures_per_address: 5,
            window_secs: 60,
        })
    }

    #[test]
    fn locks_a_username_after_its_failures_until_the_window_ends() {
        let t = throttle();
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..3 {
            assert!(t.check(Some("Alice"), ip, 100).is_ok());
            t.record_failure(Some("Alice"), ip, 100);
        }
        assert_eq!(t.check(Some("Alice"), [10, 0, 0, 2].into(), 110), Err(50));
        assert!(t.check(Some("bob"), ip, 110).is_ok());
        assert!(
            t.check(Some("alice"), [10, 0, 0, 2].into(), 110).is_ok(),
            "another account"
        );
        assert!(t.check(Some("Alice"), ip, 160).is_ok());
    }

    #[test]
    fn locks_an_address_across_usernames_and_success_clears_the_user() {
        let t = throttle();
        let ip: IpAddr = [10, 0, 0, 1].into();
        for n in 0..5 {
            t.record_failure(Some(&format!("user{n}")), ip, 0);
        }
        assert!(t.check(Some("someone"), ip, 1).is_err());
        t.record_failure(Some("carol"), [10, 0, 0, 9].into(), 0);
        t.record_success("carol");
        assert!(
            t.windows
                .lock()
                .map(|w| !w.contains_key(&Subject::User("carol".into())))
                .unwrap_or(false)
        );
    }

    #[test]
    fn failures_without_a_username_lock_their_address_only() {
        let t = throttle();
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..5 {
            assert!(t.check(None, ip, 0).is_ok());
            t.record_failure(None, ip, 0);
        }
        assert_eq!(t.check(None, ip, 10), Err(50));
        assert!(t.check(None, [10, 0, 0, 2].into(), 10).is_ok());
        assert!(t.check(Some("alice"), [10, 0, 0, 2].into(), 10).is_ok());
    }
}
