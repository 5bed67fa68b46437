//! What one caller may take of the gateway: request rates (token buckets,
//! GCRA through `governor`) per agent and per channel session, and the
//! event streams that may stay open, per session, per channel, per agent
//! and in all. Streams hold a connection each for as long as they last, so
//! they get a budget of their own below the server's connection cap: a
//! flood of channel streams (the web app key is public by nature) cannot
//! take the connections agents need.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;

/// `[limits]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per second an agent (or a desk using an agent token) may
    /// make on average, and how many at once above that.
    pub agent_per_second: u32,
    pub agent_burst: u32,
    /// Requests per second one channel session may make (authenticate,
    /// open its event stream), and a burst; opening sessions is limited the
    /// same way per channel and client address.
    pub session_per_second: u32,
    pub session_burst: u32,
    /// Event streams open at once: per channel session, per channel, per
    /// agent, and in all (channels and agents). `event_streams` must stay
    /// below `server.http.max_connections`.
    pub streams_per_session: u32,
    pub streams_per_channel: u32,
    pub streams_per_agent: u32,
    pub event_streams: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            agent_per_second: 20,
            agent_burst: 60,
            session_per_second: 2,
            session_burst: 10,
            streams_per_session: 4,
            streams_per_channel: 4_000,
            streams_per_agent: 8,
            event_streams: 5_000,
        }
    }
}

impl LimitsConfig {
    /// What is wrong with these limits, as (key, problem) pairs.
    pub fn problems(&self, max_connections: usize) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("agent_per_second", self.agent_per_second),
            ("agent_burst", self.agent_burst),
            ("session_per_second", self.session_per_second),
            ("session_burst", self.session_burst),
            ("streams_per_session", self.streams_per_session),
            ("streams_per_channel", self.streams_per_channel),
            ("streams_per_agent", self.streams_per_agent),
            ("event_streams", self.event_streams),
        ] {
            if value == 0 {
                problems.push((key, "must be at least 1".to_string()));
            }
        }
        if self.event_streams as usize >= max_connections {
            problems.push((
                "event_streams",
                format!(
                    "must be below server.http.max_connections ({max_connections}), so streams cannot take every connection"
                ),
            ));
        }
        problems
    }
}

pub use company::RetryAfter;

type Keyed = DefaultKeyedRateLimiter<String>;

/// Request rates, keyed by agent name or channel session.
pub(crate) struct Rates {
    agents: Keyed,
    sessions: Keyed,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let nonzero = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(nonzero(per_second)).allow_burst(nonzero(burst))
}

fn admit(limiter: &Keyed, key: &str) -> Result<(), RetryAfter> {
    limiter.check_key(&key.to_string()).map_err(|refused| {
        let wait = refused.wait_time_from(DefaultClock::default().now());
        RetryAfter::from_wait(wait)
    })
}

impl Rates {
    pub(crate) fn new(config: &LimitsConfig) -> Self {
        Self {
            agents: RateLimiter::keyed(quota(config.agent_per_second, config.agent_burst)),
            sessions: RateLimiter::keyed(quota(config.session_per_second, config.session_burst)),
        }
    }

    pub(crate) fn agent(&self, name: &str) -> Result<(), RetryAfter> {
        admit(&self.agents, name)
    }

    /// A channel session's request, or the opening of one (keyed by
    /// channel and client address).
    pub(crate) fn session(&self, key: &str) -> Result<(), RetryAfter> {
        admit(&self.sessions, key)
    }

    /// Forgets callers whose buckets are full again, so the maps hold only
    /// the recently active.
    pub(crate) fn forget_idle(&self) {
        self.agents.retain_recent();
        self.sessions.retain_recent();
        self.agents.shrink_to_fit();
        self.sessions.shrink_to_fit();
    }
}

/// Who holds an event stream: a channel session, or an agent.
#[derive(Debug, Clone)]
pub(crate) enum StreamHolder {
    Session { channel: String, session: String },
    Agent(String),
}

/// Open event streams, by who holds them.
#[derive(Default)]
struct Open {
    total: u32,
    by_key: HashMap<String, u32>,
}

