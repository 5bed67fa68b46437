//! What the instances of a gateway share through Redis, and nothing else:
//!
//! - **signals**: short messages to every other instance (events for their
//!   event streams, "forget what you remember of X"), over one pub/sub
//!   channel, so they arrive in the order Redis received them;
//! - **leases**: "one instance does this now" (one token fetch for all),
//!   held for a bounded time and released only by their holder;
//! - **shared values** with a lifetime and a fingerprint, removed only if
//!   they are still the value the caller saw (a token refused by a company
//!   is purged once, never its replacement);
//! - **counters** of failures within a window (sign-in throttling).
//!
//! The types here know nothing of the gateway: values are bytes (sealed by
//! the caller), signals are text. Redis being down is an answer, not a
//! panic: every call returns an error quickly, [`Cluster::up`] says so, and
//! everything resumes when Redis returns, subscription included.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Script, Value};
use tokio::sync::{broadcast, mpsc, watch};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL is not a Redis URL; the words never repeat it (it may hold
    /// a password).
    #[error("cluster.redis_url: {0}")]
    Url(String),
    #[error("redis: {0}")]
    Redis(String),
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        // Only the kind and the server's words: the error types of the
        // client may carry connection details.
        Self::Redis(format!("{:?}: {}", e.kind(), e.detail().unwrap_or("connection failed")))
    }
}

/// A signal from another instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub from: String,
    pub body: String,
}

/// How often Redis is asked whether it is there, and how long a command
/// may take before Redis counts as gone.
const PROBE_EVERY: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);

/// What [`Cluster::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// The shared rate is spent; the next call fits after this wait.
    OverRate(Duration),
    /// The company asked for a pause; this much of it is left.
    Paused {
        wait: Duration,
        status: u16,
    },
}

pub struct Cluster {
    redis: ConnectionManager,
    prefix: String,
    instance: String,
    up: watch::Sender<bool>,
    signals: broadcast::Sender<Signal>,
}

impl Cluster {
    /// Whether `url` is a Redis URL this client can use; says what is
    /// wrong without repeating it.
    pub fn check_url(url: &str) -> Result<(), ClusterError> {
        url.into_connection_info()
            .map(|_| ())
            .map_err(|e| ClusterError::Url(format!("not a Redis URL ({:?})", e.kind())))
    }

    /// Where `url` points (`host:port/db`), without its credentials.
    pub fn server_of(url: &str) -> Result<String, ClusterError> {
        let info = url
            .into_connection_info()
            .map_err(|e| ClusterError::Url(format!("not a Redis URL ({:?})", e.kind())))?;
        Ok(format!("{}/{}", info.addr(), info.redis_settings().db()))
    }

