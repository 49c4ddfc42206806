//! The simulator's public data: its configuration (and YAML seed format), its users, the faults a test
//! can inject, and the request log. Plain data, no I/O.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a simulator is set up: the one tenant and app registration it knows, its users, and how
/// demanding it is (token lifetime, throttling, latency).
///
/// Build one with [`SimConfig::new`] and functional update (`SimConfig { users, ..SimConfig::new(..) }`),
/// or from a YAML seed with [`SimConfig::from_yaml`] (see `seed-example.yaml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimConfig {
    /// The only tenant whose token endpoint answers (`/{tenant_id}/oauth2/v2.0/token`).
    pub tenant_id: String,
    /// The only app registration (client credentials) the token endpoint knows.
    pub client_id: String,
    pub client_secret: String,
    #[serde(default)]
    pub users: Vec<SimUser>,
    /// Lifetime of issued access tokens (`expires_in`). Default 3600 s.
    #[serde(default = "default_token_lifetime", with = "duration_text")]
    pub token_lifetime: Duration,
    /// General request budget: beyond `budget` Graph requests in `window`, requests answer 429 with
    /// `Retry-After`. `None`: unlimited.
    #[serde(default)]
    pub throttle: Option<Throttle>,
    /// Added once to every Graph HTTP request (a `$batch` is one HTTP request).
    #[serde(default, with = "duration_text")]
    pub latency: Duration,
    /// Identity Protection requests (confirmCompromised, and riskyUsers reads alike) allowed per second
    /// for the tenant; beyond it 429 without `Retry-After`. Default 1, the documented limit
    /// (https://learn.microsoft.com/en-us/graph/throttling-limits). 0: no limit.
    #[serde(default = "default_confirm_compromised_per_second")]
    pub confirm_compromised_per_second: u32,
    /// Server-side page size of `GET /users` (a smaller `$top` wins). Default 100.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Run a directory sync cycle (see [`crate::Sim::run_directory_sync`]) this often. `None`: only
    /// when asked.
    #[serde(default, with = "optional_duration_text")]
    pub directory_sync_interval: Option<Duration>,
    /// How long a `/users/delta` deltaLink stays usable; older ones answer 400 `syncStateNotFound`.
    /// Default 7 days, the documented limit for directory objects
    /// (https://learn.microsoft.com/graph/delta-query-overview, "Token duration").
    #[serde(default = "default_delta_token_lifetime", with = "duration_text")]
    pub delta_token_lifetime: Duration,
    /// Replicas that lag behind writes: a read of a user or riskyUser (`GET /users/{id}`,
    /// `GET /identityProtection/riskyUsers/{id}`, alone or in `$batch`) may reach a replica that has
    /// not seen the latest write yet, and then shows the user as it was before it. The lag is drawn
    /// anew for every read, uniformly between `min` and `max`. `None`: every read sees every write.
    /// Source: https://devblogs.microsoft.com/identity/designing-for-eventual-consistency-for-microsoft-entra/
    /// ("A successful write to Microsoft Entra does not guarantee that an immediate read will
    /// reflect that change"). Assumption: lists and `/users/delta` are not lagged here.
    #[serde(default)]
    pub replica_lag: Option<ReplicaLag>,
    /// The tenant has Microsoft Entra ID P2, which the riskyUsers API needs. Without it every
    /// `/identityProtection/riskyUsers` request answers 403. Default true.
    /// Source: https://learn.microsoft.com/en-us/graph/api/riskyuser-get ("Using the riskyUsers API
    /// requires a Microsoft Entra ID P2 license").
    #[serde(default = "yes")]
    pub identity_protection_licensed: bool,
    /// The app's client secret has passed its end date: the right secret is refused with
    /// AADSTS7000222 (as every secret is, after at most two years).
    #[serde(default)]
    pub client_secret_expired: bool,
    /// Certificates uploaded to the app registration (PEM text, public part only): a client
    /// assertion signed with one of their keys and naming its thumbprint is accepted in place of
    /// the secret.
    #[serde(default)]
    pub client_certificates: Vec<String>,
    /// Federated identity credentials of the app registration: tokens from these issuers, for
    /// these subjects, are accepted as client assertions (workload identity federation).
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredential>,
    /// The application permissions granted to the app (with admin consent), as the `roles` claim
    /// of its access tokens shows them. `None` (the default): tokens are opaque random strings
    /// starting `graph-sim.` (easy to look for in logs and stores). `Some`: tokens are JWTs, as
    /// the real service issues, whose payload carries `aud`, `iss`, `tid`, `appid`, `iat`,
    /// `nbf`, `exp`, `idtyp: app` and `roles` (left out when empty: a token granting nothing has
    /// no `roles` claim). Their signature is random bytes: nothing outside the simulator may
    /// verify them, as no client of Graph should (Microsoft: treat access tokens for Graph as
    /// opaque). The simulator does not refuse requests for lack of a role.
    /// Source: https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference
    /// (`roles`: "the set of permissions ... for application permissions").
    #[serde(default)]
    pub app_roles: Option<Vec<String>>,
}

