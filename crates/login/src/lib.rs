//! Login protection, shared by the company backend (customer logins) and the
//! gateway (agent console logins): Argon2id password hashing on a bounded
//! blocking pool, and throttling of failed logins.

mod passwords;
mod throttle;

pub use passwords::{PasswordError, PasswordHasher, hash_blocking};
pub use throttle::{LoginThrottle, ThrottleConfig};
