//! `deskbridge check`: runs the contract's rules (`shared/CONTRACT.md`)
//! against a live company backend, over HTTP only, and says for each rule
//! whether it passes, with the evidence and a one-line fix.
//!
//! The connection under test comes from the gateway's own configuration
//! (its `[[connections]]`, `company::config`), and the checker calls the
//! company with the gateway's own code where it can (the `company` crate):
//! same token endpoint and client-auth method, same API-key header, same
//! placement of the customer's token.
//!
//! Secrets (passwords, client secrets, API keys, tokens) never reach the
//! evidence: it names statuses, error codes, header and claim names and
//! lifetimes, and every known secret is redacted from it once more at the end.

mod inputs;
pub mod report;
mod rules;

pub use inputs::ActionInput;

use std::fmt;

use company::config::ConnectionConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

/// A test account of the company, logged in at its `customer_login_url`.
#[derive(Clone)]
pub struct TestUser {
    pub name: String,
    pub password: SecretString,
}

impl fmt::Debug for TestUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestUser")
            .field("name", &self.name)
            .field("password", &"[redacted]")
            .finish()
    }
}

impl TestUser {
    /// `NAME:PASSWORD`, split at the first `:`. The error never repeats the
    /// text, which holds a password.
    pub fn parse(text: &str) -> Result<Self, CheckError> {
        let text = text.trim_end_matches(['\r', '\n']);
        match text.split_once(':') {
            Some((name, password)) if !name.trim().is_empty() && !password.is_empty() => Ok(Self {
                name: name.trim().to_string(),
                password: SecretString::from(password.to_string()),
            }),
            _ => Err(CheckError::BadTestUser),
        }
    }
}

/// The verdict on one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Works, but is risky or off the contract's recommendation.
    Warn,
    Fail,
    /// Does not apply to this connection (no API key, a cookie session, one
    /// test user), or cannot be judged because an earlier rule failed.
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Skip => "skip",
        }
    }
}

/// One rule's result, as printed (`--format json` prints these as they are).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Stable rule id, e.g. `identifier.opaque`, `action.getprofile.wrong_bearer`.
    pub id: String,
    /// The id without its last segment: `login`, `system`, `action.getprofile`.
    pub group: String,
    pub status: Status,
    /// What was sent and what came back; never a secret.
    pub evidence: String,
    /// How to fix it; empty when the rule passes or is skipped.
    pub fix: String,
}

/// A group of rules, as `--only` names it. Only `login`, `identifier` and
/// `action` log test users in, so only they need test users and a
/// `customer_login_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    Login,
    Identifier,
    System,
    Action,
    Transport,
}

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Login,
        Group::Identifier,
        Group::System,
        Group::Action,
        Group::Transport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Identifier => "identifier",
            Self::System => "system",
            Self::Action => "action",
            Self::Transport => "transport",
        }
    }

    /// Whether its rules log the test users in.
    pub fn needs_logins(self) -> bool {
        matches!(self, Self::Login | Self::Identifier | Self::Action)
    }
}

/// Why the check could not run at all (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no connection named {0:?} in the configuration")]
    NoSuchConnection(String),
    #[error("the configuration has {0} connections; name one with --connection")]
    WhichConnection(usize),
    #[error("the configuration has problems: {0}")]
    Config(String),
    #[error("no test users: give --test-user NAME:PASSWORD, --test-users-file FILE or DESKBRIDGE_TEST_USERS")]
    NoTestUsers,
    #[error("a test user is NAME:PASSWORD, with a non-empty name and password")]
    BadTestUser,
    #[error("connection {0:?} has no customer_login_url: the check logs its test users in there")]
    NoLoginUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("--action-input {0}")]
    ActionInput(String),
}

/// How the actions are called: with these inputs, and writes or not.
#[derive(Debug, Clone, Default)]
pub struct ActionOptions {
    /// `--action-input NAME=JSON`, at most one per action.
    pub inputs: Vec<ActionInput>,
    /// `--allow-writes`: call `kind = "write"` actions too, each call with
    /// a fresh `Idempotency-Key`. Off, their rules are skipped.
    pub allow_writes: bool,
    /// `--provoke-limits`: when the company answered no 429 by itself, make
    /// one with failed logins of a made-up user, to judge its `Retry-After`.
    pub provoke_limits: bool,
}

/// The plan and the state of one check of one connection.
pub struct Checker {
    context: rules::Context,
    plan: Vec<rules::Rule>,
}