/// How far behind writes a lagging replica is (see [`SimConfig::replica_lag`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaLag {
    #[serde(default, with = "duration_text")]
    pub min: Duration,
    #[serde(with = "duration_text")]
    pub max: Duration,
}

impl ReplicaLag {
    /// Every read up to `lag` after a write misses it.
    pub fn fixed(lag: Duration) -> Self {
        ReplicaLag { min: lag, max: lag }
    }

    /// One read's lag, drawn uniformly between `min` and `max`.
    pub fn draw(&self) -> Duration {
        if self.max <= self.min {
            return self.min;
        }
        let span = u64::try_from((self.max - self.min).as_micros()).unwrap_or(u64::MAX);
        self.min + Duration::from_micros(fastrand::u64(0..=span))
    }
}

/// One federated identity credential: which external tokens stand for the app.
///
/// Source: https://learn.microsoft.com/graph/api/resources/federatedidentitycredential (`issuer`,
/// `subject`, `audiences`). Assumption: the real service fetches the issuer's signing keys from
/// its OpenID Connect discovery document (`{issuer}/.well-known/openid-configuration`, `jwks_uri`);
/// the simulator never reaches the network, so the issuer's signing certificate is configured here
/// instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FederatedCredential {
    /// The `iss` of the tokens, e.g. an AKS cluster's OIDC issuer URL.
    pub issuer: String,
    /// The `sub` of the tokens, e.g. `system:serviceaccount:remedy:remedy`.
    pub subject: String,
    /// Accepted `aud` values. Default: `api://AzureADTokenExchange`, the documented one.
    #[serde(default = "default_federated_audiences")]
    pub audiences: Vec<String>,
    /// PEM certificate of the key the issuer signs its tokens with.
    pub issuer_certificate: String,
}

impl FederatedCredential {
    /// A credential for `issuer` and `subject` with the default audience.
    pub fn new(issuer: impl Into<String>, subject: impl Into<String>, issuer_certificate: impl Into<String>) -> Self {
        FederatedCredential {
            issuer: issuer.into(),
            subject: subject.into(),
            audiences: default_federated_audiences(),
            issuer_certificate: issuer_certificate.into(),
        }
    }
}

/// The audience Entra ID expects in federated tokens.
pub const FEDERATED_AUDIENCE: &str = "api://AzureADTokenExchange";

fn default_federated_audiences() -> Vec<String> {
    vec![FEDERATED_AUDIENCE.to_owned()]
}

fn default_delta_token_lifetime() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_token_lifetime() -> Duration {
    Duration::from_secs(3600)
}

fn default_confirm_compromised_per_second() -> u32 {
    1
}

fn default_page_size() -> usize {
    100
}

