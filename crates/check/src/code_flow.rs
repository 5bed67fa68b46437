//! A test customer's login through an identity provider's own pages: the
//! authorization code flow with PKCE (RFC 7636), as a browser would walk
//! it, without a browser.
//!
//! From the authorization request on, every redirect is followed (cookies
//! kept per origin) until the provider redirects to `redirect_uri`, whose
//! `code` is then exchanged at the token endpoint. On the way, each HTML
//! page is read for its `<form>`s:
//! - a form with an `<input name="{password_field}">` is the login form:
//!   the username goes in `username_field`, the password in
//!   `password_field`, its other inputs (hidden ones such as a CSRF token)
//!   are sent as they are;
//! - any other form (a consent page's "Continue") is submitted as it is.
//!
//! oidc-provider's development interactions are exactly that: a login form
//! with `login` and `password`, then a consent form.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use company::customer_login::CustomerLogin;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE};
use secrecy::{ExposeSecret, SecretString};

use crate::rules::Reply;

/// More hops than any provider's login takes: a loop is a failure.
const MAX_HOPS: usize = 20;

/// How a walk through the provider ended.
pub(crate) enum Walk {
    /// A code came back; the token endpoint's answer to it.
    Token(Reply),
    /// The provider kept the user on its pages: the login form came back
    /// after the credentials were sent, or it redirected back with an
    /// error. What it showed, never a secret.
    Refused(String),
}

/// The provider's endpoints, from the table or its discovery document.
pub(crate) struct Endpoints {
    authorization: String,
    token: String,
}

pub(crate) async fn endpoints(
    http: &reqwest::Client,
    login: &CustomerLogin,
    timeout: Duration,
) -> Result<Endpoints, String> {
    if let (Some(authorization), Some(token)) = (&login.authorization_url, &login.token_url) {
        return Ok(Endpoints {
            authorization: authorization.clone(),
            token: token.clone(),
        });
    }
    let issuer = login.issuer.as_deref().ok_or("customer_login.issuer is not set")?;
    let metadata = company::discovery::discover(http, issuer, timeout).await?;
    Ok(Endpoints {
        authorization: login
            .authorization_url
            .clone()
            .or(metadata.authorization_endpoint)
            .ok_or("the provider's metadata has no authorization_endpoint")?,
        token: login.token_url.clone().unwrap_or(metadata.token_endpoint),
    })
}

fn random() -> String {
    let mut bytes = [0u8; 32];
    // Without randomness there is no PKCE; an empty-looking value would
    // only make the provider refuse, which the check then reports.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Cookies by origin: a provider keeps its interaction state in them.
#[derive(Default)]
struct Jar(Vec<(String, String, String)>);

impl Jar {
    fn take(&mut self, url: &Url, reply: &Reply) {
        let origin = url.origin().ascii_serialization();
        for line in reply.headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            let Some((name, value)) = line.split(';').next().and_then(|p| p.trim().split_once('=')) else {
                continue;
            };
            let expired = line.to_ascii_lowercase().contains("max-age=0")
                || line.to_ascii_lowercase().contains("expires=thu, 01 jan 1970");
            self.0.retain(|(o, n, _)| !(o == &origin && n == name));
            if !expired && !value.is_empty() {
                self.0.push((origin.clone(), name.to_string(), value.to_string()));
            }
        }
    }

    fn header(&self, url: &Url) -> Option<String> {
        let origin = url.origin().ascii_serialization();
        let cookies: Vec<String> = self
            .0
            .iter()
            .filter(|(o, _, _)| *o == origin)
            .map(|(_, n, v)| format!("{n}={v}"))
            .collect();
        (!cookies.is_empty()).then(|| cookies.join("; "))
    }
}

/// One HTML form: where it goes, how, and its inputs' names and values.
#[derive(Debug)]
struct Form {
    action: Option<String>,
    post: bool,
    inputs: Vec<(String, String)>,
}

