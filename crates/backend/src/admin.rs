//! Administrative operations behind the `deskbridge backend …` commands:
//! users with profiles, OAuth clients, API keys, key rotation, tracing an
//! identifier back to its user, and the demo data set.

mod demo_activity;

use std::sync::Arc;

use contract::{Account, Money};
use serde::Serialize;

use crate::crypto::{Purpose, random_token};
use crate::store::NewProfile;
use crate::{BackendError, State, keys};

pub struct Admin {
    state: Arc<State>,
}

/// A created OAuth client; the secret is shown once and stored only as a digest.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct NewClient {
    pub client_id: String,
    pub client_secret: String,
    pub scopes: String,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct NewApiKey {
    pub key: String,
    pub apis: Vec<String>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct DemoUser {
    pub username: String,
    pub password: String,
    pub customer_id: String,
}

/// What `seed-demo` prints: everything a tester needs to call the APIs.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct DemoSeed {
    pub users: Vec<DemoUser>,
    pub clients: Vec<NewClient>,
    pub api_keys: Vec<NewApiKey>,
}

pub const DEMO_CLIENT_ID: &str = "deskbridge-demo";
pub const DEFAULT_SCOPES: &str = "profile:read";

impl Admin {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    fn now(&self) -> i64 {
        self.state.now() as i64
    }

    /// Adds a customer with a profile; returns the opaque customer id.
    pub async fn add_user(&self, username: &str, password: &str, profile: &NewProfile) -> Result<String, BackendError> {
        validate_username(username)?;
        validate_password(password)?;
        validate_profile(profile)?;
        let hash = self.state.passwords.hash(password.to_string()).await?;
        let secrets = &self.state.secrets;
        let (_, customer_id) = self
            .state
            .store
            .insert_user(username, &hash, self.now(), |id| secrets.customer_id(id), profile)
            .await?;
        Ok(customer_id)
    }

    /// Sets (resets) a user's password and ends all the user's sessions;
    /// JWTs already issued live until they expire.
    pub async fn set_password(&self, username: &str, password: &str) -> Result<(), BackendError> {
        validate_password(password)?;
        let hash = self.state.passwords.hash(password.to_string()).await?;
        if self.state.store.set_password(username, &hash).await? {
            Ok(())
        } else {
            Err(BackendError::NotFound(format!("user {username:?}")))
        }
    }

    /// Removes a customer, the profile and every session; the customer's
    /// JWTs still verify until they expire, but name nobody.
    pub async fn remove_user(&self, username: &str) -> Result<(), BackendError> {
        if self.state.store.delete_user(username).await? {
            Ok(())
        } else {
            Err(BackendError::NotFound(format!("user {username:?}")))
        }
    }

    /// Creates a client, or gives an existing one a new secret and scopes.
    pub async fn add_client(&self, client_id: &str, scopes: &str) -> Result<NewClient, BackendError> {
        if client_id.is_empty()
            || client_id.len() > 128
            || client_id.contains(':')
            || client_id.chars().any(char::is_control)
        {
            return Err(BackendError::Invalid(
                "a client id is 1-128 printable characters without ':'".into(),
            ));
        }
        let scopes = scopes
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if scopes.is_empty() {
            return Err(BackendError::Invalid("a client needs at least one scope".into()));
        }
        let secret = random_token("")?;
        let digest = self.state.secrets.digest(Purpose::ClientSecret, secret.as_bytes());
        self.state
            .store
            .upsert_client(client_id, &digest, &scopes, self.now())
            .await?;
        // A new secret: the client authenticates with it, not a key.
        self.state.store.set_client_public_key(client_id, None).await?;
        Ok(NewClient {
            client_id: client_id.to_string(),
            client_secret: secret,
            scopes,
        })
    }

    /// Creates a client that authenticates with `private_key_jwt`: its
    /// assertions are verified with `public_key_pem` (EC P-256 or RSA); it
    /// has no usable secret.
    pub async fn add_key_client(
        &self,
        client_id: &str,
        scopes: &str,
        public_key_pem: &str,
    ) -> Result<String, BackendError> {
        crate::http::client_assertion::public_key(public_key_pem).map_err(BackendError::Invalid)?;
        // A secret nobody is given: the client can only sign.
        let client = self.add_client(client_id, scopes).await?;
        self.state
            .store
            .set_client_public_key(client_id, Some(public_key_pem))
            .await?;
        Ok(client.scopes)
    }

