//! [`LdapDirectory`]: the Active Directory provider over LDAP.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use ldap3::adapters::{Adapter, PagedResults};
use ldap3::{
    LdapConnSettings, LdapError, Mod, ResultEntry, Scope, SearchEntry, SearchOptions, SearchResult, SearchStream,
};
use remedy_policies::action::Provider;
use remedy_policies::config::ActiveDirectoryConfig;
use remedy_policies::observed::{uac, AdAccount, AdGroup, PasswordLastSet, ProviderView};
use remedy_policies::privilege::{self, GroupName};
use remedy_policies::{Action, Identity};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::codec::{escape_filter_bytes, escape_filter_value, sid_from_bytes, sid_to_bytes};
use super::entry::{account_from_entry, raw_values, texts, ATTRIBUTES};
use super::error::AdError;
use super::pool::{Bind, Lease, Pool, Target};
use super::resolve::{guids_filter, resolve, users_filter, CHUNK_SIZE};
use super::{tls, AdChange, AdDirectory};
use crate::secret::Secret;

/// Counters since the provider was created (tests and the benchmark read them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdStats {
    /// Connections opened and bound (the first one included).
    pub connects: u64,
    /// Search operations for observations (one per chunk of identities), not counting pages.
    pub searches: u64,
    /// Result pages received by those searches.
    pub pages: u64,
    /// Entries those searches returned.
    pub entries: u64,
    /// Modify operations sent.
    pub modifies: u64,
    /// Times the connections moved to another DC (several DCs configured).
    pub dc_switches: u64,
}

impl std::ops::Add for AdStats {
    type Output = AdStats;

    /// Two clients' counters together (the pool's and the change watcher's).
    fn add(self, other: AdStats) -> AdStats {
        AdStats {
            connects: self.connects + other.connects,
            searches: self.searches + other.searches,
            pages: self.pages + other.pages,
            entries: self.entries + other.entries,
            modifies: self.modifies + other.modifies,
            dc_switches: self.dc_switches + other.dc_switches,
        }
    }
}

/// The Active Directory provider: a pool of bound LDAP connections to one DC.
#[derive(Debug)]
pub struct LdapDirectory {
    inner: Arc<Inner>,
    /// `guardrails.protectedGroups`: looked up with the AdminSDHolder set.
    protected_groups: Vec<String>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) pool: Arc<Pool>,
    pub(super) base_dn: String,
    page_size: usize,
    connections: usize,
    chunk_size: AtomicUsize,
    pages: Arc<AtomicU64>,
    read_backs: Mutex<ReadBacks>,
    /// The DC's default naming context (the domain's root DN), read once: protected groups live
    /// there (CN=Users, CN=Builtin), whatever `baseDn` narrows the user search to.
    naming_context: tokio::sync::OnceCell<String>,
}

/// Accounts waiting to be read back after a write; see [`Inner::read_back`].
#[derive(Debug, Default)]
struct ReadBacks {
    waiting: Vec<ReadBack>,
    flushing: bool,
}

#[derive(Debug)]
struct ReadBack {
    guid: Uuid,
    dn: String,
    reply: oneshot::Sender<Result<(String, AdAccount), AdError>>,
}