/// The forms of a page. Not an HTML parser: enough for the plain forms
/// login and consent pages are made of.
fn forms(html: &str) -> Vec<Form> {
    let lower = html.to_ascii_lowercase();
    let mut forms = Vec::new();
    let mut at = 0;
    while let Some(start) = lower[at..].find("<form").map(|i| i + at) {
        let end = lower[start..].find("</form").map_or(html.len(), |i| i + start);
        let tag_end = lower[start..end].find('>').map_or(end, |i| i + start);
        let attrs = attributes(&html[start + 5..tag_end]);
        let get = |name: &str| attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let mut inputs = Vec::new();
        let mut i = tag_end;
        while let Some(input) = lower[i..end].find("<input").map(|j| j + i) {
            let close = lower[input..end].find('>').map_or(end, |j| j + input);
            let attrs = attributes(&html[input + 6..close]);
            let get = |name: &str| attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
            if let Some(name) = get("name") {
                inputs.push((name, get("value").unwrap_or_default()));
            }
            i = close;
        }
        forms.push(Form {
            action: get("action"),
            post: get("method").is_some_and(|m| m.eq_ignore_ascii_case("post")),
            inputs,
        });
        at = end.max(start + 5);
    }
    forms
}

/// A tag's attributes: `name="v"`, `name='v'`, `name=v` or `name`.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = tag.trim_start_matches('/').trim();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| c.is_whitespace() || c == '=' || c == '/')
            .unwrap_or(rest.len());
        let name = rest[..name_end].to_ascii_lowercase();
        rest = rest[name_end..].trim_start();
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (v, tail) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let close = after[1..].find(q).map_or(after.len(), |i| i + 1);
                    (&after[1..close], after.get(close + 1..).unwrap_or(""))
                }
                _ => {
                    let close = after.find(char::is_whitespace).unwrap_or(after.len());
                    (&after[..close], &after[close..])
                }
            };
            value = unescape(v);
            rest = tail.trim_start();
        }
        rest = rest.trim_start_matches('/').trim_start();
        if !name.is_empty() {
            out.push((name, value));
        }
    }
    out
}

fn unescape(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Walks the provider's login as `username`, and exchanges the code.
pub(crate) async fn log_in(
    http: &reqwest::Client,
    login: &CustomerLogin,
    client_secret: Option<&SecretString>,
    endpoints: &Endpoints,
    username: &str,
    password: &str,
    timeout: Duration,
) -> Result<Walk, String> {
    let client_id = login.client_id.as_deref().unwrap_or_default();
    let redirect_uri = login.redirect_uri.as_deref().unwrap_or_default();
    let (verifier, state, nonce) = (random(), random(), random());
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    let mut url = Url::parse(&endpoints.authorization).map_err(|e| format!("authorization endpoint: {e}"))?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &login.scope)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(resource) = &login.resource {
            query.append_pair("resource", resource);
        }
    }
    let mut jar = Jar::default();
    let mut form: Option<Vec<(String, String)>> = None;
    let mut sent_credentials = false;
    for _ in 0..MAX_HOPS {
        let mut request = match &form {
            Some(fields) => http.post(url.clone()).form(fields),
            None => http.get(url.clone()),
        };
        if let Some(cookies) = jar.header(&url) {
            request = request.header(COOKIE, cookies);
        }
        let reply = send(request.timeout(timeout)).await?;
        jar.take(&url, &reply);
        form = None;
        let where_ = url.path().to_string();
        if (300..400).contains(&reply.status) {
            let location = reply
                .header(LOCATION.as_str())
                .ok_or_else(|| format!("HTTP {} at {where_} without a Location", reply.status))?;
            let next = url
                .join(location)
                .map_err(|_| format!("a bad Location from {where_}"))?;
            if next.as_str().starts_with(redirect_uri) {
                return back_at_client(http, login, client_secret, endpoints, &next, &state, &verifier, timeout).await;
            }
            url = next;
            continue;
        }
        if reply.status != 200 {
            return Err(format!("HTTP {} at {where_}", reply.status));
        }
        let page = String::from_utf8_lossy(&reply.body);
        let forms = forms(&page);
        let login_form = forms
            .iter()
            .find(|f| f.inputs.iter().any(|(n, _)| *n == login.password_field));
        let next_form = match login_form {
            Some(_) if sent_credentials => {
                return Ok(Walk::Refused(format!(
                    "the login form came back at {where_} (HTTP 200)"
                )));
            }
            Some(f) => {
                sent_credentials = true;
                let mut fields: Vec<(String, String)> = f
                    .inputs
                    .iter()
                    .filter(|(n, _)| *n != login.username_field && *n != login.password_field)
                    .cloned()
                    .collect();
                fields.push((login.username_field.clone(), username.to_string()));
                fields.push((login.password_field.clone(), password.to_string()));
                (f, fields)
            }
            None => match forms.first() {
                Some(f) => (f, f.inputs.clone()),
                None => return Err(format!("a page at {where_} with no form to fill and no redirect")),
            },
        };
        let (f, fields) = next_form;
        url = url
            .join(f.action.as_deref().unwrap_or(""))
            .map_err(|_| format!("a form with a bad action at {where_}"))?;
        if f.post {
            form = Some(fields);
        } else {
            url.query_pairs_mut().extend_pairs(&fields);
        }
    }
    Err(format!("no redirect to redirect_uri within {MAX_HOPS} steps"))
}

