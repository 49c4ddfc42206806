//! Cross-site request forgery: every state-changing request of the page (approve, sign out) must
//! carry the session's CSRF token in a hidden field, compared in constant time; and when the
//! browser says where the request comes from (`Origin`, else `Referer`), that must be this
//! listener itself. The session cookie is `SameSite=Strict` besides.

use axum::http::{header, HeaderMap};

/// Whether the form's token is the session's, in time independent of where they differ.
pub fn token_matches(expected: &str, presented: Option<&str>) -> bool {
    let Some(presented) = presented else { return false };
    let (a, b) = (expected.as_bytes(), presented.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a request's origin is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginRefused {
    #[error("the request comes from another origin ({0})")]
    Origin(String),
    #[error("the request was sent from another site's page")]
    Referer,
    #[error("the request has no Host header")]
    NoHost,
}

/// Checks `Origin` (or, without it, `Referer`) against this listener's own origin
/// (`scheme://Host`). Requests that carry neither are let through: the CSRF token decides.
pub fn same_origin(headers: &HeaderMap, tls: bool) -> Result<(), OriginRefused> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let referer = headers.get(header::REFERER).and_then(|v| v.to_str().ok());
    if origin.is_none() && referer.is_none() {
        return Ok(());
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).ok_or(OriginRefused::NoHost)?;
    let ours = format!("{}://{}", if tls { "https" } else { "http" }, host);
    if let Some(origin) = origin {
        return if origin.eq_ignore_ascii_case(&ours) {
            Ok(())
        } else {
            Err(OriginRefused::Origin(origin.chars().take(100).collect()))
        };
    }
    match referer {
        Some(referer) if referer == ours || referer.starts_with(&format!("{ours}/")) => Ok(()),
        _ => Err(OriginRefused::Referer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches("abcd", Some("abcd")));
        assert!(!token_matches("abcd", Some("abce")));
        assert!(!token_matches("abcd", Some("abc")));
        assert!(!token_matches("abcd", Some("")));
        assert!(!token_matches("abcd", None));
    }

    #[test]
    fn the_origin_must_be_this_listener() {
        let host = ("host", "127.0.0.1:8443");
        assert_eq!(same_origin(&headers(&[host]), true), Ok(()));
        assert_eq!(same_origin(&headers(&[host, ("origin", "https://127.0.0.1:8443")]), true), Ok(()));
        assert!(same_origin(&headers(&[host, ("origin", "http://127.0.0.1:8443")]), true).is_err());
        assert!(same_origin(&headers(&[host, ("origin", "https://evil.test")]), true).is_err());
        assert!(same_origin(&headers(&[host, ("origin", "null")]), true).is_err());
        assert_eq!(same_origin(&headers(&[host, ("referer", "https://127.0.0.1:8443/ui/approvals")]), true), Ok(()));
        assert!(same_origin(&headers(&[host, ("referer", "https://127.0.0.1:8443.evil.test/ui")]), true).is_err());
        assert!(same_origin(&headers(&[("origin", "https://127.0.0.1:8443")]), true).is_err());
    }
}