impl SimConfig {
    /// A tenant with one app registration, no users and Graph's usual defaults.
    pub fn new(tenant_id: impl Into<String>, client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        SimConfig {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            users: Vec::new(),
            token_lifetime: default_token_lifetime(),
            throttle: None,
            latency: Duration::ZERO,
            confirm_compromised_per_second: default_confirm_compromised_per_second(),
            page_size: default_page_size(),
            directory_sync_interval: None,
            delta_token_lifetime: default_delta_token_lifetime(),
            replica_lag: None,
            identity_protection_licensed: true,
            client_secret_expired: false,
            client_certificates: Vec::new(),
            federated_credentials: Vec::new(),
            app_roles: None,
        }
    }

    /// Reads a YAML seed (camelCase keys, durations as `"50ms"`, `"2s"`, `"1m"`) and validates it,
    /// reporting every problem found, one per line.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let config: SimConfig = serde_yaml::from_str(text).map_err(|e| format!("invalid seed: {e}"))?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems.join("\n"))
        }
    }

    /// Everything wrong with this configuration (empty when it is usable).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, value) in
            [("tenantId", &self.tenant_id), ("clientId", &self.client_id), ("clientSecret", &self.client_secret)]
        {
            if value.trim().is_empty() {
                problems.push(format!("{name} must not be empty"));
            }
        }
        if self.page_size == 0 {
            problems.push("pageSize must be at least 1".to_owned());
        }
        if self.delta_token_lifetime.is_zero() {
            problems.push("deltaTokenLifetime must be longer than 0".to_owned());
        }
        if self.token_lifetime.is_zero() {
            problems.push("tokenLifetime must be longer than 0".to_owned());
        }
        if let Some(lag) = &self.replica_lag {
            if lag.min > lag.max {
                problems.push("replicaLag.min must not be longer than replicaLag.max".to_owned());
            }
        }
        if let Some(throttle) = &self.throttle {
            if throttle.window.is_zero() {
                problems.push("throttle.window must be longer than 0".to_owned());
            }
        }
        for (index, pem) in self.client_certificates.iter().enumerate() {
            if let Err(e) = crate::assertion::Certificate::from_pem(pem) {
                problems.push(format!("clientCertificates[{index}]: {e}"));
            }
        }
        for (index, credential) in self.federated_credentials.iter().enumerate() {
            let at = format!("federatedCredentials[{index}]");
            if credential.issuer.trim().is_empty() || credential.subject.trim().is_empty() {
                problems.push(format!("{at}: issuer and subject must not be empty"));
            }
            if credential.audiences.is_empty() {
                problems.push(format!("{at}: audiences must name at least one (api://AzureADTokenExchange)"));
            }
            if let Err(e) = crate::assertion::Certificate::from_pem(&credential.issuer_certificate) {
                problems.push(format!("{at}.issuerCertificate: {e}"));
            }
        }
        let mut ids = HashSet::new();
        let mut upns = HashSet::new();
        for (index, user) in self.users.iter().enumerate() {
            let at = format!("users[{index}] ({})", user.user_principal_name);
            if user.id.trim().is_empty() {
                problems.push(format!("{at}: id must not be empty"));
            }
            if !user.user_principal_name.contains('@') {
                problems.push(format!("{at}: userPrincipalName must look like name@domain"));
            }
            if !ids.insert(user.id.to_ascii_lowercase()) {
                problems.push(format!("{at}: duplicate id {}", user.id));
            }
            if !upns.insert(user.user_principal_name.to_ascii_lowercase()) {
                problems.push(format!("{at}: duplicate userPrincipalName"));
            }
            if !RISK_STATES.contains(&user.risk_state.as_str()) {
                problems.push(format!(
                    "{at}: riskState {:?} is not one of {}",
                    user.risk_state,
                    RISK_STATES.join(", ")
                ));
            }
            if !USER_TYPES.contains(&user.user_type.as_str()) {
                problems.push(format!("{at}: userType {:?} is not one of {}", user.user_type, USER_TYPES.join(", ")));
            }
            if !RISK_LEVELS.contains(&user.risk_level.as_str()) {
                problems.push(format!(
                    "{at}: riskLevel {:?} is not one of {}",
                    user.risk_level,
                    RISK_LEVELS.join(", ")
                ));
            }
        }
        problems
    }
}

