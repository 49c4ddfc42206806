//! Kerberos (SASL GSSAPI) binds from a keytab: no password file.
//!
//! MIT krb5 does the ticket work. With `KRB5_CLIENT_KTNAME` naming the keytab, acquiring the
//! principal's credentials gets a ticket-granting ticket from the keytab when the ticket cache has
//! none or only an expired one, and gets a new one once half of its lifetime has passed (MIT's
//! client keytab initiation, krb5 1.11 and later). remedy's ticket cache is in memory
//! ([`CCACHE`]): nothing is written to disk, the operator's own tickets (`KRB5CCNAME`) are never
//! used, and a restarted remedy starts from the keytab. Every bind acquires the credentials again,
//! so a connection opened after the ticket expired is bound with a new one; the pool also reopens
//! a connection before the ticket it was bound with runs out (see [`Credentials::renew_after`]).
//!
//! The variables are the process's environment, which threads read without a lock: they are set
//! by [`prepare_process`] before the command starts its runtime, and only checked afterwards.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cross_krb5::{ClientCtx, Cred, InitiateFlags, K5Cred};
use remedy_policies::config::ActiveDirectoryConfig;

use super::error::AdError;

/// remedy's own ticket cache: in the process's memory.
pub const CCACHE: &str = "MEMORY:remedy";

/// MIT krb5's error codes (`krb5_err.h`, `k5e1_err.h`) that remedy explains.
const KRB5_KDC_UNREACH: i32 = -1765328228;
const KRB5_REALM_CANT_RESOLVE: i32 = -1765328164;
const KRB5KDC_ERR_PREAUTH_FAILED: i32 = -1765328360;
const KRB5KRB_AP_ERR_BAD_INTEGRITY: i32 = -1765328353;
const KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN: i32 = -1765328378;
const KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN: i32 = -1765328377;
const KRB5KRB_AP_ERR_SKEW: i32 = -1765328347;
const KRB5KDC_ERR_CLIENT_REVOKED: i32 = -1765328366;
const KRB5_CC_NOTFOUND: i32 = -1765328243;

/// A Kerberos bind's settings: who, from which keytab, to which DC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kerberos {
    pub principal: String,
    pub keytab: PathBuf,
    pub krb5_config: Option<PathBuf>,
    /// The DC's DNS name: the service ticket is for `ldap/<host>` (the pool sets the name of the DC
    /// each bind connects to).
    pub host: String,
}

/// Credentials for one bind, and when the connection bound with them should be reopened.
pub struct Credentials {
    pub cred: Cred,
    /// Nine tenths of the ticket's remaining lifetime: past it, the pool binds a new connection
    /// rather than wait for a DC that ends sessions when their ticket expires (Samba does).
    pub renew_after: Duration,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("renew_after", &self.renew_after).finish_non_exhaustive()
    }
}

impl Kerberos {
    /// The settings of `activeDirectory.kerberos`, paths resolved against `config_dir`; `None` for
    /// a simple bind. The keytab must be readable now: a missing one is a configuration error.
    pub fn from_config(config: &ActiveDirectoryConfig, config_dir: &Path) -> Result<Option<Kerberos>, AdError> {
        let Some(kerberos) = &config.kerberos else { return Ok(None) };
        let resolve = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { config_dir.join(p) };
        let keytab = resolve(&kerberos.keytab);
        if let Err(error) = std::fs::File::open(&keytab) {
            return Err(AdError::Config(format!(
                "cannot read the keytab {} of {}: {error}",
                keytab.display(),
                kerberos.principal
            )));
        }
        let krb5_config = kerberos.krb5_config.as_deref().map(resolve);
        if let Some(path) = &krb5_config {
            if let Err(error) = std::fs::File::open(path) {
                return Err(AdError::Config(format!(
                    "cannot read the Kerberos configuration {}: {error}",
                    path.display()
                )));
            }
        }
        // The first DC's name; each bind asks for the ticket of the DC it connects to.
        let mut host = String::new();
        for url in config.dc_urls() {
            let name = remedy_policies::config::url_host(url);
            if name.is_empty() || name.parse::<std::net::IpAddr>().is_ok() {
                return Err(AdError::Config(format!(
                    "a kerberos bind needs the DC's DNS name in the url (its service principal is ldap/<name>), not {url:?}"
                )));
            }
            if host.is_empty() {
                host = name.to_owned();
            }
        }
        Ok(Some(Kerberos { principal: kerberos.principal.clone(), keytab, krb5_config, host }))
    }