    pub async fn add_api_key(&self, apis: &[String]) -> Result<NewApiKey, BackendError> {
        if apis.is_empty() || apis.iter().any(|a| a.is_empty() || a.contains(',')) {
            return Err(BackendError::Invalid(
                "name at least one API, e.g. --api getprofile".into(),
            ));
        }
        let key = random_token("dbk_")?;
        let digest = self.state.secrets.digest(Purpose::ApiKey, key.as_bytes());
        let label: String = key.chars().take(10).collect();
        self.state
            .store
            .insert_api_key(&digest, &label, &apis.join(","), self.now())
            .await?;
        Ok(NewApiKey {
            key,
            apis: apis.to_vec(),
        })
    }

    /// Revokes every access token the client holds now (after a leaked
    /// secret, say); tokens it fetches afterwards work. A running server in
    /// another process applies it within 30 s, this process at once.
    pub async fn revoke_client_tokens(&self, client_id: &str) -> Result<(), BackendError> {
        let now_ms = self.state.clock.unix_millis() as i64;
        if !self.state.store.revoke_client_tokens(client_id, now_ms).await? {
            return Err(BackendError::NotFound(format!("client {client_id:?}")));
        }
        self.state
            .access_tokens
            .set_client_revocations(self.state.store.client_revocations().await?);
        Ok(())
    }

    /// The username behind a customer identifier: only the company, holding
    /// the database, can answer this.
    pub async fn trace(&self, customer_id: &str) -> Result<Option<String>, BackendError> {
        Ok(self
            .state
            .store
            .user_by_customer_id(customer_id)
            .await?
            .map(|(_, username)| username))
    }

    /// Generates a new signing key with the configured algorithm; it signs
    /// from the next reload, and the previous keys stay published.
    pub async fn rotate_signing_key(&self) -> Result<String, BackendError> {
        let key = keys::new_stored_key(self.state.config.signing_alg)?;
        self.state
            .store
            .add_signing_key(&key, self.now(), keys::KEYS_KEPT)
            .await?;
        Ok(key.kid)
    }

    /// Creates (or refreshes) the demo customers, client and API key, with
    /// fresh random passwords and secrets each time, and returns them.
    pub async fn seed_demo(&self) -> Result<DemoSeed, BackendError> {
        let mut users = Vec::new();
        for (username, profile) in demo_profiles() {
            let password = random_token("")?.chars().take(16).collect::<String>();
            let customer_id = match self.add_user(username, &password, &profile).await {
                Ok(id) => id,
                Err(BackendError::Conflict(_)) => {
                    self.set_password(username, &password).await?;
                    self.state
                        .store
                        .user_credentials(username)
                        .await?
                        .map(|u| u.customer_id)
                        .ok_or_else(|| BackendError::NotFound(username.to_string()))?
                }
                Err(e) => return Err(e),
            };
            self.seed_demo_activity(username, &profile).await?;
            users.push(DemoUser {
                username: username.to_string(),
                password,
                customer_id,
            });
        }
        // The demo client and key may call every API of the backend.
        let every_api: Vec<String> = crate::APIS.iter().map(|a| a.to_string()).collect();
        Ok(DemoSeed {
            users,
            clients: vec![self.add_client(DEMO_CLIENT_ID, &crate::SCOPES.join(" ")).await?],
            api_keys: vec![self.add_api_key(&every_api).await?],
        })
    }

    /// The demo customer's cards and transactions; those already there stay.
    async fn seed_demo_activity(&self, username: &str, profile: &NewProfile) -> Result<(), BackendError> {
        let today = self.now() - self.now().rem_euclid(86_400);
        let transactions: Vec<_> = profile
            .accounts
            .iter()
            .flat_map(|a| demo_activity::transactions(a, today))
            .collect();
        self.state
            .store
            .add_activity(username, &demo_activity::cards(username), &transactions)
            .await
    }
}

/// A fresh 256-bit random secret, base64url, for demo wiring.
pub fn random_secret() -> Result<String, BackendError> {
    random_token("")
}

fn validate_username(username: &str) -> Result<(), BackendError> {
    if username.is_empty() || username.len() > 128 || username.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(BackendError::Invalid(
            "a username is 1-128 characters without spaces".into(),
        ));
    }
    Ok(())
}

