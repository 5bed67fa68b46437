//! `[connections.customer_login]`: how `deskbridge check` logs a test
//! customer in, the way the company's own apps do. Without the table, it
//! posts a form to `customer_login_url` and reads the contract's answer.

use serde::Deserialize;

use crate::config::{SecretSource, check_url};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerLogin {
    #[serde(default)]
    pub flow: LoginFlow,
    /// `password` flow: where the credentials are posted; default
    /// `customer_login_url`. Any URL: the company's own login API, or an
    /// identity provider's.
    pub url: Option<String>,
    /// `password` flow: how the credentials are posted.
    #[serde(default)]
    pub format: LoginFormat,
    /// The field the username goes in: a form or JSON field of the
    /// `password` flow, or the input of the provider's login form.
    #[serde(default = "default_username_field")]
    pub username_field: String,
    #[serde(default = "default_password_field")]
    pub password_field: String,
    /// A JSON Pointer (RFC 6901) to the customer's token in the answer:
    /// the login's (`password`) or the token endpoint's
    /// (`authorization_code`). Default `/JWT`, or `/id_token` for the
    /// code flow.
    pub token_pointer: Option<String>,
    /// `authorization_code` flow: the provider, whose OpenID discovery
    /// document gives the endpoints that are not set.
    pub issuer: Option<String>,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    /// For a confidential client (sent with HTTP Basic); a public client
    /// has none and relies on PKCE alone.
    pub client_secret: Option<SecretSource>,
    /// Registered with the provider; never served: `check` stops at the
    /// redirect to it and takes the code from its query.
    pub redirect_uri: Option<String>,
    #[serde(default = "default_scope")]
    pub scope: String,
    /// RFC 8707 resource indicator, for providers that issue JWT access
    /// tokens per resource.
    pub resource: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LoginFlow {
    /// One POST of the test user's credentials.
    #[default]
    Password,
    /// OAuth 2.0 authorization code with PKCE, through the provider's
    /// login form.
    AuthorizationCode,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LoginFormat {
    /// `application/x-www-form-urlencoded`.
    #[default]
    Form,
    /// `application/json`.
    Json,
}

fn default_username_field() -> String {
    "username".into()
}

fn default_password_field() -> String {
    "password".into()
}

fn default_scope() -> String {
    "openid".into()
}

impl CustomerLogin {
    pub fn token_pointer(&self) -> &str {
        match (&self.token_pointer, self.flow) {
            (Some(p), _) => p,
            (None, LoginFlow::Password) => "/JWT",
            (None, LoginFlow::AuthorizationCode) => "/id_token",
        }
    }

    /// Reports what is wrong, at `at` (`connections[i].customer_login`).
    pub fn problems(&self, at: &str, has_login_url: bool, fail: &mut dyn FnMut(String, String)) {
        let key = |k: &str| format!("{at}.{k}");
        if let Some(p) = &self.token_pointer
            && !p.starts_with('/')
        {
            fail(
                key("token_pointer"),
                "a JSON Pointer starts with '/', e.g. \"/access_token\"".into(),
            );
        }
        for (name, value) in [
            ("username_field", &self.username_field),
            ("password_field", &self.password_field),
        ] {
            if value.is_empty() {
                fail(key(name), "must not be empty".into());
            }
        }
        for (name, url) in [
            ("url", &self.url),
            ("issuer", &self.issuer),
            ("authorization_url", &self.authorization_url),
            ("token_url", &self.token_url),
            ("redirect_uri", &self.redirect_uri),
        ] {
            if let Some(u) = url {
                check_url(u, key(name), fail);
            }
        }
        match self.flow {
            LoginFlow::Password => {
                if self.url.is_none() && !has_login_url {
                    fail(key("url"), "required, unless customer_login_url is set".into());
                }
            }
            LoginFlow::AuthorizationCode => {
                if self.client_id.as_deref().is_none_or(str::is_empty) {
                    fail(key("client_id"), "required with flow = \"authorization_code\"".into());
                }
                if self.redirect_uri.is_none() {
                    fail(
                        key("redirect_uri"),
                        "required with flow = \"authorization_code\"".into(),
                    );
                }
                if self.issuer.is_none() && (self.authorization_url.is_none() || self.token_url.is_none()) {
                    fail(
                        key("issuer"),
                        "required, unless authorization_url and token_url are both set".into(),
                    );
                }
            }
        }
    }
}
