//! `remedy doctor`'s judgements: what the pre-flight of a configuration found, check by check,
//! and how it is shown. The daemon reads the estate (DCs, rights, groups, Graph token); this
//! module decides what each reading means (ok, warn, fail), what to do about it, and renders it.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use chrono::Duration;
use serde::Serialize;

/// The attributes remedy writes on AD accounts (disable and enable, force or cancel a password
/// change): the action account needs write-property on exactly these (docs/operations.md, "The
/// rights to delegate"; remedy does not unlock accounts, so not `lockoutTime`).
pub const NEEDED_AD_ATTRIBUTES: [&str; 2] = ["userAccountControl", "pwdLastSet"];

/// The attributes whose write access on a protected account is a finding: those remedy writes,
/// and `lockoutTime` (unlocking), which delegations often grant beside them.
pub const CONTROL_ATTRIBUTES: [&str; 3] = ["userAccountControl", "pwdLastSet", "lockoutTime"];

/// Clock skew beyond this is a warning: Kerberos still works, but times in history and the DC's
/// disagree, and it grows.
pub const SKEW_WARN: Duration = Duration::minutes(1);
/// Kerberos refuses tickets beyond this skew (its default `clockskew`, 5 minutes).
pub const SKEW_FAIL: Duration = Duration::minutes(5);

/// What remedy does on Microsoft Graph, and the application permissions that allow it (the least
/// privileged first: the one to grant). `always`: needed whatever the manifests say; otherwise only
/// by manifests that confirm compromises. Sources: docs/operations.md's table;
/// `revokeSignInSessions` is also allowed by `User.ReadWrite.All` (Microsoft's permission table
/// for the call lists it as a higher privileged permission).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphNeed {
    pub what: &'static str,
    pub any_of: &'static [&'static str],
    pub always: bool,
}