/// The event streams open at once, and their limits.
pub(crate) struct Streams {
    config: LimitsConfig,
    open: Mutex<Open>,
    /// `deskbridge_gateway_event_streams`: how many are open.
    gauge: Gauge,
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamRefused {
    Holder,
    Channel,
    Budget,
}

impl StreamRefused {
    pub(crate) fn detail(self) -> &'static str {
        match self {
            Self::Holder => "too many event streams are open for this session or agent",
            Self::Channel => "too many event streams are open for this channel",
            Self::Budget => "too many event streams are open on this gateway",
        }
    }
}

/// An open stream's place in the count, given back when it ends.
pub(crate) struct StreamSlot {
    streams: Arc<Streams>,
    keys: Vec<String>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        self.streams.gauge.dec();
        for key in &self.keys {
            if let Some(n) = open.by_key.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    open.by_key.remove(key);
                }
            }
        }
    }
}

impl Streams {
    pub(crate) fn new(config: LimitsConfig, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            config,
            open: Mutex::default(),
            gauge,
        })
    }

    /// A slot for one more stream of `holder`, if every limit allows it.
    pub(crate) fn open(self: &Arc<Self>, holder: &StreamHolder) -> Result<StreamSlot, StreamRefused> {
        let limits = &self.config;
        let keys: Vec<(String, u32, StreamRefused)> = match holder {
            StreamHolder::Session { channel, session } => vec![
                (
                    format!("s:{session}"),
                    limits.streams_per_session,
                    StreamRefused::Holder,
                ),
                (
                    format!("c:{channel}"),
                    limits.streams_per_channel,
                    StreamRefused::Channel,
                ),
            ],
            StreamHolder::Agent(name) => vec![(format!("a:{name}"), limits.streams_per_agent, StreamRefused::Holder)],
        };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= limits.event_streams {
            return Err(StreamRefused::Budget);
        }
        for (key, limit, refused) in &keys {
            if open.by_key.get(key).copied().unwrap_or(0) >= *limit {
                return Err(*refused);
            }
        }
        open.total += 1;
        self.gauge.inc();
        for (key, _, _) in &keys {
            *open.by_key.entry(key.clone()).or_default() += 1;
        }
        Ok(StreamSlot {
            streams: self.clone(),
            keys: keys.into_iter().map(|(key, _, _)| key).collect(),
        })
    }
}

/// How often idle rate-limit state is dropped.
pub(crate) const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_with_a_retry_time() {
        let rates = Rates::new(&LimitsConfig {
            agent_per_second: 1,
            agent_burst: 3,
            ..LimitsConfig::default()
        });
        for _ in 0..3 {
            assert_eq!(rates.agent("ana"), Ok(()));
        }
        assert_eq!(rates.agent("ana"), Err(RetryAfter(1)));
        // Another agent has a bucket of its own.
        assert_eq!(rates.agent("bo"), Ok(()));
    }

    #[test]
    fn streams_are_limited_per_holder_per_channel_and_in_all() {
        let gauge = Gauge::default();
        let streams = Streams::new(
            LimitsConfig {
                streams_per_session: 2,
                streams_per_channel: 3,
                streams_per_agent: 1,
                event_streams: 4,
                ..LimitsConfig::default()
            },
            gauge.clone(),
        );
        let session = |s: &str| StreamHolder::Session {
            channel: "web".into(),
            session: s.into(),
        };
        let a1 = streams.open(&session("a")).unwrap();
        let _a2 = streams.open(&session("a")).unwrap();
        assert_eq!(streams.open(&session("a")).err(), Some(StreamRefused::Holder));
        let _b1 = streams.open(&session("b")).unwrap();
        assert_eq!(streams.open(&session("b")).err(), Some(StreamRefused::Channel));
        let _agent = streams.open(&StreamHolder::Agent("ana".into())).unwrap();
        assert_eq!(
            streams.open(&StreamHolder::Agent("bo".into())).err(),
            Some(StreamRefused::Budget)
        );
        // An ended stream gives its place back.
        drop(a1);
        assert_eq!(gauge.get(), 3);
        assert!(streams.open(&session("b")).is_ok());
    }
}