    /// The environment MIT krb5 reads, as this bind needs it.
    fn environment(&self) -> Vec<(&'static str, OsString)> {
        let mut keytab = OsString::from("FILE:");
        keytab.push(self.keytab.as_os_str());
        let mut variables = vec![("KRB5_CLIENT_KTNAME", keytab), ("KRB5CCNAME", OsString::from(CCACHE))];
        if let Some(path) = &self.krb5_config {
            variables.push(("KRB5_CONFIG", path.as_os_str().to_owned()));
        }
        variables
    }

    /// Whether the process's environment is the one [`prepare_process`] sets for this bind.
    pub fn environment_is_set(&self) -> bool {
        self.environment().iter().all(|(name, value)| std::env::var_os(name).as_ref() == Some(value))
    }

    /// Acquires the principal's credentials, getting or refreshing the ticket from the keytab as
    /// needed, and the service ticket for the DC, so that the bind itself needs no KDC. Blocking
    /// (the KDC is asked over the network): call it off the async runtime's threads.
    pub fn credentials(&self) -> Result<Credentials, AdError> {
        if !self.environment_is_set() {
            return Err(AdError::Config(
                "the Kerberos environment of this process was not prepared for the keytab bind (remedy::ad::kerberos::prepare_process)".into(),
            ));
        }
        let spn = format!("ldap/{}", self.host);
        let acquire = || Cred::client_acquire(InitiateFlags::empty(), Some(&self.principal));
        let warm = acquire().map_err(|e| self.error(&e, None))?;
        ClientCtx::new_with_cred(warm, &spn, None).map_err(|e| self.error(&e, Some(&spn)))?;
        let cred = acquire().map_err(|e| self.error(&e, None))?;
        let gss: libgssapi::credential::Cred = cred.into();
        let lifetime = gss.lifetime().map_err(|e| self.error(&anyhow::Error::new(e), None))?;
        Ok(Credentials { cred: Cred::from(gss), renew_after: lifetime * 9 / 10 })
    }

    fn error(&self, error: &anyhow::Error, spn: Option<&str>) -> AdError {
        let minor = error.chain().find_map(|e| e.downcast_ref::<libgssapi::error::Error>()).map(|e| e.minor as i32);
        let keytab = self.keytab.display();
        let principal = &self.principal;
        let hint = match minor {
            Some(KRB5_KDC_UNREACH) => String::new(),
            Some(KRB5_REALM_CANT_RESOLVE) => {
                " (the realm's KDCs are not found: name them in krb5.conf's [realms] or publish _kerberos._tcp SRV records)".into()
            }
            Some(KRB5KDC_ERR_PREAUTH_FAILED | KRB5KRB_AP_ERR_BAD_INTEGRITY) => format!(
                " (the keytab's key is not the account's: export the keytab again after a password change, or keep it current with gmsad (a gMSA) or msktutil; `klist -k {keytab}` shows its key versions)"
            ),
            Some(KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN) => format!(" (the KDC knows no {principal}: check kerberos.principal)"),
            Some(KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN) => format!(
                " (the KDC knows no {}: the url must name the DC by the DNS name its servicePrincipalName carries)",
                spn.unwrap_or("service principal")
            ),
            Some(KRB5KRB_AP_ERR_SKEW) => " (this host's clock is more than 5 minutes from the DC's: keep it in sync, e.g. with chrony against the DCs)".into(),
            Some(KRB5KDC_ERR_CLIENT_REVOKED) => format!(" ({principal} is disabled, locked out or expired)"),
            // No key for the principal in the keytab: MIT then looks in the ticket cache, which has
            // none either.
            Some(KRB5_CC_NOTFOUND) => {
                format!(" (the keytab holds no key for {principal}: `klist -k {keytab}` lists the principals it holds)")
            }
            _ => String::new(),
        };
        AdError::Kerberos {
            principal: self.principal.clone(),
            message: format!("{error:#}{hint}"),
            transient: minor == Some(KRB5_KDC_UNREACH),
        }
    }
}

/// Points MIT krb5 at the keytab bind's keytab, remedy's in-memory ticket cache and, when
/// configured, its krb5.conf (otherwise `KRB5_CONFIG`, else `/etc/krb5.conf`, is used), and
/// returns the bind's settings (`None` for a simple bind). The commands call it before they start
/// threads, since the Kerberos library reads the environment without a lock; the provider calls it
/// again when it connects, which then changes nothing.
pub fn prepare_process(config: &ActiveDirectoryConfig, config_dir: &Path) -> Result<Option<Kerberos>, AdError> {
    let Some(kerberos) = Kerberos::from_config(config, config_dir)? else { return Ok(None) };
    for (name, value) in kerberos.environment() {
        if std::env::var_os(name).as_ref() != Some(&value) {
            std::env::set_var(name, value);
        }
    }
    Ok(Some(kerberos))
}
