//! What can go wrong talking to Active Directory, classified for the controller's error policy.

use std::time::Duration;

use remedy_policies::Action;

/// An LDAP result code with the name RFC 4511 gives it.
pub fn result_code_name(code: u32) -> &'static str {
    match code {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        54 => "loopDetect",
        64 => "namingViolation",
        65 => "objectClassViolation",
        68 => "entryAlreadyExists",
        80 => "other",
        81 => "serverDown",
        85 => "timeout",
        _ => "unknown",
    }
}

/// Errors of the AD provider. Every variant that comes from the DC keeps the DC's own words.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdError {
    /// The configuration cannot work (unreadable CA or password file, bad URL, plain LDAP without
    /// consent). Fixed by an operator, not by waiting.
    #[error("Active Directory configuration: {0}")]
    Config(String),

    /// The TLS handshake failed: most often the DC's certificate does not verify against caFile.
    #[error("TLS with {url} failed: {message}")]
    Tls { url: String, message: String },

    /// The DC could not be reached or the connection broke (refused, reset, closed).
    #[error("cannot reach {url}: {message}")]
    Connection { url: String, message: String },

    /// Kerberos credentials for a keytab bind could not be had (the keytab's key is stale, the KDC
    /// is unreachable, the clock is off...). Transient only when the KDC could not be reached.
    #[error("Kerberos for {principal}: {message}")]
    Kerberos { principal: String, message: String, transient: bool },

    /// A connect or an operation took longer than its configured timeout.
    #[error("{operation} timed out after {}ms", after.as_millis())]
    Timeout { operation: String, after: Duration },

    /// The DC answered with a non-success result code.
    #[error("{operation}{}: LDAP {code} ({}): {message}", dn_suffix(dn), result_code_name(*code))]
    Ldap { operation: &'static str, dn: Option<String>, code: u32, message: String },

    /// A conditional write found a value other than the one observed: someone changed the account
    /// between observation and action. Nothing was written; observe again and re-plan.
    #[error("{dn}: {attribute} changed since it was read as {expected} (the DC said: {message}); nothing was written")]
    ConcurrentChange { dn: String, attribute: &'static str, expected: String, message: String },

    /// The DC accepted the write but the read-back shows the intended effect did not happen.
    #[error("{action} on {dn} was accepted by the DC but is not effective: {reason}")]
    NotEffective { dn: String, action: Action, reason: String },

    /// The write went to one DC, which then failed; the read-back, on the DC that serves now, does
    /// not show it yet. Not a failure: AD replication may still bring it (or the first DC never
    /// applied it). Transient: the next pass observes again and plans from what the DC shows
    /// (see [`remedy_policies::replication`]).
    #[error("{action} on {dn} was written to {written_to}, which then failed; {read_from} does not show it yet (AD replication): checked again on the next pass")]
    Unconfirmed { dn: String, action: Action, written_to: String, read_from: String },

    /// The DC sent something remedy cannot read (a malformed or missing attribute).
    #[error("{dn}: cannot read {attribute}: {message}")]
    Decode { dn: String, attribute: &'static str, message: String },

    /// The action is not an Active Directory action.
    #[error("{0} is not an Active Directory action")]
    NotAnAdAction(Action),

    /// No connection could be had for a write (the DC refused it, or the pool waits before it
    /// tries again): nothing of the write was sent, so it certainly did not happen. Unlike a
    /// failure during the write, it needs no settling from what the directory shows.
    #[error("{0}; nothing was sent")]
    NotSent(Box<AdError>),
}

fn dn_suffix(dn: &Option<String>) -> String {
    dn.as_deref().map(|dn| format!(" {dn}")).unwrap_or_default()
}

impl AdError {
    /// True when trying again later may succeed without anyone changing anything: the DC is busy,
    /// down or slow, the connection broke, or the account changed under us (the next reconcile
    /// observes afresh). False for what needs a person: rights, credentials, configuration,
    /// a missing object, a constraint the DC enforces.
    pub fn is_transient(&self) -> bool {
        match self {
            AdError::Connection { .. }
            | AdError::Timeout { .. }
            | AdError::ConcurrentChange { .. }
            | AdError::Unconfirmed { .. } => true,
            AdError::Ldap { code, .. } => matches!(code, 3 | 51 | 52 | 81 | 85),
            AdError::Kerberos { transient, .. } => *transient,
            AdError::Config(_)
            | AdError::Tls { .. }
            | AdError::NotEffective { .. }
            | AdError::Decode { .. }
            | AdError::NotAnAdAction(_) => false,
            AdError::NotSent(cause) => cause.is_transient(),
        }
    }

    /// True when nothing of the operation reached the DC (see [`AdError::NotSent`]).
    pub fn nothing_sent(&self) -> bool {
        matches!(self, AdError::NotSent(_))
    }

    /// The LDAP result code, when the DC gave one.
    pub fn result_code(&self) -> Option<u32> {
        match self {
            AdError::Ldap { code, .. } => Some(*code),
            AdError::ConcurrentChange { .. } => Some(16),
            AdError::NotSent(cause) => cause.result_code(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ldap(code: u32) -> AdError {
        AdError::Ldap { operation: "modify", dn: Some("CN=x".into()), code, message: "text".into() }
    }

    #[test]
    fn classification_follows_the_result_code() {
        for code in [19, 32, 49, 50, 53] {
            assert!(!ldap(code).is_transient(), "{code} must be permanent");
        }
        for code in [51, 52, 81] {
            assert!(ldap(code).is_transient(), "{code} must be transient");
        }
        assert!(AdError::Timeout { operation: "search".into(), after: Duration::from_secs(1) }.is_transient());
        assert!(AdError::Connection { url: "ldaps://dc".into(), message: "refused".into() }.is_transient());
        assert!(!AdError::Tls { url: "ldaps://dc".into(), message: "bad".into() }.is_transient());
        let refused = AdError::Connection { url: "ldaps://dc".into(), message: "refused".into() };
        let unsent = AdError::NotSent(Box::new(refused.clone()));
        assert!(unsent.is_transient() && unsent.nothing_sent() && !refused.nothing_sent());
        assert_eq!(unsent.to_string(), "cannot reach ldaps://dc: refused; nothing was sent");
    }

    #[test]
    fn the_dc_text_is_kept() {
        let error = AdError::Ldap {
            operation: "modify",
            dn: Some("CN=other1,OU=Other,DC=x".into()),
            code: 50,
            message: "00002098: Object CN=other1,OU=Other,DC=x has no write property access".into(),
        };
        assert_eq!(
            error.to_string(),
            "modify CN=other1,OU=Other,DC=x: LDAP 50 (insufficientAccessRights): 00002098: Object CN=other1,OU=Other,DC=x has no write property access"
        );
    }
}