/// riskState values of Graph's riskyUser resource.
/// Source: https://learn.microsoft.com/en-us/graph/api/resources/riskyuser
pub const RISK_STATES: &[&str] =
    &["none", "confirmedSafe", "remediated", "dismissed", "atRisk", "confirmedCompromised", "unknownFutureValue"];
/// userType values of Graph's user resource.
/// Source: https://learn.microsoft.com/en-us/graph/api/resources/user (userType: "Member" or "Guest").
pub const USER_TYPES: &[&str] = &["Member", "Guest"];
/// riskLevel values of Graph's riskyUser resource (same source).
pub const RISK_LEVELS: &[&str] = &["low", "medium", "high", "hidden", "none", "unknownFutureValue"];

/// One Entra ID user as the simulator keeps it. In YAML and JSON: camelCase keys; everything but `id` and
/// `userPrincipalName` may be left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", from = "SeedUser")]
pub struct SimUser {
    pub id: String,
    pub user_principal_name: String,
    pub account_enabled: bool,
    pub on_premises_sync_enabled: bool,
    /// What directory sync writes back to `account_enabled` (what AD says). Defaults to `account_enabled`.
    pub on_premises_account_enabled: bool,
    /// Holds a privileged directory role: the app may not change its `accountEnabled` or password (403).
    pub privileged_role: bool,
    pub sign_in_sessions_valid_from: Option<DateTime<Utc>>,
    pub last_password_change: Option<DateTime<Utc>>,
    /// riskyUser riskState: "none", "atRisk", "confirmedCompromised", ...
    pub risk_state: String,
    /// riskyUser riskLevel: "none", "low", "medium", "high", ...
    pub risk_level: String,
    pub risk_last_updated: Option<DateTime<Utc>>,
    /// "Member" or "Guest" (an external user invited into the tenant: it signs in at its home
    /// tenant, so revoking its sessions here does not apply).
    pub user_type: String,
}

impl SimUser {
    /// An enabled cloud-only user with no risk and a fresh random object id.
    pub fn new(user_principal_name: impl Into<String>) -> Self {
        SimUser::from(SeedUser {
            id: uuid::Uuid::new_v4().to_string(),
            user_principal_name: user_principal_name.into(),
            ..SeedUser::default()
        })
    }

    /// The same user, as a guest (`userType: Guest`).
    pub fn guest(mut self) -> Self {
        self.user_type = "Guest".to_owned();
        self
    }

    /// The same user, synchronised from on-premises AD (with AD saying it is enabled as it is now).
    pub fn synced(mut self) -> Self {
        self.on_premises_sync_enabled = true;
        self.on_premises_account_enabled = self.account_enabled;
        self
    }
}

/// The seed form of [`SimUser`]: optional fields and their defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SeedUser {
    id: String,
    user_principal_name: String,
    #[serde(default = "yes")]
    account_enabled: bool,
    #[serde(default)]
    on_premises_sync_enabled: bool,
    #[serde(default)]
    on_premises_account_enabled: Option<bool>,
    #[serde(default)]
    privileged_role: bool,
    #[serde(default, alias = "signInSessionsValidFromDateTime")]
    sign_in_sessions_valid_from: Option<DateTime<Utc>>,
    #[serde(default, alias = "lastPasswordChangeDateTime")]
    last_password_change: Option<DateTime<Utc>>,
    #[serde(default = "none")]
    risk_state: String,
    #[serde(default = "none")]
    risk_level: String,
    #[serde(default, alias = "riskLastUpdatedDateTime")]
    risk_last_updated: Option<DateTime<Utc>>,
    #[serde(default = "member")]
    user_type: String,
}

