//! Session cookies: finding one in a request, and the `Set-Cookie` that
//! sets (or, with an empty value and age 0, clears) one.

use http::header::{COOKIE, HeaderMap, HeaderValue};

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// An HttpOnly session cookie. `name`, `path` and `same_site` come from
/// code or checked configuration and `value` is a URL-safe random id, so
/// the header is always valid; an empty header stands in if it were not.
pub fn session_set_cookie(
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    max_age: u64,
    secure: bool,
) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_finds_its_value_among_others() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("a=1; deskbridge_session=xyz; b=2"));
        assert_eq!(cookie(&h, "deskbridge_session"), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn set_cookie_carries_every_attribute() {
        let v = session_set_cookie("s", "abc", "/", "Strict", 60, true);
        assert_eq!(v, "s=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure");
        let v = session_set_cookie("s", "", "/demo", "Lax", 0, false);
        assert_eq!(v, "s=; Path=/demo; HttpOnly; SameSite=Lax; Max-Age=0");
    }
}
