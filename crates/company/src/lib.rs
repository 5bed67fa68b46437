//! The code that calls a company, shared by the gateway and `check`: the
//! connection as configured, the system token (the token request and its
//! cache), credential placement, `WWW-Authenticate` parsing, customer JWT
//! verification and the opacity rule, and the guarded action call.

pub mod action;
pub mod assertion;
pub mod config;
pub mod connector;
pub mod customer_login;
pub mod discovery;
pub mod egress;
pub mod identity;
pub mod metrics;
pub mod share;
pub mod system_token;
pub mod upstream;

pub use crate::metrics::Metrics;

/// A refused request: how long until it would pass, in whole seconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

impl RetryAfter {
    /// The wait rounded up to whole seconds, and at least one.
    pub fn from_wait(wait: std::time::Duration) -> Self {
        Self((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
    }
}
