//! Agents: their API tokens (which expire, and rotate with an overlap),
//! who they are, and how often they may ask.

use super::*;
use crate::store::AgentTokenRow;

/// What an agent token is worth now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentToken {
    /// A live token of this agent: (name, role).
    Valid(String, String),
    /// A token that was an agent's and has expired (or whose rotation
    /// overlap has ended): the desk is told so, to fetch a new one.
    Expired,
    /// No agent's token.
    Unknown,
}

impl Gateway {
    /// Forgets what was remembered of the agent `name` (its credentials
    /// changed, here or on another instance).
    pub(crate) fn forget_agent(&self, name: &str) {
        self.agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (holder, _)| holder.name != name);
    }

    /// Whether the agent may make another request now.
    pub(crate) fn admit_agent(&self, name: &str) -> Result<(), limits::RetryAfter> {
        self.rates.agent(name)
    }

    /// The agent behind an API token. Lookups are remembered briefly, so a
    /// busy agent does not cost a database read per request; a replaced
    /// token stops working within that time. Expiry is decided on every
    /// request, by the gateway's clock, remembered or not.
    pub async fn agent(&self, token: &str) -> Result<AgentToken, GatewayError> {
        let digest = agent_token_digest(token);
        let now = self.clock.now();
        let remembered = self
            .agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .filter(|(_, at)| now.duration_since(*at).is_ok_and(|age| age < AGENT_CACHE_TTL))
            .map(|(holder, _)| holder.clone());
        let holder = match remembered {
            Some(holder) => Some(holder),
            None => {
                let found = self.store.agent_by_digest(&digest).await?;
                let mut agents = self.agents.write().unwrap_or_else(|p| p.into_inner());
                match &found {
                    Some(holder) => {
                        if agents.len() >= 10_000 {
                            agents.clear();
                        }
                        agents.insert(digest, (holder.clone(), now));
                    }
                    None => {
                        agents.remove(&digest);
                    }
                }
                found
            }
        };
        Ok(match holder {
            Some(holder) if holder.expires_at > self.now() => AgentToken::Valid(holder.name, holder.role),
            Some(_) => AgentToken::Expired,
            None => AgentToken::Unknown,
        })
    }

    /// Every agent's tokens with their expiry, for administrators: never a
    /// token's value.
    pub async fn agent_tokens(&self) -> Result<Vec<AgentTokenRow>, GatewayError> {
        self.store.agent_tokens(self.now()).await
    }
}

/// What `remove_agent` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Whether there was a gateway agent (with a token) of that name.
    pub agent: bool,
    /// Console sessions ended, local or at the identity provider.
    pub sessions: u64,
}

/// How long an agent lookup is remembered.
const AGENT_CACHE_TTL: Duration = Duration::from_secs(5);

/// How long a gateway-issued agent token lives unless told otherwise.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// The longest lifetime or overlap a token may be given (5 years): long
/// enough for any policy, short enough that no sum overflows.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

/// A lifetime or overlap written as a whole number and a unit: `30d`,
/// `12h`, `45m`, `90s` (or `0` for none).
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let problem = || format!("{text:?} is not a duration: write a whole number and a unit, as 30d, 12h, 45m or 90s");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .len()
        .checked_sub(1)
        .filter(|&i| text.is_char_boundary(i))
        .ok_or_else(problem)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| problem())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        _ => return Err(problem()),
    };
    let lifetime = number
        .checked_mul(unit)
        .map(Duration::from_secs)
        .filter(|d| *d <= MAX_TOKEN_TTL)
        .ok_or_else(|| {
            format!(
                "{text:?} is longer than the longest allowed ({} days)",
                MAX_TOKEN_TTL.as_secs() / 86_400
            )
        })?;
    Ok(lifetime)
}