/// Connection settings derived from the configuration, paths resolved.
pub(super) fn target(config: &ActiveDirectoryConfig, config_dir: &Path) -> Result<Target, AdError> {
    let resolve_path = |p: &str| -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_owned()
        } else {
            config_dir.join(path)
        }
    };
    let urls: Vec<String> = config.dc_urls().into_iter().map(str::to_owned).collect();
    if urls.is_empty() {
        return Err(AdError::Config("name the DC: activeDirectory.url or activeDirectory.domainControllers".into()));
    }
    let mut all_ldaps = true;
    for url in &urls {
        let lower = url.to_ascii_lowercase();
        let ldaps = lower.starts_with("ldaps://");
        if !ldaps && !lower.starts_with("ldap://") {
            return Err(AdError::Config(format!("url {url:?} must start with ldaps:// or ldap://")));
        }
        if ldaps && config.start_tls {
            return Err(AdError::Config("startTls is for ldap:// URLs; ldaps:// is TLS already".into()));
        }
        all_ldaps &= ldaps;
    }
    let url = config.dc_list();
    let tls = all_ldaps || config.start_tls;
    // Checked again here (config validation does it too): a provider built from an unvalidated
    // configuration must not send the password in clear either. Kerberos seals plain LDAP.
    if !tls && !config.allow_insecure && config.kerberos.is_none() {
        return Err(AdError::Config(
            "plain ldap:// sends the action account's password in clear: use ldaps://, or startTls: true, or write allowInsecure: true to accept it".into(),
        ));
    }
    let bind = match (super::kerberos::prepare_process(config, config_dir)?, &config.password_file) {
        (Some(kerberos), _) => Bind::Kerberos(kerberos),
        (None, Some(file)) => Bind::Simple {
            user: config.bind_user.clone(),
            password: Secret::from_file(&resolve_path(file)).map_err(|e| AdError::Config(e.to_string()))?,
        },
        (None, None) => {
            return Err(AdError::Config(
                "say how the action account binds: passwordFile (a simple bind) or kerberos (a keytab)".into(),
            ))
        }
    };
    let ca_file = config.ca_file.as_deref().map(resolve_path);
    let mut settings = LdapConnSettings::new().set_conn_timeout(config.connect_timeout);
    if tls {
        settings = settings.set_starttls(config.start_tls);
        if config.allow_insecure && ca_file.is_none() {
            tls::install_crypto_provider();
            settings = settings.set_no_tls_verify(true);
        } else {
            settings = settings.set_config(tls::client_config(ca_file.as_deref())?);
        }
    }
    if config.allow_insecure {
        if !tls && config.kerberos.is_some() {
            tracing::warn!(url = %url, "activeDirectory.allowInsecure is set but has no effect: the kerberos bind signs and seals plain LDAP");
        } else if !tls {
            tracing::warn!(url = %url, "activeDirectory.allowInsecure: plain LDAP without TLS; the action account's password and every change cross the network in clear");
        } else if ca_file.is_none() {
            tracing::warn!(url = %url, "activeDirectory.allowInsecure: TLS without certificate verification; anyone on the path can impersonate the DC");
        } else {
            tracing::warn!(url = %url, "activeDirectory.allowInsecure is set but has no effect: TLS is verified against caFile");
        }
    }
    Ok(Target {
        urls,
        return_after: config.return_after,
        settings,
        bind,
        connect_timeout: config.connect_timeout,
        operation_timeout: config.operation_timeout,
        ca_file,
    })
}

impl LdapDirectory {
    /// Connects to the DC the configuration names and opens the pool's connections, each bound,
    /// so that a wrong URL, CA, password or a DC that is down shows at once. Relative file paths
    /// (caFile, passwordFile) are relative to `config_dir`. Connections the DC drops later are
    /// reopened on demand.
    pub async fn connect(config: &ActiveDirectoryConfig, config_dir: &Path) -> Result<Self, AdError> {
        let target = target(config, config_dir)?;
        let inner = Inner::new(target, config, config.connections);
        // The first connection alone: a wrong password fails once, not once per connection.
        drop(inner.pool.lease().await?);
        let others = (1..inner.connections).map(|_| inner.pool.lease());
        drop(futures::future::try_join_all(others).await?);
        let url = inner.pool.current_url();
        tracing::info!(url = %url, bind_user = %config.bind_user, bind = if config.kerberos.is_some() { "kerberos" } else { "simple" }, base_dn = %config.base_dn, connections = inner.connections, "connected to Active Directory");
        Ok(LdapDirectory { inner: Arc::new(inner), protected_groups: Vec::new() })
    }

    /// The URL of the DC in use (the most preferred one before any connection).
    pub fn current_dc(&self) -> String {
        self.inner.pool.current_url()
    }

