//! Throttling of failed logins, per username and per client address, in a
//! fixed window. An attempt is reserved before its password is checked and
//! counts while in flight, so a burst of concurrent guesses is held to the
//! same limits as guesses one after the other. A wrong password becomes a
//! recorded failure; a success clears its username's failures.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde::Deserialize;

/// Throttling of *failed* logins. Successful logins never count.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    pub max_failures_per_user: u32,
    /// Failures from one address across all usernames (password spraying);
    /// attempts in flight count too.
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

/// What a subject did in its current window, and its attempts in flight.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    started: u64,
    failures: u32,
    in_flight: u32,
}

impl Tally {
    fn failures_at(&self, now: u64, window_secs: u64) -> u32 {
        if now < self.started + window_secs {
            self.failures
        } else {
            0
        }
    }

    fn is_idle(&self, now: u64, window_secs: u64) -> bool {
        self.in_flight == 0 && self.failures_at(now, window_secs) == 0
    }
}

/// Above this many tracked subjects, idle ones are swept on a reservation,
/// which bounds memory under a spray of random usernames.
const SWEEP_ABOVE: usize = 10_000;

/// Seconds to wait when the limit is taken by attempts still in flight:
/// they resolve within a password hash.
const IN_FLIGHT_WAIT_SECS: u64 = 1;

pub struct LoginThrottle {
    config: ThrottleConfig,
    tallies: Mutex<HashMap<Subject, Tally>>,
}

/// A login attempt counted in flight against its username and address.
/// [`Attempt::failed`] turns it into a recorded failure and
/// [`Attempt::succeeded`] clears the username's failures; dropped either
/// way or unresolved (the hasher was busy, the store failed, the client
/// went away before its answer), it is released: its caller learned nothing.
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    subjects: Vec<Subject>,
}

impl LoginThrottle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            tallies: Mutex::new(HashMap::new()),
        }
    }

    fn limit(&self, subject: &Subject) -> u32 {
        match subject {
            Subject::User(_) => self.config.max_failures_per_user,
            Subject::Address(_) => self.config.max_failures_per_address,
        }
    }

    fn tallies(&self) -> std::sync::MutexGuard<'_, HashMap<Subject, Tally>> {
        self.tallies.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A sign-in without a username (e.g. with a token) counts against its
    /// address only, so nobody can lock such sign-ins out for everyone.
    /// Usernames count as written: logins match them exactly, so `Dana` is
    /// another account than `dana`, and failures for one must not lock the
    /// other out.
    fn subjects(username: Option<&str>, address: IpAddr) -> Vec<Subject> {
        let mut subjects = vec![Subject::Address(address)];
        subjects.extend(username.map(|u| Subject::User(u.to_string())));
        subjects
    }

    /// Reserves an attempt, or `Err(seconds)` to wait when the username or
    /// the address has its failures and attempts in flight at the limit.
    pub fn reserve(&self, username: Option<&str>, address: IpAddr, now: u64) -> Result<Attempt<'_>, u64> {
        let window_secs = self.config.window_secs;
        let subjects = Self::subjects(username, address);
        let mut tallies = self.tallies();
        let mut wait = 0;
        for subject in &subjects {
            let Some(t) = tallies.get(subject) else { continue };
            let failures = t.failures_at(now, window_secs);
            let limit = self.limit(subject);
            if failures >= limit {
                wait = wait.max(t.started + window_secs - now);
            } else if failures + t.in_flight >= limit {
                wait = wait.max(IN_FLIGHT_WAIT_SECS);
            }
        }
        if wait > 0 {
            return Err(wait);
        }
        if tallies.len() > SWEEP_ABOVE {
            tallies.retain(|_, t| !t.is_idle(now, window_secs));
        }
        for subject in &subjects {
            tallies.entry(subject.clone()).or_default().in_flight += 1;
        }
        Ok(Attempt {
            throttle: self,
            subjects,
        })
    }
}

impl Attempt<'_> {
    /// A wrong password (or token): one failure for each subject.
    pub fn failed(self, now: u64) {
        let window_secs = self.throttle.config.window_secs;
        let mut tallies = self.throttle.tallies();
        for subject in &self.subjects {
            if let Some(t) = tallies.get_mut(subject) {
                if now >= t.started + window_secs {
                    t.started = now;
                    t.failures = 0;
                }
                t.failures += 1;
            }
        }
    }

    /// The right password: the username's failures are forgiven.
    pub fn succeeded(self) {
        let mut tallies = self.throttle.tallies();
        for subject in &self.subjects {
            if let (Subject::User(_), Some(t)) = (subject, tallies.get_mut(subject)) {
                t.failures = 0;
            }
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut tallies = self.throttle.tallies();
        for subject in &self.subjects {
            if let Some(t) = tallies.get_mut(subject) {
                t.in_flight = t.in_flight.saturating_sub(1);
                if t.in_flight == 0 && t.failures == 0 {
                    tallies.remove(subject);
                }
            }
        }
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

    fn fail(t: &LoginThrottle, username: Option<&str>, ip: IpAddr, now: u64) {
        t.reserve(username, ip, now).map(|a| a.failed(now)).unwrap_or(());
    }

    #[test]
    fn locks_a_username_after_its_failures_until_the_window_ends() {
        let t = throttle();
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..3 {
            fail(&t, Some("Alice"), ip, 100);
        }
        assert_eq!(t.reserve(Some("Alice"), [10, 0, 0, 2].into(), 110).err(), Some(50));
        assert!(t.reserve(Some("bob"), ip, 110).is_ok());
        assert!(
            t.reserve(Some("alice"), [10, 0, 0, 2].into(), 110).is_ok(),
            "another account"
        );
        assert!(t.reserve(Some("Alice"), ip, 160).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_until_they_resolve() {
        let t = throttle();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let held: Vec<_> = (0..3).filter_map(|_| t.reserve(Some("alice"), ip, 0).ok()).collect();
        assert_eq!(held.len(), 3);
        assert_eq!(t.reserve(Some("alice"), ip, 0).err(), Some(IN_FLIGHT_WAIT_SECS));
        // Released unresolved: nothing was learned, nothing is recorded.
        drop(held);
        assert!(t.tallies().is_empty());
        let guesses: Vec<_> = (0..5)
            .filter_map(|n| t.reserve(Some(&format!("u{n}")), ip, 0).ok())
            .collect();
        assert_eq!(guesses.len(), 5);
        assert!(
            t.reserve(Some("u9"), ip, 0).is_err(),
            "the address cap holds across usernames"
        );
        guesses.into_iter().for_each(|a| a.failed(0));
        assert_eq!(t.reserve(Some("u9"), ip, 1).err(), Some(59));
    }

    #[test]
    fn success_clears_the_username_but_not_the_address() {
        let t = throttle();
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..2 {
            fail(&t, Some("carol"), ip, 0);
        }
        t.reserve(Some("carol"), ip, 0).map(Attempt::succeeded).unwrap_or(());
        assert!(!t.tallies().contains_key(&Subject::User("carol".into())));
        assert_eq!(t.tallies().get(&Subject::Address(ip)).map(|w| w.failures), Some(2));
    }

    #[test]
    fn failures_without_a_username_lock_their_address_only() {
        let t = throttle();
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..5 {
            fail(&t, None, ip, 0);
        }
        assert_eq!(t.reserve(None, ip, 10).err(), Some(50));
        assert!(t.reserve(None, [10, 0, 0, 2].into(), 10).is_ok());
        assert!(t.reserve(Some("alice"), [10, 0, 0, 2].into(), 10).is_ok());
    }
}
