//! Login protection, shared by the company backend (customer logins) and the
//! gateway (agent console logins): Argon2id password hashing on a bounded
//! blocking pool behind a bounded queue, throttling of failed logins, and
//! session cookies.

mod cookies;
mod passwords;
mod queue;
mod throttle;

pub use cookies::{cookie, session_set_cookie};
pub use passwords::{PasswordError, PasswordHasher, hash_blocking};
pub use queue::{HashQueue, QueuePlace};
pub use throttle::{Attempt, LoginThrottle, ThrottleConfig};