pub const GRAPH_NEEDS: [GraphNeed; 4] = [
    GraphNeed { what: "read users and suspend them", any_of: &["User.ReadWrite.All"], always: true },
    GraphNeed { what: "revoke sessions", any_of: &["User.RevokeSessions.All", "User.ReadWrite.All"], always: true },
    GraphNeed {
        what: "read risk",
        any_of: &["IdentityRiskyUser.Read.All", "IdentityRiskyUser.ReadWrite.All"],
        always: false,
    },
    GraphNeed { what: "confirm compromised", any_of: &["IdentityRiskyUser.ReadWrite.All"], always: false },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One line of the report: which check, on what, its verdict, what was found, and the fix when it
/// is not ok.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub target: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(check: &str, target: &str, detail: impl Into<String>) -> Check {
        Check {
            check: check.to_owned(),
            target: target.to_owned(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(check: &str, target: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check: check.to_owned(),
            target: target.to_owned(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(check: &str, target: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check: check.to_owned(),
            target: target.to_owned(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Whether any check failed (warnings do not fail the pre-flight).
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

/// One line per check, `ok|warn|fail  <check>  <target>: <detail>`, and below a line that is not
/// ok, `  fix: <what to do>`; a summary at the end.
pub fn render_text(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
    let mut out = String::new();
    for check in checks {
        let _ =
            writeln!(out, "{:<4}  {:<width$}  {}: {}", check.status.as_str(), check.check, check.target, check.detail);
        if let Some(fix) = check.fix.as_deref().filter(|_| check.status != Status::Ok) {
            let _ = writeln!(out, "      fix: {fix}");
        }
    }
    let count = |status| checks.iter().filter(|c| c.status == status).count();
    let _ =
        writeln!(out, "{} ok, {} warning(s), {} failed", count(Status::Ok), count(Status::Warn), count(Status::Fail));
    out
}

/// The DC's clock (rootDSE `currentTime`) against the local one; `skew` is DC minus local.
pub fn judge_skew(dc: &str, skew: Duration) -> Check {
    let seconds = skew.num_seconds();
    let said = if seconds == 0 {
        "the DC's clock agrees with this host's (within a second)".to_owned()
    } else {
        format!("the DC's clock is {}s {} this host's", seconds.abs(), if seconds > 0 { "ahead of" } else { "behind" })
    };
    let fix = "synchronise this host's clock with the domain's time source (chrony or systemd-timesyncd \
               pointed at the DCs, or the PDC emulator)";
    let magnitude = skew.abs();
    if magnitude > SKEW_FAIL {
        Check::fail("dc.clock", dc, format!("{said}: beyond Kerberos's 5 minutes, binds with Kerberos fail"), fix)
    } else if magnitude > SKEW_WARN {
        Check::warn("dc.clock", dc, format!("{said}: more than 1 minute (Kerberos fails beyond 5)"), fix)
    } else {
        Check::ok("dc.clock", dc, said)
    }
}

/// One account the action account was asked about: what the DC says it may write on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights<'a> {
    pub dn: &'a str,
    /// `allowedAttributesEffective`, as the DC computed it for the bound account.
    pub writable: &'a [String],
}

fn has(writable: &[String], attribute: &str) -> bool {
    writable.iter().any(|w| w.eq_ignore_ascii_case(attribute))
}

/// The action account's rights on the (unprotected) user accounts below one `allowedScopes`
/// base: it must be able to write every needed attribute on every one of them; write access to
/// more than that is a warning. `None` for a scope the DC does not have.
pub fn judge_scope(scope: &str, action_account: &str, accounts: Option<&[Rights<'_>]>) -> Check {
    const CHECK: &str = "ad.scope";
    let Some(accounts) = accounts else {
        return Check::fail(
            CHECK,
            scope,
            "no such object on the DC",
            "correct guardrails.allowedScopes: each entry is the DN of an existing OU or container",
        );
    };
    if accounts.is_empty() {
        return Check::warn(
            CHECK,
            scope,
            "no user account (other than protected ones) below this base: the rights cannot be checked",
            "none needed if the scope is meant to be empty for now; otherwise check the DN",
        );
    }
    let mut missing: BTreeSet<&str> = BTreeSet::new();
    let mut lacking = Vec::new();
    let mut extra: BTreeSet<String> = BTreeSet::new();
    for account in accounts {
        let absent: Vec<&str> = NEEDED_AD_ATTRIBUTES.iter().copied().filter(|a| !has(account.writable, a)).collect();
        if !absent.is_empty() {
            missing.extend(&absent);
            lacking.push(account.dn);
        }
        extra.extend(
            account
                .writable
                .iter()
                .filter(|w| !NEEDED_AD_ATTRIBUTES.iter().any(|n| n.eq_ignore_ascii_case(w)))
                .cloned(),
        );
    }
    let needed = NEEDED_AD_ATTRIBUTES.join(", ");
    if !missing.is_empty() {
        let missing: Vec<&str> = NEEDED_AD_ATTRIBUTES.iter().copied().filter(|a| missing.contains(a)).collect();
        let sample = lacking.iter().take(3).copied().collect::<Vec<_>>().join("; ");
        let more = if lacking.len() > 3 { format!(" and {} more", lacking.len() - 3) } else { String::new() };
        return Check::fail(
            CHECK,
            scope,
            format!(
                "{action_account} cannot write {} on {} of {} user account(s) ({sample}{more})",
                missing.join(", "),
                lacking.len(),
                accounts.len()
            ),
            format!(
                "delegate to {action_account} write-property on {needed} for descendant user objects of {scope} \
                 (e.g. dsacls \"{scope}\" /I:S /G \"<DOMAIN>\\<account>:WP;userAccountControl;user\", and the same \
                 for pwdLastSet; see docs/operations.md, The rights to delegate)"
            ),
        );
    }
    if !extra.is_empty() {
        let extra: Vec<String> = extra.into_iter().collect();
        return Check::warn(
            CHECK,
            scope,
            format!(
                "{action_account} can write {needed} on all {} user account(s), and also {}: more than remedy needs",
                accounts.len(),
                extra.join(", ")
            ),
            format!(
                "remove the delegations that give {action_account} more than write-property on {needed} (see \
                 docs/operations.md, The rights to delegate)"
            ),
        );
    }
    Check::ok(CHECK, scope, format!("{action_account} can write {needed} on all {} user account(s)", accounts.len()))
}

/// A protected account and why it is protected (as the plan's guardrails say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected<'a> {
    pub rights: Rights<'a>,
    pub why: String,
}

/// The action account should have no write access to the attributes remedy writes on any
/// protected account. Remedy's guardrails refuse to act on them whatever the rights, so this is
/// a warning: the delegation is wider than it should be (on Windows, AdminSDHolder normally
/// strips it from the AdminSDHolder set within the hour; Samba does not run SDProp).
pub fn judge_protected(domain: &str, action_account: &str, accounts: &[Protected<'_>]) -> Check {
    const CHECK: &str = "ad.protected";
    let findings: Vec<String> = accounts
        .iter()
        .filter_map(|p| {
            let writable: Vec<&str> =
                CONTROL_ATTRIBUTES.iter().copied().filter(|a| has(p.rights.writable, a)).collect();
            (!writable.is_empty()).then(|| format!("{} ({}): can write {}", p.rights.dn, p.why, writable.join(", ")))
        })
        .collect();
    if findings.is_empty() {
        return Check::ok(
            CHECK,
            domain,
            format!(
                "{action_account} can write none of {} on the {} protected account(s)",
                CONTROL_ATTRIBUTES.join(", "),
                accounts.len()
            ),
        );
    }
    Check::warn(
        CHECK,
        domain,
        format!(
            "{action_account} has rights on {} protected account(s): {} (remedy's guardrails still refuse to act \
             on them)",
            findings.len(),
            findings.join("; ")
        ),
        format!(
            "move these accounts out of the OUs delegated to {action_account}, or deny it write-property on them; \
             on Windows, check that AdminSDHolder's ACL does not grant it and that SDProp runs"
        ),
    )
}

/// Each `protectedGroups` entry must name a group that exists; `resolved` is the group it was
/// resolved to (its DN and SID), if any.
pub fn judge_protected_group(entry: &str, resolved: Option<(&str, &str)>) -> Check {
    match resolved {
        Some((dn, sid)) => Check::ok("ad.protected-group", entry, format!("{dn} ({sid})")),
        None => Check::fail(
            "ad.protected-group",
            entry,
            "no group by this SID, DN or name: its members would not be protected",
            "correct guardrails.protectedGroups (a SID such as S-1-5-21-...-1107 is safest: it survives renames)",
        ),
    }
}

/// The Graph token's `roles` claim against [`GRAPH_NEEDS`]. `None`: the token is not a JWT
/// whose roles can be read.
pub fn judge_permissions(client_id: &str, roles: Option<&[String]>) -> Check {
    const CHECK: &str = "entra.permissions";
    let Some(roles) = roles else {
        return Check::warn(
            CHECK,
            client_id,
            "the access token is not a JWT with a roles claim: the granted permissions cannot be read from it",
            "compare the app registration's API permissions with docs/operations.md by hand",
        );
    };
    let granted = |name: &str| roles.iter().any(|r| r.eq_ignore_ascii_case(name));
    let unmet = |always: bool| -> Vec<&GraphNeed> {
        GRAPH_NEEDS.iter().filter(|n| n.always == always && !n.any_of.iter().any(|p| granted(p))).collect()
    };
    // The least privileged permission of each unmet need, once each.
    let to_add = |needs: &[&GraphNeed]| -> Vec<&'static str> {
        let mut names: Vec<&'static str> = needs.iter().map(|n| n.any_of[0]).collect();
        names.dedup();
        names
    };
    let lacks = |needs: &[&GraphNeed]| -> String {
        needs.iter().map(|n| format!("{} (to {})", n.any_of[0], n.what)).collect::<Vec<_>>().join(", ")
    };
    let fix = |names: &[&str]| {
        format!(
            "in the app registration, API permissions → Add a permission → Microsoft Graph → Application \
             permissions: add {}, then Grant admin consent",
            names.join(", ")
        )
    };
    let required = unmet(true);
    if !required.is_empty() {
        return Check::fail(
            CHECK,
            client_id,
            format!("the token lacks {}; it grants: {}", lacks(&required), or_none(roles)),
            fix(&to_add(&required)),
        );
    }
    let optional = unmet(false);
    if !optional.is_empty() {
        return Check::warn(
            CHECK,
            client_id,
            format!(
                "the token lacks {}, which only manifests with confirmCompromised need; it grants: {}",
                lacks(&optional),
                or_none(roles)
            ),
            fix(&to_add(&optional)),
        );
    }
    Check::ok(CHECK, client_id, format!("the token grants what remedy needs: {}", or_none(roles)))
}

fn or_none(roles: &[String]) -> String {
    if roles.is_empty() {
        "none".to_owned()
    } else {
        roles.join(", ")
    }
}

/// What to do about a bind the DC refused (LDAP result `code`, the DC's `message`): AD's
/// `data` sub-code in the message says why (52e wrong password, 533 disabled, ...).
pub fn bind_fix(code: u32, message: &str) -> String {
    let lower = message.to_ascii_lowercase();
    let data = lower.split("data ").nth(1).map(|rest| rest.split([',', ' ']).next().unwrap_or_default());
    let reason = match data {
        Some("52e") => {
            "the password is wrong: put the action account's current password in activeDirectory.passwordFile"
        }
        Some("525") => {
            "no such account: correct activeDirectory.bindUser (a UPN such as svc-remedy@corp.example, or a DN)"
        }
        Some("530" | "531") => {
            "the account may not log on at this time or from this host: relax its logon restrictions"
        }
        Some("532") => "the password has expired: set a new one and put it in passwordFile",
        Some("533") => "the account is disabled: enable it",
        Some("701") => "the account has expired: extend its expiry date",
        Some("773") => "the password must be changed before first use: set a new one and put it in passwordFile",
        Some("775") => "the account is locked out: unlock it, then check the password (failed binds lock it again)",
        _ if code == 49 => {
            "check activeDirectory.bindUser and the password in activeDirectory.passwordFile (the account may also be \
             disabled, expired or locked out)"
        }
        _ => "read the DC's message above; the DC refused the bind for a reason other than the credentials",
    };
    reason.to_owned()
}

/// What to do about a Kerberos bind that could not get its tickets; `message` is the Kerberos
/// library's text with remedy's hint.
pub fn kerberos_fix(message: &str) -> String {
    let lower = message.to_ascii_lowercase();
    let reason = if lower.contains("server not found in kerberos database") {
        "the KDC knows no ldap/<name> for this DC: put the DC's name as AD knows it in the URL (setspn -Q \
         ldap/<name> on Windows, samba-tool spn list on Samba)"
    } else if lower.contains("preauthentication failed") {
        "the keytab's key is not the account's current one: export the keytab again"
    } else if lower.contains("clock skew") || lower.contains("more than 5 minutes") {
        "this host's clock is more than 5 minutes from the DC's: keep it in sync (chrony against the DCs)"
    } else if lower.contains("cannot contact any kdc") {
        "no KDC answered: check krb5.conf (kerberos.krb5Config) names reachable KDCs for the realm"
    } else if lower.contains("cannot read the keytab") {
        "put the keytab at activeDirectory.kerberos.keytab, readable by remedy's user"
    } else {
        "check activeDirectory.kerberos (keytab, principal, krb5Config): klist -k lists the keytab's principals; \
         docs/operations.md, Kerberos from a keytab"
    };
    reason.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kerberos_failures_say_what_to_do() {
        assert!(kerberos_fix("Server not found in Kerberos database").contains("setspn -Q"));
        assert!(kerberos_fix("Preauthentication failed (the keytab's key is not the account's)")
            .contains("export the keytab again"));
        assert!(kerberos_fix("Clock skew too great").contains("clock"));
        assert!(kerberos_fix("Cannot contact any KDC for realm 'CONTOSO.COM'").contains("krb5.conf"));
        assert!(kerberos_fix("something else").contains("klist -k"));
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn bind_refusals_say_what_to_do() {
        let samba = "80090308: LdapErr: DSID-0C09030B, comment: AcceptSecurityContext error, data 52e, v893";
        assert!(bind_fix(49, samba).starts_with("the password is wrong"));
        assert!(bind_fix(49, "AcceptSecurityContext error, data 775, v4563").contains("locked out"));
        assert!(bind_fix(49, "Invalid credentials").contains("bindUser"));
        assert!(bind_fix(53, "unwilling").contains("other than the credentials"));
    }

    #[test]
    fn skew_thresholds() {
        let table = [
            (0, Status::Ok),
            (59, Status::Ok),
            (-60, Status::Ok),
            (61, Status::Warn),
            (-299, Status::Warn),
            (300, Status::Warn),
            (301, Status::Fail),
            (-3600, Status::Fail),
        ];
        for (seconds, status) in table {
            let check = judge_skew("ldaps://dc1", Duration::seconds(seconds));
            assert_eq!(check.status, status, "{seconds}s: {check:?}");
            assert_eq!(check.fix.is_some(), status != Status::Ok);
        }
        assert!(judge_skew("x", Duration::seconds(-90)).detail.contains("90s behind"));
        assert!(judge_skew("x", Duration::seconds(400)).detail.contains("400s ahead of"));
    }

    #[test]
    fn scope_rights() {
        let all = strings(&["pwdLastSet", "userAccountControl"]);
        let some = strings(&["userAccountControl"]);
        let more = strings(&["lockoutTime", "pwdLastSet", "userAccountControl", "description"]);
        let rights = |dn, writable| Rights { dn, writable };
        let scope = "OU=Staff,DC=x";

        let check = judge_scope(scope, "svc", Some(&[rights("CN=a", &all), rights("CN=b", &all)]));
        assert_eq!(check.status, Status::Ok, "{check:?}");
        assert!(check.detail.contains("on all 2 user account(s)"));

        let check = judge_scope(scope, "svc", Some(&[rights("CN=a", &all), rights("CN=b", &some)]));
        assert_eq!(check.status, Status::Fail);
        assert!(check.detail.contains("cannot write pwdLastSet on 1 of 2 user account(s) (CN=b)"), "{}", check.detail);

        let check = judge_scope(scope, "svc", Some(&[rights("CN=a", &[])]));
        assert!(check.detail.contains("cannot write userAccountControl, pwdLastSet "), "{}", check.detail);

        let check = judge_scope(scope, "svc", Some(&[rights("CN=a", &more)]));
        assert_eq!(check.status, Status::Warn);
        assert!(check.detail.contains("and also description, lockoutTime: more than"), "{}", check.detail);

        assert_eq!(judge_scope(scope, "svc", Some(&[])).status, Status::Warn);
        assert_eq!(judge_scope(scope, "svc", None).status, Status::Fail);
    }

    #[test]
    fn rights_on_protected_accounts_are_findings() {
        let needed = strings(&["lockoutTime", "pwdLastSet", "userAccountControl"]);
        let personal = strings(&["telephoneNumber", "mobile"]);
        let protected =
            |dn, writable| Protected { rights: Rights { dn, writable }, why: "member of Domain Admins".into() };
        let check = judge_protected("DC=x", "svc", &[protected("CN=self", &personal)]);
        assert_eq!(check.status, Status::Ok, "{check:?}");
        let check = judge_protected("DC=x", "svc", &[protected("CN=self", &personal), protected("CN=alice", &needed)]);
        assert_eq!(check.status, Status::Warn);
        assert!(
            check
                .detail
                .contains("CN=alice (member of Domain Admins): can write userAccountControl, pwdLastSet, lockoutTime"),
            "{}",
            check.detail
        );
        assert!(!check.detail.contains("CN=self"));
    }

    #[test]
    fn graph_permissions() {
        let all = strings(&[
            "User.ReadWrite.All",
            "User.RevokeSessions.All",
            "IdentityRiskyUser.Read.All",
            "IdentityRiskyUser.ReadWrite.All",
        ]);
        assert_eq!(judge_permissions("app", Some(&all)).status, Status::Ok);
        let check = judge_permissions("app", Some(&all[1..]));
        assert_eq!(check.status, Status::Fail);
        assert!(
            check
                .detail
                .starts_with("the token lacks User.ReadWrite.All (to read users and suspend them); it grants: "),
            "{}",
            check.detail
        );
        assert!(check.fix.unwrap().contains("add User.ReadWrite.All, then"));
        // User.ReadWrite.All allows revoking sessions too.
        assert_eq!(
            judge_permissions("app", Some(&strings(&["User.ReadWrite.All", "IdentityRiskyUser.ReadWrite.All"]))).status,
            Status::Ok
        );
        let check = judge_permissions("app", Some(&all[..2]));
        assert_eq!(check.status, Status::Warn);
        assert!(check.detail.contains("lacks IdentityRiskyUser.Read.All (to read risk), IdentityRiskyUser.ReadWrite.All (to confirm compromised)"), "{}", check.detail);
        let check = judge_permissions("app", Some(&[]));
        assert_eq!(check.status, Status::Fail);
        assert!(check.detail.ends_with("it grants: none"), "{}", check.detail);
        assert_eq!(check.fix.unwrap(), "in the app registration, API permissions → Add a permission → Microsoft Graph → Application permissions: add User.ReadWrite.All, User.RevokeSessions.All, then Grant admin consent");
        assert_eq!(judge_permissions("app", None).status, Status::Warn);
    }

    #[test]
    fn text_has_one_line_per_check_and_the_fix_below_those_not_ok() {
        let checks = [
            Check::ok("dc.connect", "ldaps://dc1", "fine"),
            Check::fail("dc.bind", "ldaps://dc2", "invalid credentials", "check passwordFile"),
        ];
        let text = render_text(&checks);
        assert_eq!(
            text,
            "ok    dc.connect  ldaps://dc1: fine\n\
             fail  dc.bind     ldaps://dc2: invalid credentials\n      \
             fix: check passwordFile\n\
             1 ok, 0 warning(s), 1 failed\n"
        );
        assert!(any_failed(&checks));
        assert!(!any_failed(&checks[..1]));
    }
}
