//! Agents: their API tokens, who they are, and how often they may ask.

use super::*;

impl Gateway {
    /// Forgets what was remembered of the agent `name` (its credentials
    /// changed, here or on another instance).
    pub(crate) fn forget_agent(&self, name: &str) {
        self.agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (agent, _, _)| agent != name);
    }

    /// Whether the agent may make another request now.
    pub(crate) fn admit_agent(&self, name: &str) -> Result<(), limits::RetryAfter> {
        self.rates.agent(name)
    }

    /// The agent behind an API token: (name, role). Lookups are remembered
    /// briefly, so a busy agent does not cost a database read per request;
    /// a replaced token stops working within that time.
    pub async fn agent(&self, token: &str) -> Result<Option<(String, String)>, GatewayError> {
        let digest = agent_token_digest(token);
        let now = self.clock.now();
        if let Some((name, role, at)) = self.agents.read().unwrap_or_else(|p| p.into_inner()).get(&digest)
            && now.duration_since(*at).is_ok_and(|age| age < AGENT_CACHE_TTL)
        {
            return Ok(Some((name.clone(), role.clone())));
        }
        let found = self.store.agent_by_digest(&digest).await?;
        let mut agents = self.agents.write().unwrap_or_else(|p| p.into_inner());
        match &found {
            Some((name, role)) => {
                if agents.len() >= 10_000 {
                    agents.clear();
                }
                agents.insert(digest, (name.clone(), role.clone(), now));
            }
            None => {
                agents.remove(&digest);
            }
        }
        Ok(found)
    }
}

/// How long an agent lookup is remembered.
const AGENT_CACHE_TTL: Duration = Duration::from_secs(5);

/// An agent's API token: shown once, stored as a SHA-256 digest (it is a
/// 256-bit random value, so a fast digest is as strong as a slow one).
pub fn agent_token_digest(token: &str) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// The role of the admin API (connections, probes, the audit log).
pub const ADMIN_ROLE: &str = "admin";
/// The role of API principals that are programs (virtual agents): they
/// use the agent API and may never sign in to the console.
pub const BOT_ROLE: &str = "bot";

impl Gateway {
    /// Creates an agent (or replaces its token); returns the new token.
    pub async fn add_agent(&self, name: &str, role: &str) -> Result<String, GatewayError> {
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
        // Names go into the audit log, log lines and the console: plain
        // words only (an email address is fine), nothing to forge a line with.
        let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_.@".contains(&b);
        if name.is_empty() || name.len() > 64 || !name.bytes().all(plain) {
            return Err(GatewayError::Invalid(
                "an agent name is 1-64 letters, digits, '-', '_', '.' or '@'".into(),
            ));
        }
        let token = random_id("dbg_")?;
        self.store
            .insert_agent(name, role, &agent_token_digest(&token), self.now())
            .await?;
        // New credentials: whoever signed in with the old ones signs in again.
        self.store.delete_agent_sessions(name).await?;
        self.agent_changed(name).await;
        Ok(token)
    }

    /// Removes an agent: its token and console sessions stop working here
    /// at once, and on the other instances as soon as they hear of it.
    /// False if there was no such agent.
    pub async fn remove_agent(&self, name: &str) -> Result<bool, GatewayError> {
        let removed = self.store.delete_agent(name).await?;
        self.store.delete_agent_sessions(name).await?;
        self.agent_changed(name).await;
        Ok(removed)
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