/// An agent's API token: shown once, stored as a SHA-256 digest (it is a
/// 256-bit random value, so a fast digest is as strong as a slow one).
pub fn agent_token_digest(token: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// Names go into the audit log, log lines and the console: plain words
/// only (an email address is fine), nothing to forge a line with.
pub fn plain_agent_name(name: &str) -> bool {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_.@".contains(&b);
    !name.is_empty() && name.len() <= 64 && name.bytes().all(plain)
}

/// The role of the admin API (connections, probes, the audit log).
pub const ADMIN_ROLE: &str = "admin";
/// The role of API principals that are programs (virtual agents): they
/// use the agent API and may never sign in to the console.
pub const BOT_ROLE: &str = "bot";

impl Gateway {
    /// Creates an agent (or replaces its token) with a token of the
    /// default lifetime; returns the new token.
    pub async fn add_agent(&self, name: &str, role: &str) -> Result<String, GatewayError> {
        self.add_agent_for(name, role, DEFAULT_TOKEN_TTL).await
    }

    /// Creates an agent (or replaces its token, ending the old one at once)
    /// with a token that lives `ttl`; returns the new token.
    pub async fn add_agent_for(&self, name: &str, role: &str, ttl: Duration) -> Result<String, GatewayError> {
        let expires_at = self.token_expiry(ttl)?;
        if !self.config().agents.has(role) {
            let mut roles = self.config().agents.roles.clone();
            roles.extend([ADMIN_ROLE.to_string(), BOT_ROLE.to_string()]);
            roles.sort();
            roles.dedup();
            return Err(GatewayError::Invalid(format!(
                "the role is one of: {}",
                roles.join(", ")
            )));
        }
        if !plain_agent_name(name) {
            return Err(GatewayError::Invalid(
                "an agent name is 1-64 letters, digits, '-', '_', '.' or '@'".into(),
            ));
        }
        let token = random_id("dbg_")?;
        self.store
            .insert_agent(name, role, &agent_token_digest(&token), self.now(), expires_at)
            .await?;
        // New credentials: whoever signed in with the old ones signs in again.
        self.store.delete_agent_sessions(name).await?;
        self.agent_changed(name).await;
        Ok(token)
    }

    /// Gives an agent a new token that lives `ttl`; its current token stays
    /// valid for `overlap` (never past its own expiry), so desks can move
    /// to the new one without a gap. The token before that stops at once.
    /// Console sessions go on: the agent's identity did not change.
    pub async fn rotate_agent_token(
        &self,
        name: &str,
        ttl: Duration,
        overlap: Duration,
    ) -> Result<String, GatewayError> {
        let expires_at = self.token_expiry(ttl)?;
        let previous_until = self.token_expiry(overlap)?;
        let token = random_id("dbg_")?;
        if !self
            .store
            .rotate_agent_token(name, &agent_token_digest(&token), expires_at, previous_until)
            .await?
        {
            return Err(GatewayError::Invalid(format!("no agent named {name:?}")));
        }
        self.agent_changed(name).await;
        Ok(token)
    }

    /// When a token given now for `lifetime` expires (Unix seconds).
    fn token_expiry(&self, lifetime: Duration) -> Result<i64, GatewayError> {
        if lifetime > MAX_TOKEN_TTL {
            return Err(GatewayError::Invalid(format!(
                "a token lives at most {} days",
                MAX_TOKEN_TTL.as_secs() / 86_400
            )));
        }
        Ok(self.now() + lifetime.as_secs() as i64)
    }

    /// Removes an agent: its token and console sessions (also those signed
    /// in at the identity provider under this name) stop working here at
    /// once, and on the other instances as soon as they hear of it.
    pub async fn remove_agent(&self, name: &str) -> Result<Removed, GatewayError> {
        let agent = self.store.delete_agent(name).await?;
        let sessions = self.store.delete_agent_sessions(name).await?;
        self.agent_changed(name).await;
        Ok(Removed { agent, sessions })
    }

    async fn agent_changed(&self, name: &str) {
        self.forget_agent(name);
        let signal = Signal::AgentChanged { name: name.to_string() };
        if let Err(e) = self.coordination.announce(signal).await {
            // The others forget it within their agent cache's lifetime.
            tracing::warn!(error = %e, agent = name, "the other instances could not be told of a changed agent");
        }
    }
}