    /// Sets up the connection to `url` (it is made, and remade, in the
    /// background: an instance may start while Redis is away). Keys start
    /// with `prefix`; signals name `instance` as their sender.
    pub fn connect(url: &str, prefix: &str, instance: &str) -> Result<Arc<Self>, ClusterError> {
        let info = url
            .into_connection_info()
            .map_err(|e| ClusterError::Url(format!("not a Redis URL ({:?})", e.kind())))?;
        // RESP3: pub/sub messages arrive on the same multiplexed connection
        // as commands, and the manager subscribes again after a reconnect.
        let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let (pushes, inbox) = mpsc::unbounded_channel::<PushInfo>();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(pushes)
            .set_automatic_resubscription()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(PROBE_EVERY);
        let redis = ConnectionManager::new_lazy_with_config(client, config)?;
        let cluster = Arc::new(Self {
            redis,
            prefix: prefix.to_string(),
            instance: instance.to_string(),
            up: watch::channel(false).0,
            signals: broadcast::channel(4096).0,
        });
        tokio::spawn(receive(Arc::downgrade(&cluster), inbox));
        tokio::spawn(probe(Arc::downgrade(&cluster)));
        Ok(cluster)
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether Redis answered the last probe.
    pub fn up(&self) -> bool {
        *self.up.borrow()
    }

    /// Changes of [`Cluster::up`]. After a time down, signals may have been
    /// missed: whoever remembers things on their strength forgets them.
    pub fn watch_up(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    fn channel(&self) -> String {
        self.key("signals")
    }

    /// Signals from the other instances (never this one's own).
    pub fn signals(&self) -> broadcast::Receiver<Signal> {
        self.signals.subscribe()
    }

    /// Sends `body` to every other instance listening now.
    pub async fn publish(&self, body: &str) -> Result<(), ClusterError> {
        let message = format!("{}\n{}", self.instance, body);
        let _: i64 = self.redis.clone().publish(self.channel(), message).await?;
        Ok(())
    }

    /// Takes the lease `name` for `ttl` if nobody holds it; its id (never
    /// 0), to release it with.
    pub async fn try_lease(&self, name: &str, ttl: Duration) -> Result<Option<u64>, ClusterError> {
        let id = fastrand::u64(1..);
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.key(&format!("lease:{name}")))
            .arg(id)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(taken.map(|_| id))
    }

    /// Gives the lease `name` back, if it is still the one taken as `id`.
    pub async fn release(&self, name: &str, id: u64) -> Result<(), ClusterError> {
        let script =
            Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0");
        let _: i64 = script
            .key(self.key(&format!("lease:{name}")))
            .arg(id)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// Stores `value` under `name` with its `fingerprint`, for `ttl`.
    pub async fn put(&self, name: &str, fingerprint: &str, value: &[u8], ttl: Duration) -> Result<(), ClusterError> {
        let key = self.key(name);
        let _: () = redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .hset_multiple(&key, &[("fp", fingerprint.as_bytes()), ("value", value)])
            .ignore()
            .pexpire(&key, millis(ttl) as i64)
            .ignore()
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// The value under `name` and its fingerprint, if any.
    pub async fn get(&self, name: &str) -> Result<Option<(String, Vec<u8>)>, ClusterError> {
        let (fingerprint, value): (Option<String>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(self.key(name))
            .arg("fp")
            .arg("value")
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(fingerprint.zip(value))
    }

    /// Removes the value under `name` if its fingerprint is still
    /// `fingerprint`; true if it did.
    pub async fn remove_if(&self, name: &str, fingerprint: &str) -> Result<bool, ClusterError> {
        let script = Script::new(
            "if redis.call('HGET', KEYS[1], 'fp') == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        let removed: i64 = script
            .key(self.key(name))
            .arg(fingerprint)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(removed == 1)
    }

    /// Counts one failure against `name`; the count lives `window` from
    /// its first failure. Returns the count.
    pub async fn count_failure(&self, name: &str, window: Duration) -> Result<u64, ClusterError> {
        let key = self.key(&format!("failures:{name}"));
        let (count,): (u64,) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(millis(window))
            .arg("NX")
            .ignore()
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(count)
    }

    /// The failures counted against each of `names`, with the time left in
    /// their window.
    pub async fn failures(&self, names: &[&str]) -> Result<Vec<(u64, Duration)>, ClusterError> {
        let mut pipe = redis::pipe();
        for name in names {
            let key = self.key(&format!("failures:{name}"));
            pipe.get(&key).pttl(&key);
        }
        let values: Vec<Value> = pipe.query_async(&mut self.redis.clone()).await?;
        Ok(values
            .chunks(2)
            .map(|pair| {
                let count = redis::from_redis_value_ref::<Option<u64>>(&pair[0])
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                let left = redis::from_redis_value_ref::<i64>(&pair[1]).unwrap_or(0);
                (count, Duration::from_millis(left.max(0) as u64))
            })
            .collect())
    }

    /// Admits one call under the rate `name` shares among every instance
    /// (GCRA: `per_second` sustained, `burst` at once), unless a pause
    /// (`pause`) holds. Redis's own clock decides, so the instances' clocks
    /// need not agree.
    pub async fn admit(&self, name: &str, per_second: u32, burst: u32) -> Result<Admission, ClusterError> {
        // KEYS: the bucket's theoretical arrival time (µs), the pause.
        // Returns {0} admitted; {1, wait µs} over the rate; {2, wait ms, status} paused.
        let script = Script::new(
            r"
            local paused = redis.call('GET', KEYS[2])
            if paused then return {2, redis.call('PTTL', KEYS[2]), tonumber(paused)} end
            local t = redis.call('TIME')
            local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
            local interval = math.floor(1000000 / tonumber(ARGV[1]))
            local tolerance = interval * tonumber(ARGV[2])
            local tat = tonumber(redis.call('GET', KEYS[1]) or now)
            if tat < now then tat = now end
            local next_tat = tat + interval
            if next_tat - now > tolerance then return {1, next_tat - now - tolerance} end
            redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil((next_tat - now) / 1000) + 1)
            return {0}
            ",
        );
        let answer: Vec<i64> = script
            .key(self.key(&format!("rate:{name}")))
            .key(self.key(&format!("pause:{name}")))
            .arg(per_second.max(1))
            .arg(burst.max(1))
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(match answer.as_slice() {
            [1, wait_us, ..] => Admission::OverRate(Duration::from_micros((*wait_us).max(1) as u64)),
            [2, wait_ms, status, ..] => Admission::Paused {
                wait: Duration::from_millis((*wait_ms).max(1) as u64),
                status: u16::try_from(*status).unwrap_or(503),
            },
            _ => Admission::Admitted,
        })
    }

    /// Pauses every call of `name` for `wait`: the company answered
    /// `status` (429 or 503) with that `Retry-After`.
    pub async fn pause(&self, name: &str, status: u16, wait: Duration) -> Result<(), ClusterError> {
        let _: () = self
            .redis
            .clone()
            .pset_ex(self.key(&format!("pause:{name}")), status, millis(wait))
            .await?;
        Ok(())
    }

    /// Forgets the failures counted against `name`.
    pub async fn clear_failures(&self, name: &str) -> Result<(), ClusterError> {
        let _: i64 = self.redis.clone().del(self.key(&format!("failures:{name}"))).await?;
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

/// Hands the messages on the signal channel to [`Cluster::signals`].
async fn receive(cluster: std::sync::Weak<Cluster>, mut inbox: mpsc::UnboundedReceiver<PushInfo>) {
    while let Some(push) = inbox.recv().await {
        let Some(cluster) = cluster.upgrade() else { return };
        match push.kind {
            PushKind::Message => {
                let Some(Value::BulkString(message)) = push.data.get(1) else {
                    continue;
                };
                let Ok(message) = std::str::from_utf8(message) else {
                    continue;
                };
                let Some((from, body)) = message.split_once('\n') else {
                    continue;
                };
                if from != cluster.instance {
                    let _ = cluster.signals.send(Signal {
                        from: from.to_string(),
                        body: body.to_string(),
                    });
                }
            }
            PushKind::Disconnection => {
                cluster.up.send_if_modified(|up| std::mem::replace(up, false));
            }
            _ => {}
        }
    }
}

/// Asks Redis whether it is there, subscribes (again) when it comes back,
/// and keeps [`Cluster::up`] true to what it saw.
async fn probe(cluster: std::sync::Weak<Cluster>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(cluster) = cluster.upgrade() else { return };
        let mut redis = cluster.redis.clone();
        let answered = tokio::time::timeout(RESPONSE_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut redis))
            .await
            .is_ok_and(|r| r.is_ok());
        let was_up = cluster.up();
        let up = answered && (was_up || redis.subscribe(cluster.channel()).await.is_ok());
        if up != was_up {
            if up {
                tracing::info!("redis is reachable; instances share tokens, events and throttling");
            } else {
                tracing::warn!("redis is unreachable; this instance works on its own until it returns");
            }
            cluster.up.send_replace(up);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn redis_url() -> String {
        std::env::var("DESKBRIDGE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
    }

    /// Keys of their own for each test, so tests run side by side.
    fn prefix() -> String {
        format!("deskbridge-test:{:016x}:", fastrand::u64(..))
    }

    async fn until_up(cluster: &Cluster) {
        let mut up = cluster.watch_up();
        tokio::time::timeout(Duration::from_secs(5), up.wait_for(|up| *up))
            .await
            .expect("redis answers within 5 s")
            .unwrap();
    }

    async fn next_signal(rx: &mut broadcast::Receiver<Signal>) -> Signal {
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("a signal within 2 s")
            .unwrap()
    }

    #[tokio::test]
    async fn signals_reach_the_other_instances_in_order_and_not_their_sender() {
        let prefix = prefix();
        let a = Cluster::connect(&redis_url(), &prefix, "a").unwrap();
        let b = Cluster::connect(&redis_url(), &prefix, "b").unwrap();
        until_up(&a).await;
        until_up(&b).await;
        let (mut at_a, mut at_b) = (a.signals(), b.signals());
        for n in 0..50 {
            a.publish(&format!("event {n}\nwith a second line")).await.unwrap();
        }
        b.publish("from b").await.unwrap();
        for n in 0..50 {
            let signal = next_signal(&mut at_b).await;
            assert_eq!(signal.from, "a");
            assert_eq!(signal.body, format!("event {n}\nwith a second line"));
        }
        assert_eq!(next_signal(&mut at_a).await.body, "from b", "a never hears itself");
    }

    #[tokio::test]
    async fn instances_share_one_rate_and_one_pause() {
        let prefix = prefix();
        let a = Cluster::connect(&redis_url(), &prefix, "a").unwrap();
        let b = Cluster::connect(&redis_url(), &prefix, "b").unwrap();
        until_up(&a).await;
        until_up(&b).await;
        // 1 a second with a burst of 3, taken from two instances in turn:
        // three calls in all pass, the fourth waits about a second.
        let mut admitted = 0;
        let mut refused = Vec::new();
        for i in 0..6 {
            let who = if i % 2 == 0 { &a } else { &b };
            match who.admit("bank", 1, 3).await.unwrap() {
                Admission::Admitted => admitted += 1,
                Admission::OverRate(wait) => refused.push(wait),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(admitted, 3);
        assert_eq!(refused.len(), 3);
        assert!(
            refused
                .iter()
                .all(|w| *w > Duration::from_millis(500) && *w <= Duration::from_secs(1)),
            "{refused:?}"
        );
        // Another connection has a bucket of its own.
        assert_eq!(a.admit("telco", 1, 1).await.unwrap(), Admission::Admitted);
        // A pause told by one is kept by the other, then lapses.
        a.pause("telco", 429, Duration::from_millis(300)).await.unwrap();
        match b.admit("telco", 100, 100).await.unwrap() {
            Admission::Paused { wait, status } => {
                assert_eq!(status, 429);
                assert!(wait <= Duration::from_millis(300), "{wait:?}");
            }
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(b.admit("telco", 100, 100).await.unwrap(), Admission::Admitted);
    }

    #[tokio::test]
    async fn a_lease_has_one_holder_until_released_or_expired() {
        let prefix = prefix();
        let a = Cluster::connect(&redis_url(), &prefix, "a").unwrap();
        let b = Cluster::connect(&redis_url(), &prefix, "b").unwrap();
        until_up(&a).await;
        let held = a
            .try_lease("token:bank", Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.try_lease("token:bank", Duration::from_secs(5)).await.unwrap(), None);
        b.release("token:bank", held + 1).await.unwrap();
        assert_eq!(
            b.try_lease("token:bank", Duration::from_secs(5)).await.unwrap(),
            None,
            "only its holder releases it"
        );
        a.release("token:bank", held).await.unwrap();
        assert!(
            b.try_lease("token:bank", Duration::from_millis(100))
                .await
                .unwrap()
                .is_some()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(
            a.try_lease("token:bank", Duration::from_secs(5))
                .await
                .unwrap()
                .is_some(),
            "an expired lease is free"
        );
    }

    #[tokio::test]
    async fn a_shared_value_is_removed_only_while_it_is_the_one_seen() {
        let a = Cluster::connect(&redis_url(), &prefix(), "a").unwrap();
        until_up(&a).await;
        assert_eq!(a.get("token:bank").await.unwrap(), None);
        a.put("token:bank", "fp1", b"sealed one", Duration::from_secs(5))
            .await
            .unwrap();
        a.put("token:bank", "fp2", b"sealed two", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            !a.remove_if("token:bank", "fp1").await.unwrap(),
            "the old one is gone already"
        );
        assert_eq!(
            a.get("token:bank").await.unwrap(),
            Some(("fp2".into(), b"sealed two".to_vec()))
        );
        assert!(a.remove_if("token:bank", "fp2").await.unwrap());
        assert_eq!(a.get("token:bank").await.unwrap(), None);
        a.put("token:bank", "fp3", b"short", Duration::from_millis(100))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            a.get("token:bank").await.unwrap(),
            None,
            "it lives no longer than its ttl"
        );
    }

    #[tokio::test]
    async fn failures_are_counted_across_instances_within_their_window() {
        let prefix = prefix();
        let a = Cluster::connect(&redis_url(), &prefix, "a").unwrap();
        let b = Cluster::connect(&redis_url(), &prefix, "b").unwrap();
        until_up(&a).await;
        let window = Duration::from_secs(60);
        assert_eq!(a.count_failure("user:dana", window).await.unwrap(), 1);
        assert_eq!(b.count_failure("user:dana", window).await.unwrap(), 2);
        let seen = b.failures(&["user:dana", "address:10.0.0.1"]).await.unwrap();
        assert_eq!(seen[0].0, 2);
        assert!(
            seen[0].1 > Duration::from_secs(58) && seen[0].1 <= window,
            "{:?}",
            seen[0].1
        );
        assert_eq!(seen[1], (0, Duration::ZERO));
        a.clear_failures("user:dana").await.unwrap();
        assert_eq!(b.failures(&["user:dana"]).await.unwrap()[0].0, 0);
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        let Err(e) = Cluster::connect("postgres://user:s3cret@host/db", "p:", "a") else {
            panic!("a postgres URL is not a Redis URL")
        };
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    /// A TCP relay to Redis that can be cut and restored, as a network
    /// partition would.
    struct Relay {
        port: u16,
        open: Arc<AtomicBool>,
        cut: Arc<tokio::sync::Notify>,
    }

    impl Relay {
        async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let open = Arc::new(AtomicBool::new(true));
            let cut = Arc::new(tokio::sync::Notify::new());
            let (open2, cut2) = (open.clone(), cut.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !open2.load(Ordering::SeqCst) {
                        continue;
                    }
                    let cut = cut2.clone();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect("127.0.0.1:6379").await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.notified() => {}
                        }
                    });
                }
            });
            Self { port, open, cut }
        }

        fn cut(&self) {
            self.open.store(false, Ordering::SeqCst);
            self.cut.notify_waiters();
        }

        fn restore(&self) {
            self.open.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn redis_going_away_is_seen_and_everything_resumes_when_it_returns() {
        let relay = Relay::start().await;
        let prefix = prefix();
        let a = Cluster::connect(&format!("redis://127.0.0.1:{}/0", relay.port), &prefix, "a").unwrap();
        let b = Cluster::connect(&redis_url(), &prefix, "b").unwrap();
        until_up(&a).await;
        until_up(&b).await;
        let mut at_a = a.signals();

        relay.cut();
        let mut up = a.watch_up();
        tokio::time::timeout(Duration::from_secs(5), up.wait_for(|up| !*up))
            .await
            .expect("the outage is seen within 5 s")
            .unwrap();
        let started = tokio::time::Instant::now();
        assert!(a.publish("lost").await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a call fails quickly: {:?}",
            started.elapsed()
        );

        relay.restore();
        until_up(&a).await;
        // Subscribed again: what b says now reaches a.
        b.publish("after the outage").await.unwrap();
        assert_eq!(next_signal(&mut at_a).await.body, "after the outage");
        a.publish("from a again").await.unwrap();
    }
}
