//! Distinguished names compared as AD compares them: RDN by RDN, case and spacing aside. Used by
//! the guardrails (scopes, protected accounts named by DN) and by `privilege` (groups by DN).

/// A DN as its RDNs, each `type=value` lower-cased with whitespace around `=` and `,` removed
/// and runs of whitespace inside values collapsed. Escaped commas (`\,`) do not split.
pub(crate) fn rdns(dn: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in dn.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == ',' {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
        .iter()
        .map(|part| match part.split_once('=') {
            Some((kind, value)) => format!("{}={}", collapse(kind), collapse(value)),
            None => collapse(part),
        })
        .filter(|rdn| !rdn.is_empty())
        .collect()
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Whether `dn` is at or below one of the base DNs, compared RDN by RDN: `OU=Staff,DC=x` does not
/// cover `OU=XStaff,DC=x`.
pub(crate) fn in_scope(dn: &str, scopes: &[String]) -> bool {
    let dn = rdns(dn);
    scopes.iter().any(|scope| {
        let scope = rdns(scope);
        !scope.is_empty() && dn.ends_with(&scope)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_is_compared_rdn_by_rdn() {
        let scopes = vec!["OU=Staff, DC=remedy,DC=test".to_owned()];
        assert!(in_scope("CN=a,OU=Staff,DC=remedy,DC=test", &scopes));
        assert!(in_scope("cn=a , ou=staff,dc=REMEDY, dc=test", &scopes));
        assert!(!in_scope("CN=a,OU=XStaff,DC=remedy,DC=test", &scopes));
        assert!(!in_scope("CN=a,OU=Staff,DC=remedy,DC=test,DC=evil", &scopes));
        // A CN crafted to look like the OU is one RDN, not two.
        assert!(!in_scope("CN=x\\,OU=Staff,DC=remedy,DC=test", &scopes));
        assert_eq!(rdns("CN=x\\,OU=Staff,DC=remedy,DC=test").len(), 3);
        assert!(!in_scope("CN=a,OU=Staff,DC=remedy,DC=test", &["".to_owned()]));
    }

    #[test]
    fn escaped_commas_do_not_split() {
        assert_eq!(rdns("CN=Smith\\, John,OU=Staff"), vec!["cn=smith\\, john", "ou=staff"]);
    }
}