impl Default for SeedUser {
    fn default() -> Self {
        SeedUser {
            id: String::new(),
            user_principal_name: String::new(),
            account_enabled: true,
            on_premises_sync_enabled: false,
            on_premises_account_enabled: None,
            privileged_role: false,
            sign_in_sessions_valid_from: None,
            last_password_change: None,
            risk_state: none(),
            risk_level: none(),
            risk_last_updated: None,
            user_type: member(),
        }
    }
}

fn member() -> String {
    "Member".to_owned()
}

fn yes() -> bool {
    true
}

fn none() -> String {
    "none".to_owned()
}

impl From<SeedUser> for SimUser {
    fn from(seed: SeedUser) -> Self {
        SimUser {
            on_premises_account_enabled: seed.on_premises_account_enabled.unwrap_or(seed.account_enabled),
            id: seed.id,
            user_principal_name: seed.user_principal_name,
            account_enabled: seed.account_enabled,
            on_premises_sync_enabled: seed.on_premises_sync_enabled,
            privileged_role: seed.privileged_role,
            sign_in_sessions_valid_from: seed.sign_in_sessions_valid_from,
            last_password_change: seed.last_password_change,
            risk_state: seed.risk_state,
            risk_level: seed.risk_level,
            risk_last_updated: seed.risk_last_updated,
            user_type: seed.user_type,
        }
    }
}

/// The general request budget (see [`SimConfig::throttle`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Throttle {
    /// Graph requests (each `$batch` sub-request counts) allowed per `window`.
    pub budget: u32,
    #[serde(with = "duration_text")]
    pub window: Duration,
    /// Sent as `Retry-After` (whole seconds, at least 1) with each 429.
    #[serde(with = "duration_text")]
    pub retry_after: Duration,
}

/// A fault for the next Graph requests (each `$batch` sub-request counts; token requests and the
/// `$batch` envelope do not). Faults queue up in the order they are injected.
///
/// JSON (for `POST /_sim/faults`): `{"status":{"status":503,"count":2}}`,
/// `{"throttle":{"count":1,"retryAfter":"2s"}}`, `{"latency":"200ms"}`, `"expireTokens"`,
/// `"expireDeltaTokens"`, `"resetDeltaTokens"`, `{"tokenOutage":{"status":503,"duration":"5s"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Fault {
    /// The next `count` Graph requests answer `status` (e.g. 503, 504) with an OData error body.
    Status { status: u16, count: u32 },
    /// The next `count` Graph requests answer 429 with `Retry-After`.
    #[serde(rename_all = "camelCase")]
    Throttle {
        count: u32,
        #[serde(with = "duration_text")]
        retry_after: Duration,
    },
    /// From now on every Graph HTTP request takes this much longer (replaces the configured latency;
    /// `0s` removes it).
    Latency(#[serde(with = "duration_text")] Duration),
    /// Every token issued so far is now expired (tokens issued later are not).
    ExpireTokens,
    /// Every delta and skip token of `/users/delta` issued so far is now expired: using one
    /// answers 400 `syncStateNotFound`, as a token older than `deltaTokenLifetime` does.
    ExpireDeltaTokens,
    /// The next `count` GET requests (alone or in `$batch`) answer 202 Accepted without a body: the
    /// service took the read and has no resource to give yet. Assumption: Graph documents 202 for
    /// asynchronous operations (a `Location` to poll), not for reads of a user; a client must not
    /// take such an answer for the resource, and reads again.
    #[serde(rename_all = "camelCase")]
    AcceptedGets { count: u32 },
    /// The next `count` `$batch` requests are throttled as a whole: the batch itself answers 429
    /// with `Retry-After`, and none of its requests is run.
    /// Source: https://learn.microsoft.com/en-us/graph/throttling ("Throttling and batching":
    /// requests in a batch are evaluated individually, and the batch as a whole can be throttled
    /// too). Assumption: the body is Graph's usual TooManyRequests error.
    #[serde(rename_all = "camelCase")]
    BatchThrottle {
        count: u32,
        #[serde(with = "duration_text")]
        retry_after: Duration,
    },
    /// Every delta and skip token issued so far needs a synchronization reset: using one answers
    /// 410 Gone with a `Location` to start again from.
    ResetDeltaTokens,
    /// The token endpoint is down for `duration` from now: every token request answers `status`
    /// (500, 503, 504 ...) with the identity platform's error body. (A token endpoint that refuses
    /// connections is a stopped simulator: [`crate::Sim::shutdown`], then [`crate::spawn_on`] the
    /// same address.)
    #[serde(rename_all = "camelCase")]
    TokenOutage {
        status: u16,
        #[serde(with = "duration_text")]
        duration: Duration,
    },
}