/// At `redirect_uri`: the code (for our `state`), exchanged for tokens.
#[allow(clippy::too_many_arguments)]
async fn back_at_client(
    http: &reqwest::Client,
    login: &CustomerLogin,
    client_secret: Option<&SecretString>,
    endpoints: &Endpoints,
    at: &Url,
    state: &str,
    verifier: &str,
    timeout: Duration,
) -> Result<Walk, String> {
    let param = |name: &str| at.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    if param("state").as_deref() != Some(state) {
        return Err("the provider redirected back without our state".into());
    }
    // RFC 9207: a provider that names itself must be the one asked.
    if let (Some(iss), Some(issuer)) = (param("iss"), &login.issuer)
        && iss.trim_end_matches('/') != issuer.trim_end_matches('/')
    {
        return Err("the redirect back names another issuer (RFC 9207 iss)".into());
    }
    if let Some(error) = param("error") {
        let shown = crate::rules::printable_token(&error).unwrap_or_else(|| "(unprintable)".into());
        return Ok(Walk::Refused(format!(
            "the provider redirected back with error {shown}"
        )));
    }
    let code = param("code").ok_or("the provider redirected back with neither code nor error")?;
    let client_id = login.client_id.as_deref().unwrap_or_default();
    let mut fields = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code),
        ("redirect_uri", login.redirect_uri.clone().unwrap_or_default()),
        ("code_verifier", verifier.to_string()),
    ];
    if let Some(resource) = &login.resource {
        fields.push(("resource", resource.clone()));
    }
    let mut request = http.post(&endpoints.token).timeout(timeout);
    match client_secret {
        Some(secret) => {
            let basic = company::system_token::basic_credentials(client_id, secret.expose_secret());
            request = request.header(AUTHORIZATION, format!("Basic {basic}"));
        }
        None => fields.push(("client_id", client_id.to_string())),
    }
    Ok(Walk::Token(send(request.form(&fields)).await?))
}

async fn send(request: reqwest::RequestBuilder) -> Result<Reply, String> {
    let response = request.send().await.map_err(crate::rules::transport_error)?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(crate::rules::transport_error)?;
    Ok(Reply {
        status,
        headers,
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oidc_provider_dev_interaction_forms_are_read() {
        let login = r#"<form autocomplete="off" action="/interaction/abc/login" method="post">
            <input type="hidden" name="prompt" value="login"/>
            <input required type="text" name="login" placeholder="Enter any login" autofocus="on">
            <input required type="password" name="password" placeholder="and password">
            <button type="submit" class="login login-submit">Sign-in</button></form>
            <form action='/other?a=1&amp;b=2'><input name=x value=y></form>"#;
        let found = forms(login);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].action.as_deref(), Some("/interaction/abc/login"));
        assert!(found[0].post);
        assert_eq!(
            found[0].inputs,
            vec![
                ("prompt".to_string(), "login".to_string()),
                ("login".to_string(), String::new()),
                ("password".to_string(), String::new())
            ]
        );
        assert_eq!(found[1].action.as_deref(), Some("/other?a=1&b=2"));
        assert!(!found[1].post);
        assert_eq!(found[1].inputs, vec![("x".to_string(), "y".to_string())]);
    }
}