/// A profile's values as the API serves them: amounts as plain decimals
/// (what a platform can parse without losing digits), ISO 4217-shaped
/// currencies, a real calendar date, and account ids unique to the profile.
fn validate_profile(profile: &NewProfile) -> Result<(), BackendError> {
    let bad = |m: String| Err(BackendError::Invalid(m));
    if !is_calendar_date(&profile.member_since) {
        return bad(format!(
            "member since {:?}: expected a date as YYYY-MM-DD",
            profile.member_since
        ));
    }
    let mut ids = std::collections::HashSet::new();
    for a in &profile.accounts {
        if a.id.is_empty() || a.id.len() > 64 || a.id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return bad(format!("account id {:?}: 1-64 characters without spaces", a.id));
        }
        if !ids.insert(a.id.as_str()) {
            return bad(format!("account id {:?} is given twice", a.id));
        }
        if a.kind.is_empty() || a.kind.len() > 32 || a.kind.chars().any(char::is_control) {
            return bad(format!("account {}: a type is 1-32 printable characters", a.id));
        }
        if !is_decimal(&a.balance.amount) {
            return bad(format!(
                "account {}: amount {:?} is not a decimal number such as 120.50",
                a.id, a.balance.amount
            ));
        }
        if !(a.balance.currency.len() == 3 && a.balance.currency.bytes().all(|b| b.is_ascii_uppercase())) {
            return bad(format!(
                "account {}: currency {:?} is not a 3-letter code such as USD",
                a.id, a.balance.currency
            ));
        }
    }
    Ok(())
}

/// `-?D+(.D+)?`, at most 32 characters: no exponent, no `inf` or `NaN`.
fn is_decimal(amount: &str) -> bool {
    let digits = amount.strip_prefix('-').unwrap_or(amount);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    amount.len() <= 32
        && !whole.is_empty()
        && !fraction.is_empty()
        && whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit())
}

/// `YYYY-MM-DD` naming a day that exists (so not 2019-02-29).
fn is_calendar_date(date: &str) -> bool {
    let b = date.as_bytes();
    let digits_at = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !(digits_at(0..4) && digits_at(5..7) && digits_at(8..10)) {
        return false;
    }
    let number = |range: std::ops::Range<usize>| b[range].iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days_in_month).contains(&day)
}

fn validate_password(password: &str) -> Result<(), BackendError> {
    if password.chars().count() < 8 || password.len() > 256 {
        return Err(BackendError::Invalid("a password is 8 to 256 characters".into()));
    }
    Ok(())
}

fn account(id: &str, kind: &str, amount: &str, currency: &str) -> Account {
    Account {
        id: id.into(),
        kind: kind.into(),
        status: "active".into(),
        balance: Money {
            amount: amount.into(),
            currency: currency.into(),
        },
    }
}

fn demo_profiles() -> Vec<(&'static str, NewProfile)> {
    vec![
        (
            "alice",
            NewProfile {
                name: "Alice Martin".into(),
                email: "alice.martin@example.com".into(),
                phone: "+1 415 555 0134".into(),
                tier: "gold".into(),
                member_since: "2019-04-12".into(),
                accounts: vec![
                    account("acc-1001", "checking", "2450.75", "USD"),
                    account("acc-1002", "savings", "18300.00", "USD"),
                ],
            },
        ),
        (
            "bruno",
            NewProfile {
                name: "Bruno Keller".into(),
                email: "bruno.keller@example.com".into(),
                phone: "+49 30 5550 1822".into(),
                tier: "silver".into(),
                member_since: "2021-11-03".into(),
                accounts: vec![account("acc-2001", "checking", "912.40", "EUR")],
            },
        ),
        (
            "chen",
            NewProfile {
                name: "Chen Wei".into(),
                email: "chen.wei@example.com".into(),
                phone: "+65 5550 7781".into(),
                tier: "platinum".into(),
                member_since: "2016-02-29".into(),
                accounts: vec![
                    account("acc-3001", "checking", "15020.10", "SGD"),
                    account("acc-3002", "brokerage", "250000.00", "USD"),
                    account("acc-3003", "credit_card", "-1234.56", "SGD"),
                ],
            },
        ),
    ]
}