/// One request as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggedRequest {
    /// Wall-clock arrival.
    pub at: DateTime<Utc>,
    pub method: String,
    /// Path and query as sent (for a `$batch` sub-request: `/v1.0` + its relative URL).
    pub path: String,
    pub status: u16,
    /// A sub-request of a `$batch`.
    pub in_batch: bool,
    /// JSON body (token requests: the form fields, with `client_secret` redacted).
    pub body: Option<serde_json::Value>,
    /// The `Retry-After` answered, in seconds.
    pub retry_after: Option<u64>,
}

/// Parses `"50ms"`, `"2s"`, `"1.5s"`, `"3m"`, `"1h"` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("invalid duration {text:?} (try \"50ms\" or \"2s\")"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("invalid duration unit {other:?} in {text:?} (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("invalid duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Writes a duration the way [`parse_duration`] reads it.
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Seconds(u64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        match Text::deserialize(deserializer)? {
            Text::Seconds(seconds) => Ok(Duration::from_secs(seconds)),
            Text::Text(text) => super::parse_duration(&text).map_err(serde::de::Error::custom),
        }
    }
}

mod optional_duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_str(&super::format_duration(*duration)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            Some(text) => super::parse_duration(&text).map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        assert_eq!(parse_duration("50ms").unwrap(), Duration::from_millis(50));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("2 weeks").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn seed_defaults_and_problems() {
        let config = SimConfig::from_yaml(
            "tenantId: t\nclientId: c\nclientSecret: s\nlatency: 5ms\nusers:\n  - id: u1\n    userPrincipalName: a@x.test\n    accountEnabled: false\n    onPremisesSyncEnabled: true\n",
        )
        .unwrap();
        let user = &config.users[0];
        assert!(!user.on_premises_account_enabled, "defaults to accountEnabled");
        assert_eq!(user.risk_state, "none");
        assert_eq!(config.latency, Duration::from_millis(5));
        assert_eq!(config.token_lifetime, Duration::from_secs(3600));

        let error = SimConfig::from_yaml(
            "tenantId: t\nclientId: c\nclientSecret: s\nusers:\n  - {id: u1, userPrincipalName: a@x.test, riskState: bad}\n  - {id: U1, userPrincipalName: nope}\n",
        )
        .unwrap_err();
        assert_eq!(error.lines().count(), 3, "{error}");
    }

    #[test]
    fn faults_have_a_readable_json_form() {
        let fault: Fault = serde_json::from_str(r#"{"throttle":{"count":1,"retryAfter":"2s"}}"#).unwrap();
        assert_eq!(fault, Fault::Throttle { count: 1, retry_after: Duration::from_secs(2) });
        let fault: Fault = serde_json::from_str(r#""expireTokens""#).unwrap();
        assert_eq!(fault, Fault::ExpireTokens);
    }
}
