//! Finding a company's token endpoint from its issuer: OAuth 2.0
//! Authorization Server Metadata (RFC 8414), else OpenID Connect Discovery.

use std::time::Duration;

use serde::Deserialize;

/// What the gateway reads of an authorization server's metadata.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ServerMetadata {
    pub issuer: String,
    pub token_endpoint: String,
    /// Where a browser logs in, for `check`'s authorization code flow.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    /// RFC 8414 §2: absent means `client_secret_basic` only.
    #[serde(default = "basic_only")]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    #[serde(default)]
    pub grant_types_supported: Vec<String>,
    /// Where the issuer publishes its signing keys (the gateway verifies
    /// agents' access tokens with them).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// OpenID Connect: where a signed-in user's claims are read.
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    /// OpenID Connect RP-Initiated Logout: where the browser ends its
    /// session at the provider.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// RFC 9207: the provider names itself (`iss`) on every redirect back,
    /// so an answer without it is not its own.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

fn basic_only() -> Vec<String> {
    vec!["client_secret_basic".into()]
}

/// The metadata URLs to try for `issuer`, in order: RFC 8414 §3.1 puts the
/// well-known segment before the issuer's path; OpenID Connect appends it.
pub fn metadata_urls(issuer: &str) -> Result<Vec<reqwest::Url>, String> {
    let url = reqwest::Url::parse(issuer).map_err(|e| format!("issuer: {e}"))?;
    let path = url.path().trim_end_matches('/');
    let mut rfc8414 = url.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut openid = url.clone();
    openid.set_path(&format!("{path}/.well-known/openid-configuration"));
    Ok(vec![rfc8414, openid])
}

/// The issuer's metadata: the first document found whose `issuer` is the
/// one configured (RFC 8414 §3.3: another issuer's document is refused).
pub async fn discover(http: &reqwest::Client, issuer: &str, timeout: Duration) -> Result<ServerMetadata, String> {
    let mut tried = Vec::new();
    for url in metadata_urls(issuer)? {
        let answer = match http.get(url.clone()).timeout(timeout).send().await {
            Ok(a) => a,
            Err(e) => {
                tried.push(format!("{url}: {}", crate::system_token::describe_transport(&e)));
                continue;
            }
        };
        let status = answer.status();
        if !status.is_success() {
            tried.push(format!("{url}: HTTP {}", status.as_u16()));
            continue;
        }
        let metadata: ServerMetadata = match answer.json().await {
            Ok(m) => m,
            Err(_) => {
                tried.push(format!("{url}: not a metadata document"));
                continue;
            }
        };
        if metadata.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(format!(
                "{url} names another issuer ({:?}): refused (RFC 8414 §3.3)",
                metadata.issuer
            ));
        }
        reqwest::Url::parse(&metadata.token_endpoint)
            .map_err(|e| format!("{url}: token_endpoint is not a URL: {e}"))?;
        return Ok(metadata);
    }
    Err(format!("no metadata found: {}", tried.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_follow_both_specifications() {
        let urls = |issuer: &str| -> Vec<String> {
            metadata_urls(issuer)
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            urls("https://idp.example.com"),
            [
                "https://idp.example.com/.well-known/oauth-authorization-server",
                "https://idp.example.com/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            urls("https://idp.example.com/tenant/1/"),
            [
                "https://idp.example.com/.well-known/oauth-authorization-server/tenant/1",
                "https://idp.example.com/tenant/1/.well-known/openid-configuration"
            ]
        );
    }
}