    /// Also protects the members of these groups (`guardrails.protectedGroups`: SIDs, DNs or
    /// names), beside the AdminSDHolder set, which is always read.
    pub fn with_protected_groups(self, groups: &[String]) -> Self {
        LdapDirectory { protected_groups: groups.to_vec(), ..self }
    }

    /// Identities per search (default [`CHUNK_SIZE`]); for tests and benchmarks.
    pub fn with_chunk_size(self, chunk_size: usize) -> Self {
        self.inner.chunk_size.store(chunk_size.max(1), Ordering::Relaxed);
        self
    }

    pub fn stats(&self) -> AdStats {
        self.inner.stats()
    }

    pub(super) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// `guardrails.protectedGroups`, as given to [`LdapDirectory::with_protected_groups`].
    pub(super) fn configured_protected_groups(&self) -> &[String] {
        &self.protected_groups
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    pub(super) fn stats(&self) -> AdStats {
        let counters = &self.pool.counters;
        AdStats {
            connects: counters.connects.load(Ordering::Relaxed),
            searches: counters.searches.load(Ordering::Relaxed),
            pages: self.pages.load(Ordering::Relaxed),
            entries: counters.entries.load(Ordering::Relaxed),
            modifies: counters.modifies.load(Ordering::Relaxed),
            dc_switches: counters.switches.load(Ordering::Relaxed),
        }
    }

    /// Counts one search request of one page (a base read, a notification registration).
    pub(super) fn count_search(&self) {
        self.pool.counters.searches.fetch_add(1, Ordering::Relaxed);
        self.pages.fetch_add(1, Ordering::Relaxed);
    }

    /// A pool of `connections` to the target, none opened yet.
    pub(super) fn new(target: Target, config: &ActiveDirectoryConfig, connections: usize) -> Inner {
        Inner {
            pool: Arc::new(Pool::new(target, connections)),
            base_dn: config.base_dn.clone(),
            page_size: config.page_size.clamp(1, i32::MAX as usize),
            connections: connections.max(1),
            chunk_size: AtomicUsize::new(CHUNK_SIZE),
            pages: Arc::new(AtomicU64::new(0)),
            read_backs: Mutex::new(ReadBacks::default()),
            naming_context: tokio::sync::OnceCell::new(),
        }
    }

    /// One search for user accounts below the base DN. When at most `expected` entries can match
    /// and they fit in one page, it is a single request with the page size as size limit (Samba's
    /// paged-results control costs it about twice the work per entry); should the DC answer
    /// sizeLimitExceeded, or when more can match, the search is paged.
    async fn search_users(&self, filter: String, expected: usize) -> Result<Vec<AdAccount>, AdError> {
        self.search_users_at(filter, expected).await.map(|(_, accounts)| accounts)
    }

    /// [`Inner::search_users`], with the URL of the DC that answered.
    async fn search_users_at(&self, filter: String, expected: usize) -> Result<(String, Vec<AdAccount>), AdError> {
        let base = self.base_dn.as_str();
        let page_size = self.page_size;
        let timeout = self.pool.target.operation_timeout;
        let mut lease = self.pool.lease().await?;
        let dc = lease.dc().unwrap_or_default().to_owned();
        self.pool.counters.searches.fetch_add(1, Ordering::Relaxed);
        if expected <= page_size {
            let filter = filter.as_str();
            let single = lease
                .run("search", Some(base), |mut ldap| async move {
                    let SearchResult(entries, result) = ldap
                        .with_timeout(timeout)
                        .with_search_options(SearchOptions::new().sizelimit(page_size as i32))
                        .search(base, Scope::Subtree, filter, ATTRIBUTES.to_vec())
                        .await?;
                    match result.rc {
                        0 => Ok(Some(entries)),
                        4 => Ok(None),
                        _ => Err(LdapError::from(result)),
                    }
                })
                .await?;
            self.pages.fetch_add(1, Ordering::Relaxed);
            match single {
                Some(entries) => return Ok((dc, self.decode(entries)?)),
                None => tracing::debug!(page_size, "more entries than fit in one page: searching again with paging"),
            }
        }
        let entries = self.paged_on(&mut lease, base, &filter, &ATTRIBUTES).await?;
        Ok((dc, self.decode(entries)?))
    }

    /// A paged subtree search of any objects (entries only; continuation references skipped).
    pub(super) async fn search_paged(
        &self,
        base: &str,
        filter: &str,
        attributes: &[&str],
    ) -> Result<Vec<SearchEntry>, AdError> {
        let mut lease = self.pool.lease().await?;
        self.pool.counters.searches.fetch_add(1, Ordering::Relaxed);
        let entries = self.paged_on(&mut lease, base, filter, attributes).await?;
        self.pool.counters.entries.fetch_add(entries.len() as u64, Ordering::Relaxed);
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    /// A subtree search with the paged-results control on a leased connection, every page read;
    /// continuation references (other partitions below a domain root) are skipped.
    async fn paged_on(
        &self,
        lease: &mut Lease<'_>,
        base: &str,
        filter: &str,
        attributes: &[&str],
    ) -> Result<Vec<ResultEntry>, AdError> {
        let page_size = self.page_size;
        let timeout = self.pool.target.operation_timeout;
        let pages = self.pages.clone();
        lease
            .run("search", Some(base), |mut ldap| async move {
                let adapters: Vec<Box<dyn Adapter<'_, &str, Vec<&str>>>> =
                    vec![Box::new(PagedResults::new(page_size as i32)), Box::new(PageCounter(pages))];
                let mut stream = ldap
                    .with_timeout(timeout)
                    .streaming_search_with(adapters, base, Scope::Subtree, filter, attributes.to_vec())
                    .await?;
                let mut entries = Vec::new();
                while let Some(entry) = stream.next().await? {
                    if !entry.is_ref() && !entry.is_intermediate() {
                        entries.push(entry);
                    }
                }
                stream.finish().await.success()?;
                Ok(entries)
            })
            .await
    }

    /// The domain's root DN, from the rootDSE's `defaultNamingContext` (read once).
    pub(super) async fn naming_context(&self) -> Result<&str, AdError> {
        let context = self
            .naming_context
            .get_or_try_init(|| async {
                let timeout = self.pool.target.operation_timeout;
                let mut lease = self.pool.lease().await?;
                let entries = lease
                    .run("search", Some(""), |mut ldap| async move {
                        let SearchResult(entries, result) = ldap
                            .with_timeout(timeout)
                            .search("", Scope::Base, "(objectClass=*)", vec!["defaultNamingContext"])
                            .await?;
                        result.success().map(|_| entries)
                    })
                    .await?;
                entries
                    .into_iter()
                    .map(SearchEntry::construct)
                    .find_map(|entry| entry.attrs.get("defaultNamingContext").and_then(|v| v.first().cloned()))
                    .ok_or_else(|| AdError::Decode {
                        dn: String::new(),
                        attribute: "defaultNamingContext",
                        message: "the rootDSE does not name the domain's naming context".to_owned(),
                    })
            })
            .await?;
        Ok(context)
    }

    /// The protected groups of the accounts' domains (the AdminSDHolder set by SID, and the
    /// configured ones) and every group nested in them at any depth, each with its direct
    /// `memberOf`: two searches, whatever the number of accounts. None for no account.
    async fn privileged_groups(&self, accounts: &[&AdAccount], configured: &[String]) -> Result<Vec<AdGroup>, AdError> {
        let mut domains: Vec<&str> = accounts.iter().filter_map(|a| privilege::domain_sid(&a.object_sid)).collect();
        domains.sort_unstable();
        domains.dedup();
        self.privileged_groups_of(&domains, configured).await
    }

    /// The protected groups of these domains (by domain SID) and every group nested in them: see
    /// [`Inner::privileged_groups`]. None for no domain.
    pub(super) async fn privileged_groups_of(
        &self,
        domains: &[&str],
        configured: &[String],
    ) -> Result<Vec<AdGroup>, AdError> {
        if domains.is_empty() {
            return Ok(Vec::new());
        }
        let base = self.naming_context().await?.to_owned();
        let roots = self.search_paged(&base, &protected_groups_filter(domains, configured), &GROUP_ATTRIBUTES).await?;
        let mut groups = roots.iter().map(group_from_entry).collect::<Result<Vec<_>, _>>()?;
        if !groups.is_empty() {
            let nested: String =
                groups.iter().map(|g| format!("(memberOf:{IN_CHAIN}:={})", escape_filter_value(&g.dn))).collect();
            let filter = format!("(&(objectClass=group)(|{nested}))");
            for entry in self.search_paged(&base, &filter, &GROUP_ATTRIBUTES).await? {
                let group = group_from_entry(&entry)?;
                if !groups.iter().any(|g| g.dn.eq_ignore_ascii_case(&group.dn)) {
                    groups.push(group);
                }
            }
        }
        groups.sort_by(|a, b| a.dn.cmp(&b.dn));
        tracing::debug!(groups = groups.len(), "read the protected groups and the groups nested in them");
        Ok(groups)
    }

    fn decode(&self, entries: Vec<ResultEntry>) -> Result<Vec<AdAccount>, AdError> {
        self.pool.counters.entries.fetch_add(entries.len() as u64, Ordering::Relaxed);
        entries.into_iter().map(|entry| account_from_entry(&SearchEntry::construct(entry))).collect()
    }

    /// Reads an account back after a write. Read-backs of concurrent writes are coalesced: one
    /// flush task at a time reads every account waiting, by objectGUID, in one search per chunk,
    /// so that a batch of writes costs the DC one read per chunk rather than one per account.
    /// The answer names the DC it was read from.
    async fn read_back(self: &Arc<Self>, guid: Uuid, dn: &str) -> Result<(String, AdAccount), AdError> {
        let (reply, answer) = oneshot::channel();
        let start_flush = {
            let mut read_backs = lock(&self.read_backs);
            read_backs.waiting.push(ReadBack { guid, dn: dn.to_owned(), reply });
            !std::mem::replace(&mut read_backs.flushing, true)
        };
        if start_flush {
            // A task of its own: a caller that gives up must not strand the others' reads.
            tokio::spawn(self.clone().flush_read_backs());
        }
        answer.await.unwrap_or_else(|_| {
            Err(AdError::Connection { url: self.pool.current_url(), message: "the read-back was abandoned".into() })
        })
    }

    async fn flush_read_backs(self: Arc<Self>) {
        loop {
            let batch: Vec<ReadBack> = {
                let mut read_backs = lock(&self.read_backs);
                if read_backs.waiting.is_empty() {
                    read_backs.flushing = false;
                    return;
                }
                let take = read_backs.waiting.len().min(self.chunk_size.load(Ordering::Relaxed));
                read_backs.waiting.drain(..take).collect()
            };
            let filter = guids_filter(batch.iter().map(|r| &r.guid));
            match self.search_users_at(filter, batch.len()).await {
                Ok((dc, accounts)) => {
                    for read in batch {
                        let account = accounts.iter().find(|a| a.object_guid == read.guid).cloned();
                        let _ = read.reply.send(account.map(|a| (dc.clone(), a)).ok_or_else(|| AdError::Decode {
                            dn: read.dn,
                            attribute: "objectGUID",
                            message: "the account is no longer a user below the base DN".into(),
                        }));
                    }
                }
                Err(error) => {
                    for read in batch {
                        let _ = read.reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    async fn modify_on(&self, lease: &mut Lease<'_>, dn: &str, mods: Vec<Mod<String>>) -> Result<(), AdError> {
        let timeout = self.pool.target.operation_timeout;
        self.pool.counters.modifies.fetch_add(1, Ordering::Relaxed);
        lease
            .run(
                "modify",
                Some(dn),
                |mut ldap| async move { ldap.with_timeout(timeout).modify(dn, mods).await?.success() },
            )
            .await?;
        Ok(())
    }

    async fn apply_inner(
        self: &Arc<Self>,
        before: &AdAccount,
        action: Action,
        now: DateTime<Utc>,
    ) -> Result<AdChange, AdError> {
        if action.provider() != Provider::ActiveDirectory {
            return Err(AdError::NotAnAdAction(action));
        }
        let mut expected = before.clone();
        action.apply_to_ad(&mut expected, now);
        let dn = before.dn.as_str();
        let mut lease = self.pool.lease().await.map_err(|error| AdError::NotSent(Box::new(error)))?;
        let written_to = lease.dc().unwrap_or_default().to_owned();
        match action {
            Action::ForcePasswordChange | Action::CancelForcedPasswordChange => {
                // pwdLastSet takes only 0 (must change) and -1 (now); a plain replace is idempotent.
                let value = if action == Action::ForcePasswordChange { "0" } else { "-1" };
                let mods = vec![Mod::Replace("pwdLastSet".to_owned(), HashSet::from([value.to_owned()]))];
                self.modify_on(&mut lease, dn, mods).await?;
            }
            _ if expected.user_account_control != before.user_account_control => {
                // Conditional write: delete the value read, add the new one, in one modify. If
                // the account changed since it was read, the delete finds nothing (16) and the
                // DC applies neither half. (Samba also accepts it when the value already equals
                // the new one: nothing is overwritten then either.)
                let old = (before.user_account_control as i32).to_string();
                let new = (expected.user_account_control as i32).to_string();
                let mods = vec![
                    Mod::Delete("userAccountControl".to_owned(), HashSet::from([old.clone()])),
                    Mod::Add("userAccountControl".to_owned(), HashSet::from([new])),
                ];
                match self.modify_on(&mut lease, dn, mods).await {
                    Err(AdError::Ldap { code: 16, message, .. }) => {
                        return Err(AdError::ConcurrentChange {
                            dn: dn.to_owned(),
                            attribute: "userAccountControl",
                            expected: old,
                            message,
                        });
                    }
                    other => other?,
                }
            }
            // Already as wanted: nothing to write, the read-back below still checks it.
            _ => {}
        }
        // The connection goes back before waiting for the read-back, which needs one too.
        drop(lease);
        let (read_from, after) = self.read_back(before.object_guid, dn).await?;
        // Read-your-writes: the read-back goes to the DC in use, which is the one written to
        // unless it failed in between. Another DC that does not show the write yet has not
        // replicated it (or the first never applied it): unconfirmed, not failed.
        if let Err(not_effective) = verify(action, &expected, &after) {
            if read_from != written_to {
                tracing::warn!(dn = %dn, action = %action, written_to = %written_to, read_from = %read_from, "the write is not visible on the DC in use yet");
                return Err(AdError::Unconfirmed { dn: dn.to_owned(), action, written_to, read_from });
            }
            return Err(not_effective);
        }
        Ok(AdChange { before: before.clone(), after, dc: written_to })
    }
}

/// Compares the account read back after an action with what the action should have produced
/// ([`Action::apply_to_ad`] on the account as it was). A success code is not proof: a DC accepts
/// `pwdLastSet=0` on a password-never-expires account and ignores it.
pub fn verify(action: Action, expected: &AdAccount, after: &AdAccount) -> Result<(), AdError> {
    let mut reasons = Vec::new();
    if after.user_account_control != expected.user_account_control {
        reasons.push(format!(
            "userAccountControl reads back {} ({:#x}), expected {} ({:#x})",
            after.user_account_control,
            after.user_account_control,
            expected.user_account_control,
            expected.user_account_control
        ));
    }
    let expired = |a: &AdAccount| a.user_account_control_computed & uac::PASSWORD_EXPIRED != 0;
    match action {
        Action::ForcePasswordChange if !after.password_change_pending() => {
            if after.password_never_expires() {
                reasons.push(format!(
                    "pwdLastSet reads back {} but msDS-User-Account-Control-Computed is {:#x}, without UF_PASSWORD_EXPIRED (0x800000): \
                     the account has DONT_EXPIRE_PASSWORD (password never expires, userAccountControl {}), so the DC ignores pwdLastSet=0 \
                     and the user is NOT forced to change the password; clear password-never-expires first",
                    after.pwd_last_set.to_filetime(),
                    after.user_account_control_computed,
                    after.user_account_control
                ));
            } else {
                reasons.push(format!(
                    "pwdLastSet reads back {} and msDS-User-Account-Control-Computed {:#x}: no password change is pending",
                    after.pwd_last_set.to_filetime(),
                    after.user_account_control_computed
                ));
            }
        }
        Action::CancelForcedPasswordChange if after.pwd_last_set == PasswordLastSet::Zero => {
            reasons.push("pwdLastSet still reads back 0: the forced change is still pending".to_owned());
        }
        _ if expired(after) != expired(expected) => reasons.push(format!(
            "msDS-User-Account-Control-Computed reads back {:#x}: UF_PASSWORD_EXPIRED is {}, expected {}",
            after.user_account_control_computed,
            if expired(after) { "set" } else { "clear" },
            if expired(expected) { "set" } else { "clear" }
        )),
        _ => {}
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(AdError::NotEffective { dn: after.dn.clone(), action, reason: reasons.join("; ") })
    }
}

impl AdDirectory for LdapDirectory {
    async fn observe(&self, identities: &[Identity]) -> Result<BTreeMap<Identity, ProviderView<AdAccount>>, AdError> {
        let inner = &self.inner;
        let mut unique = identities.to_vec();
        unique.sort();
        unique.dedup();
        let before = self.stats();
        // Every chunk is searched at once; the pool's permits bound how many run in parallel.
        let chunks: Vec<&[Identity]> = unique.chunks(inner.chunk_size.load(Ordering::Relaxed)).collect();
        let searches = chunks.iter().map(|chunk| inner.search_users(users_filter(chunk), chunk.len()));
        let results = futures::future::try_join_all(searches)
            .await
            .inspect_err(|error| tracing::warn!(identities = unique.len(), error = %error, "AD observation failed"))?;
        let mut views = BTreeMap::new();
        for (chunk, accounts) in chunks.iter().zip(&results) {
            views.extend(resolve(chunk, accounts));
        }
        for (identity, view) in &views {
            match view {
                ProviderView::Found(account) => tracing::trace!(identity = %identity, dn = %account.dn, "resolved"),
                ProviderView::NotFound => tracing::debug!(identity = %identity, "no AD account"),
                ProviderView::Ambiguous { candidates } => {
                    tracing::warn!(identity = %identity, candidates = ?candidates, "identity names more than one AD account")
                }
                _ => {}
            }
        }
        let after = self.stats();
        tracing::debug!(
            identities = unique.len(),
            searches = after.searches - before.searches,
            pages = after.pages - before.pages,
            "observed Active Directory"
        );
        Ok(views)
    }

    async fn privileged_groups(&self, accounts: &[&AdAccount]) -> Result<Vec<AdGroup>, AdError> {
        self.inner
            .privileged_groups(accounts, &self.protected_groups)
            .await
            .inspect_err(|error| tracing::warn!(error = %error, "cannot read the protected groups"))
    }

    async fn apply(&self, account: &AdAccount, action: Action, now: DateTime<Utc>) -> Result<AdChange, AdError> {
        let result = self.inner.apply_inner(account, action, now).await;
        match &result {
            Ok(change) => tracing::info!(
                dn = %account.dn,
                sam = %account.sam_account_name,
                action = %action,
                user_account_control = change.after.user_account_control,
                computed = change.after.user_account_control_computed,
                dc = %change.dc,
                "applied and verified"
            ),
            Err(error) => tracing::warn!(
                dn = %account.dn,
                sam = %account.sam_account_name,
                action = %action,
                result_code = error.result_code(),
                transient = error.is_transient(),
                error = %error,
                "action failed"
            ),
        }
        result
    }
}

/// LDAP_MATCHING_RULE_IN_CHAIN: `memberOf:1.2.840.113556.1.4.1941:=DN` matches members at any
/// depth of nesting.
pub(super) const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

/// What is read of a group.
pub(super) const GROUP_ATTRIBUTES: [&str; 3] = ["objectSid", "sAMAccountName", "memberOf"];

/// Groups protected in their own right: the AdminSDHolder set of each domain (by binary SID, so a
/// renamed or localized group is found) and the builtin domain, and `protectedGroups` entries by
/// SID, DN, sAMAccountName or CN.
fn protected_groups_filter(domains: &[&str], configured: &[String]) -> String {
    let sid_clause = |sid: &str| sid_to_bytes(sid).map(|bytes| format!("(objectSid={})", escape_filter_bytes(&bytes)));
    let mut clauses: Vec<String> = Vec::new();
    for domain in domains {
        clauses.extend(
            privilege::PROTECTED_DOMAIN_RIDS.iter().filter_map(|(rid, _)| sid_clause(&format!("{domain}-{rid}"))),
        );
    }
    clauses.extend(
        privilege::PROTECTED_BUILTIN_RIDS
            .iter()
            .filter_map(|(rid, _)| sid_clause(&format!("{}-{rid}", privilege::BUILTIN_DOMAIN_SID))),
    );
    for entry in configured {
        match GroupName::parse(entry) {
            GroupName::Sid(sid) => clauses.extend(sid_clause(sid)),
            GroupName::Dn(dn) => clauses.push(format!("(distinguishedName={})", escape_filter_value(dn))),
            GroupName::Name(name) => {
                let name = escape_filter_value(name);
                clauses.push(format!("(sAMAccountName={name})(cn={name})"));
            }
        }
    }
    format!("(&(objectClass=group)(|{}))", clauses.concat())
}

fn group_from_entry(entry: &SearchEntry) -> Result<AdGroup, AdError> {
    let decode_error = |attribute: &'static str, message: &str| AdError::Decode {
        dn: entry.dn.clone(),
        attribute,
        message: message.to_owned(),
    };
    let sid = raw_values(entry, "objectSid")
        .first()
        .and_then(|b| sid_from_bytes(b))
        .ok_or_else(|| decode_error("objectSid", "missing or not a binary SID"))?;
    let mut member_of = texts(entry, "memberOf");
    member_of.sort();
    Ok(AdGroup {
        dn: entry.dn.clone(),
        object_sid: sid,
        sam_account_name: texts(entry, "sAMAccountName").into_iter().next().unwrap_or_default(),
        member_of,
    })
}

/// Counts result pages: it sits after ldap3's paging adapter in the chain, which sees one end of
/// stream from it per page before asking for the next page.
#[derive(Debug, Clone)]
struct PageCounter(Arc<AtomicU64>);

#[async_trait::async_trait]
impl<'a> Adapter<'a, &'a str, Vec<&'a str>> for PageCounter {
    async fn start(
        &mut self,
        stream: &mut SearchStream<'a, &'a str, Vec<&'a str>>,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: Vec<&'a str>,
    ) -> ldap3::result::Result<()> {
        stream.start(base, scope, filter, attrs).await
    }

    async fn next(
        &mut self,
        stream: &mut SearchStream<'a, &'a str, Vec<&'a str>>,
    ) -> ldap3::result::Result<Option<ResultEntry>> {
        let item = stream.next().await?;
        if item.is_none() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        Ok(item)
    }

    async fn finish(&mut self, stream: &mut SearchStream<'a, &'a str, Vec<&'a str>>) -> ldap3::LdapResult {
        stream.finish().await
    }
}
