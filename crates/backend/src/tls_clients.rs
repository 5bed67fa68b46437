//! Clients that authenticate by their TLS certificate alone (RFC 8705 §2.1,
//! `tls_client_auth`), registered in the configuration as `[[tls_clients]]`.
//!
//! A client is known by the SHA-256 thumbprint of the certificate it must
//! show (`x5t#S256`, base64url): exact, and needs no DN parsing. The
//! certificate must also chain to `[tls] client_ca`, checked in the TLS
//! handshake before any request is read.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serving::tls::PeerCertificate;

/// `[[tls_clients]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsClient {
    pub client_id: String,
    /// base64url (no padding) SHA-256 of the client certificate's DER.
    pub thumbprint: String,
    /// The scopes it may be granted, space-separated (`profile:read`).
    pub scopes: String,
}

impl TlsClient {
    /// What is wrong with this entry, if anything.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.client_id.is_empty() {
            return Some("tls_clients: client_id must not be empty".into());
        }
        match URL_SAFE_NO_PAD.decode(&self.thumbprint) {
            Ok(digest) if digest.len() == 32 => None,
            _ => Some(format!(
                "tls_clients: {}: thumbprint must be the base64url SHA-256 of the certificate (43 characters)",
                self.client_id
            )),
        }
    }
}

/// `x5t#S256` of a certificate: base64url SHA-256 of its DER.
pub fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

/// The registered client `client_id` whose certificate this connection
/// showed, if it is one: `None` for an unknown id, no certificate, or
/// another certificate.
pub(crate) fn authenticate<'a>(
    clients: &'a [TlsClient],
    client_id: &str,
    presented: Option<&PeerCertificate>,
) -> Option<&'a TlsClient> {
    let client = clients.iter().find(|c| c.client_id == client_id)?;
    let presented = thumbprint(presented?.0.as_ref());
    // Thumbprints are public: an ordinary comparison leaks nothing.
    (presented == client.thumbprint).then_some(client)
}

/// Whether `client_id` is registered as a certificate client.
pub(crate) fn is_registered(clients: &[TlsClient], client_id: &str) -> bool {
    clients.iter().any(|c| c.client_id == client_id)
}
