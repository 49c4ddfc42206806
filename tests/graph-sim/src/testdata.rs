//! Test keys and certificates for the tests of the simulator and of its clients. The keys are
//! checked in (`testdata/`) and public: nothing they sign proves anything outside a test.

use chrono::{DateTime, Utc};

/// The app registration's certificate key.
pub const APP_KEY: &str = include_str!("../testdata/app.key.pem");
/// A key whose certificate is not registered on the app.
pub const OTHER_KEY: &str = include_str!("../testdata/other-app.key.pem");
/// A federated token issuer's signing key.
pub const ISSUER_KEY: &str = include_str!("../testdata/issuer.key.pem");

/// A self-signed certificate (PEM) for `key_pem`, valid from `not_before` to `not_after`.
pub fn certificate(key_pem: &str, not_before: DateTime<Utc>, not_after: DateTime<Utc>) -> Result<String, String> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| format!("test key: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(vec!["remedy-test".to_owned()]).map_err(|e| format!("test certificate: {e}"))?;
    let at = |t: DateTime<Utc>| {
        rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    params.not_before = at(not_before);
    params.not_after = at(not_after);
    params.self_signed(&key).map(|c| c.pem()).map_err(|e| format!("test certificate: {e}"))
}

/// A certificate for `key_pem` valid from a day ago for ten years.
pub fn valid_certificate(key_pem: &str) -> String {
    let now = Utc::now();
    certificate(key_pem, now - chrono::Duration::days(1), now + chrono::Duration::days(3650))
        .unwrap_or_else(|e| panic!("{e}"))
}