impl Checker {
    /// Picks the connection (by name, or the only one), checks its part of
    /// the configuration and resolves its secrets. Every rule runs.
    pub fn new(
        connections: &[ConnectionConfig],
        connection: Option<&str>,
        users: Vec<TestUser>,
    ) -> Result<Self, CheckError> {
        Self::with_groups(connections, connection, users, &Group::ALL)
    }

    /// As [`Checker::new`], running only the rules of `groups` (in their
    /// usual order). Test users and `customer_login_url` are required only
    /// when a group that logs in (`login`, `identifier`, `action`) is among them.
    pub fn with_groups(
        connections: &[ConnectionConfig],
        connection: Option<&str>,
        users: Vec<TestUser>,
        groups: &[Group],
    ) -> Result<Self, CheckError> {
        Self::with_options(connections, connection, users, groups, ActionOptions::default())
    }

    /// As [`Checker::with_groups`], calling the actions as `actions` says:
    /// an input that names no action or that its action refuses is an error.
    pub fn with_options(
        connections: &[ConnectionConfig],
        connection: Option<&str>,
        users: Vec<TestUser>,
        groups: &[Group],
        actions: ActionOptions,
    ) -> Result<Self, CheckError> {
        let (index, conn) = match connection {
            Some(name) => connections
                .iter()
                .enumerate()
                .find(|(_, c)| c.name == name)
                .ok_or_else(|| CheckError::NoSuchConnection(name.to_string()))?,
            None if connections.len() == 1 => (0, &connections[0]),
            None => return Err(CheckError::WhichConnection(connections.len())),
        };
        let prefix = format!("connections[{index}].");
        let problems: Vec<String> = company::config::connection_problems(connections)
            .into_iter()
            .filter(|p| p.fatal && p.path.starts_with(&prefix))
            .map(|p| p.to_string())
            .collect();
        if !problems.is_empty() {
            return Err(CheckError::Config(problems.join("; ")));
        }
        let needs_logins = groups.iter().any(|g| g.needs_logins());
        let login_url = match &conn.customer_login_url {
            Some(url) => Some(url.clone()),
            None if needs_logins => return Err(CheckError::NoLoginUrl(conn.name.clone())),
            None => None,
        };
        let mut unique: Vec<TestUser> = Vec::new();
        for user in users {
            if !unique.iter().any(|u| u.name == user.name) {
                unique.push(user);
            }
        }
        if unique.is_empty() && needs_logins {
            return Err(CheckError::NoTestUsers);
        }
        let plans = inputs::plans(conn, &actions.inputs, actions.allow_writes)?;
        let context = rules::Context::new(conn.clone(), login_url, unique, plans, actions.provoke_limits)?;
        let plan = rules::plan(conn)
            .into_iter()
            .filter(|r| groups.contains(&r.group()))
            .collect();
        Ok(Self { context, plan })
    }

    /// Every rule id this check will report, in order.
    pub fn rule_ids(&self) -> Vec<String> {
        self.plan.iter().map(|r| self.context.id(*r)).collect()
    }

    /// Runs every rule in order; `progress(n, total, id)` is called before each.
    pub async fn run(mut self, progress: &mut dyn FnMut(usize, usize, &str)) -> Vec<Outcome> {
        let total = self.plan.len();
        let mut outcomes = Vec::with_capacity(total);
        for (n, rule) in self.plan.iter().enumerate() {
            let id = self.context.id(*rule);
            progress(n + 1, total, &id);
            let verdict = self.context.judge(*rule).await;
            let group = id.rsplit_once('.').map_or(id.as_str(), |(g, _)| g).to_string();
            let fix = match verdict.status {
                Status::Warn | Status::Fail => self.context.fix(*rule),
                Status::Pass | Status::Skip => String::new(),
            };
            outcomes.push(Outcome {
                id,
                group,
                status: verdict.status,
                evidence: verdict.evidence,
                fix,
            });
        }
        // Belt and braces: whatever a rule wrote, no secret we know of leaves.
        let secrets = self.context.secrets();
        for outcome in &mut outcomes {
            for secret in &secrets {
                if secret.expose_secret().len() >= 4 && outcome.evidence.contains(secret.expose_secret()) {
                    outcome.evidence = outcome.evidence.replace(secret.expose_secret(), "[redacted]");
                }
            }
        }
        outcomes
    }
}

/// 0 when nothing failed (warnings and skips allowed), 1 otherwise.
pub fn exit_status(outcomes: &[Outcome]) -> u8 {
    u8::from(outcomes.iter().any(|o| o.status == Status::Fail))
}
