//! [`Coordination`] on an etcd cluster (3.4 or later), through the JSON gateway of etcd's v3 API
//! that every member serves on its client URL (`POST /v3/kv/txn`, `/v3/lease/grant`, ...): plain
//! HTTP/1.1 with reqwest, the workspace's HTTP client, rather than the gRPC client crate
//! (`etcd-client`), which would add a second base64, a second hashbrown/foldhash and prettyplease
//! to the build and need `protoc` to build remedy at all.
//!
//! Keys and values are base64 on the wire, 64-bit integers decimal strings, and fields equal to
//! their default (false, 0) are left out of answers (proto3's JSON form).
//!
//! Endpoints are tried in turn starting from the last one that answered. A read or a keepalive
//! moves on to the next member after any failure; a write only when the connection could not be
//! made (the request surely did not arrive), never after a timeout (it may have been applied).
//! So a request fails within `request_timeout` times the number of endpoints.
//!
//! TLS ([`EtcdCoordination::from_config`]): `https://` endpoints are checked against `ha.etcd.tls.caFile`
//! alone (not the system roots: the members' CA is the deployment's own), and remedy presents
//! `certFile`/`keyFile` to members that require client certificates (`--client-cert-auth`).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use remedy_policies::config::{EtcdConfig, EtcdTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::{CoordError, Coordination, FencedOp, KeepaliveTask, LeaderInfo, Leadership, LeaseState};

/// Timing of the etcd client.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// How long one request to one member may take. etcd itself gives up on a proposal after
    /// about 7 s without quorum; this is shorter so that quorum loss is reported sooner.
    pub request_timeout: Duration,
    /// How long connecting to one member may take.
    pub connect_timeout: Duration,
    /// How often a candidate checks whether it leads (the failover time is the old leader's TTL
    /// plus at most this).
    pub poll_interval: Duration,
}

impl Default for EtcdSettings {
    fn default() -> Self {
        EtcdSettings {
            request_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(250),
        }
    }
}

/// The coordination of the instances that share `prefix` on one etcd cluster. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EtcdCoordination(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// Index of the endpoint that answered last.
    preferred: AtomicUsize,
    prefix: String,
    settings: EtcdSettings,
}

/// Whether a failed request may be sent to the next member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// A read, or a keepalive: on any failure.
    Any,
    /// A write: only when the connection could not be made.
    ConnectOnly,
}

/// Why one endpoint failed: whether the request may have arrived.
#[derive(Debug)]
struct Failure {
    error: CoordError,
    not_sent: bool,
}

/// A key and what etcd says about it.
#[derive(Debug, Clone)]
struct Kv {
    key: String,
    value: Vec<u8>,
    create_revision: i64,
    lease: i64,
}

impl EtcdCoordination {
    /// A client of the cluster at `endpoints` (`http://host:port` client URLs, plain HTTP), for
    /// the keys under `prefix` (e.g. `/remedy/prod/`; the election uses `<prefix>leader/`).
    pub fn new(endpoints: &[String], prefix: &str, settings: EtcdSettings) -> Result<EtcdCoordination, CoordError> {
        let config = EtcdConfig {
            endpoints: endpoints.to_vec(),
            prefix: prefix.to_owned(),
            request_timeout: settings.request_timeout,
            tls: None,
            insecure_plaintext: true,
        };
        EtcdCoordination::build(&config, None, settings)
    }

    /// The client `ha.etcd` describes: its endpoints and prefix, its request timeout, and for
    /// `https://` endpoints TLS that trusts `tls.caFile` alone and presents `tls.certFile` with
    /// `tls.keyFile` when given. Relative file names are relative to `config_dir` (the
    /// configuration file's folder). The files are read once, here.
    pub fn from_config(config: &EtcdConfig, config_dir: &Path) -> Result<EtcdCoordination, CoordError> {
        let tls = config.tls.as_ref().map(|tls| tls_config(tls, config_dir)).transpose()?;
        let defaults = EtcdSettings::default();
        let settings = EtcdSettings {
            request_timeout: config.request_timeout,
            connect_timeout: defaults.connect_timeout.min(config.request_timeout),
            ..defaults
        };
        EtcdCoordination::build(config, tls, settings)
    }

    fn build(
        config: &EtcdConfig,
        tls: Option<rustls::ClientConfig>,
        settings: EtcdSettings,
    ) -> Result<EtcdCoordination, CoordError> {
        if config.endpoints.is_empty() {
            return Err(CoordError::Setup("no etcd endpoint given (ha.etcd.endpoints)".to_owned()));
        }
        for endpoint in &config.endpoints {
            let url = reqwest::Url::parse(endpoint)
                .ok()
                .filter(|url| url.host().is_some() && url.port_or_known_default().is_some());
            match url.as_ref().map(reqwest::Url::scheme) {
                Some("http") if config.insecure_plaintext => {}
                Some("http") => {
                    return Err(CoordError::Setup(format!(
                        "{endpoint}: an http:// endpoint needs ha.etcd.insecurePlaintext: true"
                    )))
                }
                Some("https") if tls.is_some() => {}
                Some("https") => {
                    return Err(CoordError::Setup(format!(
                        "{endpoint}: an https:// endpoint needs ha.etcd.tls (caFile)"
                    )))
                }
                _ => {
                    return Err(CoordError::Setup(format!(
                        "{endpoint}: not an http://host:port or https://host:port client URL"
                    )))
                }
            }
        }
        // Without ha.etcd.tls, reqwest still wants a TLS configuration: ring (the workspace's one
        // crypto provider), trusting nothing.
        let tls = match tls {
            Some(tls) => tls,
            None => {
                client_config_builder()?.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth()
            }
        };
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(settings.request_timeout)
            .connect_timeout(settings.connect_timeout)
            .build()
            .map_err(|e| CoordError::Setup(format!("cannot build the HTTP client: {}", chain(&e))))?;
        Ok(EtcdCoordination(Arc::new(Inner {
            http,
            endpoints: config.endpoints.iter().map(|e| e.trim_end_matches('/').to_owned()).collect(),
            preferred: AtomicUsize::new(0),
            prefix: config.prefix.clone(),
            settings,
        })))
    }

    fn election_prefix(&self) -> String {
        format!("{}leader/", self.0.prefix)
    }

    /// The candidate with the lowest create revision under the election prefix: the leader.
    async fn first_candidate(&self) -> Result<Option<Kv>, CoordError> {
        let prefix = self.election_prefix();
        let body = json!({
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "sort_order": "ASCEND",
            "sort_target": "CREATE",
            "limit": 1,
        });
        let (_, answer) = self.0.call("/v3/kv/range", &body, Retry::Any).await?;
        Ok(kvs(&answer).into_iter().next())
    }

    /// A transaction guarded by the leader key's create revision (and by `absent` keys not
    /// existing); `Ok(true)` if it was applied. When it was not, the failure branch's answer holds
    /// the leader key's range first, then each absent key's.
    async fn guarded_txn(
        &self,
        key: &str,
        create_revision: i64,
        absent: &[&str],
        success: Vec<Value>,
    ) -> Result<(bool, Value), CoordError> {
        let mut compare = vec![json!({
            "key": b64(key.as_bytes()),
            "target": "CREATE",
            "result": "EQUAL",
            "create_revision": create_revision.to_string(),
        })];
        let mut failure = vec![json!({ "request_range": { "key": b64(key.as_bytes()) } })];
        for other in absent {
            compare.push(json!({
                "key": b64(other.as_bytes()),
                "target": "CREATE",
                "result": "EQUAL",
                "create_revision": "0",
            }));
            failure.push(json!({ "request_range": { "key": b64(other.as_bytes()) } }));
        }
        let body = json!({ "compare": compare, "success": success, "failure": failure });
        let (_, answer) = self.0.call("/v3/kv/txn", &body, Retry::ConnectOnly).await?;
        Ok((answer.get("succeeded").and_then(Value::as_bool).unwrap_or(false), answer))
    }

    async fn revoke(&self, lease_id: i64) -> Result<(), CoordError> {
        let body = json!({ "ID": lease_id.to_string() });
        match self.0.call("/v3/lease/revoke", &body, Retry::ConnectOnly).await {
            Ok(_) => Ok(()),
            // Already gone: what resigning wants.
            Err(CoordError::Refused { answer, .. }) if answer.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Inner {
    /// POSTs `body` to `path` on the preferred endpoint, then the others as `retry` allows.
    async fn call(&self, path: &str, body: &Value, retry: Retry) -> Result<(String, Value), CoordError> {
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let index = (start + i) % n;
            let endpoint = &self.endpoints[index];
            match self.call_one(endpoint, path, body).await {
                Ok(answer) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((endpoint.clone(), answer));
                }
                Err(failure) => {
                    let next = matches!(failure.error, CoordError::Unavailable { .. } | CoordError::Tls { .. })
                        && (retry == Retry::Any || failure.not_sent);
                    tracing::debug!(endpoint = %endpoint, path, error = %failure.error, "etcd request failed");
                    if !next {
                        return Err(failure.error);
                    }
                    // Report a member that answered (or was reached and timed out) rather than
                    // one that could not be connected to: its answer says why the cluster
                    // cannot act.
                    let reached = !failure.not_sent;
                    if last.as_ref().is_none_or(|(was_reached, _)| reached || !was_reached) {
                        last = Some((reached, failure.error));
                    }
                }
            }
        }
        Err(last
            .map(|(_, error)| error)
            .unwrap_or_else(|| CoordError::Unavailable { endpoint: String::new(), answer: "no endpoint".to_owned() }))
    }

    async fn call_one(&self, endpoint: &str, path: &str, body: &Value) -> Result<Value, Failure> {
        let url = format!("{endpoint}{path}");
        let unavailable = |answer: String, not_sent: bool| Failure {
            error: CoordError::Unavailable { endpoint: endpoint.to_owned(), answer },
            not_sent,
        };
        let response = match self.http.post(&url).json(body).send().await {
            Ok(response) => response,
            // A member that refused the handshake (or remedy's certificate) did not act on it.
            Err(e) if tls_problem(&e).is_some() => {
                let problem = tls_problem(&e).unwrap_or_default();
                return Err(Failure {
                    error: CoordError::Tls { endpoint: endpoint.to_owned(), problem },
                    not_sent: true,
                });
            }
            Err(e) if e.is_connect() => return Err(unavailable(format!("cannot connect: {}", chain(&e)), true)),
            Err(e) if e.is_timeout() => {
                return Err(unavailable(format!("no answer within {:?}", self.settings.request_timeout), false))
            }
            Err(e) => return Err(unavailable(chain(&e), false)),
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) if e.is_timeout() => {
                return Err(unavailable(format!("no answer within {:?}", self.settings.request_timeout), false))
            }
            Err(e) => return Err(unavailable(chain(&e), false)),
        };
        let answer: Value = serde_json::from_str(&text).map_err(|_| Failure {
            error: CoordError::Refused {
                endpoint: endpoint.to_owned(),
                answer: format!("HTTP {status}: {}", truncate(&text)),
            },
            not_sent: false,
        })?;
        if let Some(error) = gateway_error(&answer) {
            let error = if error.no_quorum() {
                CoordError::Unavailable { endpoint: endpoint.to_owned(), answer: error.message }
            } else {
                CoordError::Refused { endpoint: endpoint.to_owned(), answer: error.message }
            };
            return Err(Failure { error, not_sent: false });
        }
        if !status.is_success() {
            return Err(Failure {
                error: CoordError::Refused {
                    endpoint: endpoint.to_owned(),
                    answer: format!("HTTP {status}: {}", truncate(&text)),
                },
                not_sent: false,
            });
        }
        Ok(answer)
    }

    /// One keepalive of `lease_id`: the TTL etcd granted, zero when the lease is gone.
    async fn keepalive(&self, lease_id: i64) -> Result<i64, CoordError> {
        let body = json!({ "ID": lease_id.to_string() });
        let (_, answer) = self.call("/v3/lease/keepalive", &body, Retry::Any).await?;
        // A streaming call: the gateway wraps each message in `result`.
        Ok(int(answer.get("result").and_then(|r| r.get("TTL"))))
    }
}

/// Keeps `lease_id` alive every third of its TTL until aborted or etcd says it is gone.
async fn keep_alive(inner: Arc<Inner>, lease: Arc<LeaseState>, lease_id: i64, ttl: Duration) {
    let interval = (ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(interval).await;
        let sent = Instant::now();
        match inner.keepalive(lease_id).await {
            Ok(granted) if granted > 0 => {
                lease.acknowledged(sent, Duration::from_secs(granted.unsigned_abs()));
            }
            Ok(_) => {
                tracing::warn!(lease = %format!("{lease_id:x}"), "etcd says the lease has expired: leadership lost");
                lease.mark_lost(format!("etcd says lease {lease_id:x} has expired"));
                return;
            }
            Err(error) => {
                // The local deadline runs on meanwhile: `remaining` reaches zero by itself.
                tracing::warn!(lease = %format!("{lease_id:x}"), error = %error, "lease keepalive failed");
            }
        }
    }
}

#[async_trait]
impl Coordination for EtcdCoordination {
    async fn campaign(&self, instance_id: &str, ttl: Duration) -> Result<Leadership, CoordError> {
        let ttl_secs = lease_ttl_secs(ttl);
        let sent = Instant::now();
        let (endpoint, grant) = self.0.call("/v3/lease/grant", &json!({ "TTL": ttl_secs }), Retry::ConnectOnly).await?;
        let lease_id = int(grant.get("ID"));
        let granted = int(grant.get("TTL"));
        if lease_id == 0 || granted <= 0 {
            return Err(CoordError::Refused { endpoint, answer: format!("lease grant answered {grant}") });
        }
        let ttl = Duration::from_secs(granted.unsigned_abs());
        let lease = Arc::new(LeaseState::new(sent + ttl));
        let keepalive =
            KeepaliveTask(tokio::spawn(keep_alive(self.0.clone(), lease.clone(), lease_id, ttl)).abort_handle());

        let key = format!("{}{lease_id:016x}", self.election_prefix());
        let value = serde_json::to_vec(&json!({ "instance": instance_id }))
            .map_err(|e| CoordError::Refused { endpoint: String::new(), answer: e.to_string() })?;
        let body = json!({
            "compare": [{
                "key": b64(key.as_bytes()),
                "target": "CREATE",
                "result": "EQUAL",
                "create_revision": "0",
            }],
            "success": [{ "request_put": {
                "key": b64(key.as_bytes()),
                "value": b64(&value),
                "lease": lease_id.to_string(),
            }}],
            "failure": [{ "request_range": { "key": b64(key.as_bytes()) } }],
        });
        let (_, answer) = self.0.call("/v3/kv/txn", &body, Retry::ConnectOnly).await?;
        let create_revision = if answer.get("succeeded").and_then(Value::as_bool).unwrap_or(false) {
            int(answer.get("header").and_then(|h| h.get("revision")))
        } else {
            // Only if the lease id was reused with a key of ours still there.
            txn_range(&answer).map(|kv| kv.create_revision).unwrap_or(0)
        };
        tracing::info!(instance = instance_id, key = %key, create_revision, "campaigning for leadership");

        loop {
            if lease.view().lost.is_some() {
                return Err(CoordError::LeaseExpired { lease_id });
            }
            match self.first_candidate().await? {
                Some(first) if first.key == key => break,
                Some(first) if first.create_revision < create_revision => {}
                // Our key is gone (no candidate, or only later ones): the lease expired.
                _ => return Err(CoordError::LeaseExpired { lease_id }),
            }
            tokio::time::sleep(self.0.settings.poll_interval).await;
        }

        let since = Utc::now();
        let value = serde_json::to_vec(&json!({ "instance": instance_id, "leadingSince": since.to_rfc3339() }))
            .map_err(|e| CoordError::Refused { endpoint: String::new(), answer: e.to_string() })?;
        let put = json!({ "request_put": {
            "key": b64(key.as_bytes()),
            "value": b64(&value),
            "lease": lease_id.to_string(),
        }});
        let (applied, _) = self.guarded_txn(&key, create_revision, &[], vec![put]).await?;
        if !applied {
            return Err(CoordError::LeaseExpired { lease_id });
        }
        tracing::info!(instance = instance_id, key = %key, create_revision, "elected leader");
        Ok(Leadership { key, create_revision, lease_id, instance_id: instance_id.to_owned(), ttl, lease, keepalive })
    }

    async fn observe_leader(&self) -> Result<Option<LeaderInfo>, CoordError> {
        let Some(first) = self.first_candidate().await? else {
            return Ok(None);
        };
        let value: Value = serde_json::from_slice(&first.value).unwrap_or(Value::Null);
        Ok(Some(LeaderInfo {
            instance_id: value.get("instance").and_then(Value::as_str).unwrap_or_default().to_owned(),
            leading_since: value
                .get("leadingSince")
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc)),
            key: first.key,
            create_revision: first.create_revision,
            lease_id: first.lease,
        }))
    }

    async fn fenced_txn(&self, leadership: &Leadership, ops: &[FencedOp]) -> Result<(), CoordError> {
        if let Some(why) = leadership.lost() {
            return Err(CoordError::NotLeader { key: leadership.key.clone(), reason: why });
        }
        let mut absent = Vec::new();
        let success = ops
            .iter()
            .map(|op| match op {
                FencedOp::Put { key, value } => {
                    json!({ "request_put": { "key": b64(key.as_bytes()), "value": b64(value) } })
                }
                FencedOp::Create { key, value } => {
                    absent.push(key.as_str());
                    json!({ "request_put": { "key": b64(key.as_bytes()), "value": b64(value) } })
                }
                FencedOp::Delete { key } => {
                    json!({ "request_delete_range": { "key": b64(key.as_bytes()) } })
                }
            })
            .collect();
        let (applied, answer) = self.guarded_txn(&leadership.key, leadership.create_revision, &absent, success).await?;
        if applied {
            return Ok(());
        }
        let ranges = txn_ranges(&answer);
        let leader = ranges.first().cloned().flatten();
        if leader.as_ref().is_some_and(|kv| kv.create_revision == leadership.create_revision) {
            // Still the leader: one of the keys to create exists.
            let taken = absent.iter().zip(ranges.iter().skip(1)).find(|(_, kv)| kv.is_some());
            let key = taken.map_or_else(|| absent.join(", "), |(key, _)| (*key).to_owned());
            return Err(CoordError::Exists { key });
        }
        let reason = match leader {
            None => "the leader key is gone (its lease expired or was revoked)".to_owned(),
            Some(kv) => format!(
                "the leader key has create revision {}, this leadership's is {}",
                kv.create_revision, leadership.create_revision
            ),
        };
        leadership.lease.mark_lost(reason.clone());
        Err(CoordError::NotLeader { key: leadership.key.clone(), reason })
    }

    async fn resign(&self, leadership: Leadership) -> Result<(), CoordError> {
        leadership.keepalive.abort();
        self.revoke(leadership.lease_id).await?;
        tracing::info!(instance = %leadership.instance_id, key = %leadership.key, "resigned leadership");
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CoordError> {
        let body = json!({ "key": b64(key.as_bytes()) });
        let (_, answer) = self.0.call("/v3/kv/range", &body, Retry::Any).await?;
        Ok(kvs(&answer).into_iter().next().map(|kv| kv.value))
    }

    async fn range(&self, prefix: &str, from: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, CoordError> {
        let body = json!({
            "key": b64(from.as_bytes()),
            "range_end": b64(&prefix_end(prefix.as_bytes())),
            "sort_order": "ASCEND",
            "sort_target": "KEY",
            "limit": limit.to_string(),
        });
        let (_, answer) = self.0.call("/v3/kv/range", &body, Retry::Any).await?;
        Ok(kvs(&answer).into_iter().map(|kv| (kv.key, kv.value)).collect())
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), CoordError> {
        let body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        self.0.call("/v3/kv/put", &body, Retry::ConnectOnly).await.map(drop)
    }

    async fn delete(&self, key: &str) -> Result<bool, CoordError> {
        let body = json!({ "key": b64(key.as_bytes()) });
        let (_, answer) = self.0.call("/v3/kv/deleterange", &body, Retry::ConnectOnly).await?;
        Ok(int(answer.get("deleted")) > 0)
    }
}

/// An error answer of the gateway: `{"error": "...", "code": N}` for unary calls,
/// `{"error": {"grpc_code": N, "message": "..."}}` for streaming ones (keepalive).
#[derive(Debug)]
struct GatewayError {
    code: i64,
    message: String,
}

impl GatewayError {
    /// The cluster cannot act now: no leader, a proposal timed out, unavailable.
    fn no_quorum(&self) -> bool {
        // gRPC codes: 14 UNAVAILABLE, 4 DEADLINE_EXCEEDED; the gateway reports etcd's own
        // deadline as 2 UNKNOWN "context deadline exceeded".
        self.code == 14
            || self.code == 4
            || self.message.contains("no leader")
            || self.message.contains("timed out")
            || self.message.contains("deadline exceeded")
    }
}

fn gateway_error(answer: &Value) -> Option<GatewayError> {
    match answer.get("error")? {
        Value::String(message) => Some(GatewayError { code: int(answer.get("code")), message: message.clone() }),
        Value::Object(inner) => Some(GatewayError {
            code: int(inner.get("grpc_code")),
            message: inner.get("message").and_then(Value::as_str).unwrap_or_default().to_owned(),
        }),
        _ => None,
    }
}

fn kvs(range: &Value) -> Vec<Kv> {
    range.get("kvs").and_then(Value::as_array).map(|kvs| kvs.iter().filter_map(kv).collect()).unwrap_or_default()
}

fn kv(value: &Value) -> Option<Kv> {
    let key = unb64(value.get("key")?)?;
    Some(Kv {
        key: String::from_utf8(key).ok()?,
        value: value.get("value").and_then(unb64).unwrap_or_default(),
        create_revision: int(value.get("create_revision")),
        lease: int(value.get("lease")),
    })
}

/// The key read by a transaction's `request_range` (its failure branch).
fn txn_range(answer: &Value) -> Option<Kv> {
    txn_ranges(answer).into_iter().next().flatten()
}

/// Each range of a transaction's answer, in order: its first key, if any.
fn txn_ranges(answer: &Value) -> Vec<Option<Kv>> {
    let responses = answer.get("responses").and_then(Value::as_array).cloned().unwrap_or_default();
    responses.iter().filter_map(|r| r.get("response_range")).map(|range| kvs(range).into_iter().next()).collect()
}

/// An int64 of proto3 JSON: a decimal string (or a number), absent when zero.
fn int(value: Option<&Value>) -> i64 {
    match value {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// A lease TTL in whole seconds as etcd takes it: rounded up, at least 1 (etcd itself may grant
/// more: its minimum is 1.5 election timeouts).
fn lease_ttl_secs(ttl: Duration) -> u64 {
    (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1)
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn unb64(value: &Value) -> Option<Vec<u8>> {
    STANDARD.decode(value.as_str()?).ok()
}

/// The end of the range of keys starting with `prefix` (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: the range to the end of the keyspace.
    vec![0]
}

fn truncate(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// What went wrong with TLS, when a certificate is why a request failed: the first rustls error
/// in the chain (reqwest wraps it in hyper's error and in `io::Error`s, whose `source` skips the
/// error they wrap: that one is reached through `get_ref`).
fn tls_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return describe_tls(tls);
        }
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn describe_tls(error: &rustls::Error) -> Option<String> {
    use rustls::AlertDescription as Alert;
    match error {
        rustls::Error::InvalidCertificate(why) => Some(format!(
            "the member's certificate is not accepted ({why}): it must be signed by the CA of ha.etcd.tls.caFile and \
             name the endpoint's host"
        )),
        rustls::Error::AlertReceived(
            alert @ (Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateRequired
            | Alert::CertificateUnknown
            | Alert::UnsupportedCertificate
            | Alert::CertificateExpired
            | Alert::AccessDenied),
        ) => Some(format!(
            "the member refused remedy's client certificate ({alert:?}): a member with --client-cert-auth wants \
             ha.etcd.tls.certFile and keyFile, signed by the CA of its --trusted-ca-file"
        )),
        _ => None,
    }
}

/// An error and its sources, one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

fn client_config_builder() -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, CoordError> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| CoordError::Setup(format!("TLS setup: {e}")))
}

/// TLS to the members: `caFile` the only roots, and the client certificate when configured.
fn tls_config(tls: &EtcdTls, config_dir: &Path) -> Result<rustls::ClientConfig, CoordError> {
    let ca_path = config_dir.join(&tls.ca_file);
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates("ha.etcd.tls.caFile", &ca_path)? {
        roots.add(certificate).map_err(|e| CoordError::TlsFile {
            key: "ha.etcd.tls.caFile",
            path: ca_path.clone(),
            problem: format!("a certificate in it cannot be a trust anchor: {e}"),
        })?;
    }
    let builder = client_config_builder()?.with_root_certificates(roots);
    match (&tls.cert_file, &tls.key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert_file), Some(key_file)) => {
            let cert_path = config_dir.join(cert_file);
            let key_path = config_dir.join(key_file);
            let chain = read_certificates("ha.etcd.tls.certFile", &cert_path)?;
            let key = read_private_key(&key_path)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                let (key, path, problem) = match e {
                    rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => (
                        "ha.etcd.tls.keyFile",
                        key_path,
                        format!("the key does not match the certificate in {}", cert_path.display()),
                    ),
                    other => ("ha.etcd.tls.keyFile", key_path, format!("the key cannot be used: {other}")),
                };
                CoordError::TlsFile { key, path, problem }
            })
        }
        _ => Err(CoordError::Setup("ha.etcd.tls: give certFile and keyFile both or neither".to_owned())),
    }
}

/// The certificates (`CERTIFICATE` blocks) of a PEM file: at least one.
fn read_certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, CoordError> {
    let problem = |problem: String| CoordError::TlsFile { key, path: path.to_owned(), problem };
    let pem = std::fs::read(path).map_err(|e| problem(format!("cannot read it: {e}")))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("not PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(problem("no certificate (CERTIFICATE block) in it".to_owned()));
    }
    Ok(certificates)
}

/// The client certificate's private key: only its owner may read the file, as every secret file.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, CoordError> {
    let problem = |problem: String| CoordError::TlsFile { key: "ha.etcd.tls.keyFile", path: path.to_owned(), problem };
    let pem = Zeroizing::new(std::fs::read(path).map_err(|e| problem(format!("cannot read it: {e}")))?);
    if let Some(mode) = crate::secret::readable_by_others(path) {
        return Err(problem(format!(
            "mode {mode:o}: group or others may read this private key; chmod 600 it (only remedy's user may read it)"
        )));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        if pem.windows(b"ENCRYPTED PRIVATE KEY".len()).any(|w| w == b"ENCRYPTED PRIVATE KEY") {
            problem("the key is encrypted: remedy reads an unencrypted key (openssl pkey -in encrypted.pem -out key.pem, then chmod 600)".to_owned())
        } else {
            problem("no private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block) in it".to_owned())
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/remedy/leader/"), b"/remedy/leader0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn gateway_errors_of_a_cluster_without_quorum_are_unavailable() {
        let unary = json!({"error": "etcdserver: request timed out", "code": 14});
        let deadline = json!({"error": "context deadline exceeded", "code": 2});
        let stream = json!({"error": {"grpc_code": 14, "message": "etcdserver: no leader"}});
        let refused = json!({"error": "etcdserver: requested lease not found", "code": 5});
        for answer in [unary, deadline, stream] {
            assert!(gateway_error(&answer).is_some_and(|e| e.no_quorum()), "{answer}");
        }
        assert!(gateway_error(&refused).is_some_and(|e| !e.no_quorum()));
        assert!(gateway_error(&json!({"header": {}})).is_none());
    }

    #[test]
    fn lease_ttls_are_whole_seconds_rounded_up() {
        assert_eq!(lease_ttl_secs(Duration::from_millis(500)), 1);
        assert_eq!(lease_ttl_secs(Duration::ZERO), 1);
        assert_eq!(lease_ttl_secs(Duration::from_secs(5)), 5);
        assert_eq!(lease_ttl_secs(Duration::from_millis(5001)), 6);
    }

    #[test]
    fn int64_fields_are_read_from_strings_and_default_to_zero() {
        let answer = json!({"ID": "8222062488725933831", "TTL": 3});
        assert_eq!(int(answer.get("ID")), 8_222_062_488_725_933_831);
        assert_eq!(int(answer.get("TTL")), 3);
        assert_eq!(int(answer.get("absent")), 0);
    }

    /// A folder with a CA, a client certificate and key (mode 600), and a config naming them.
    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            let dir = tempfile::tempdir().expect("tempdir");
            let client = rcgen::generate_simple_self_signed(vec!["remedy".to_owned()]).expect("client cert");
            let ca = rcgen::generate_simple_self_signed(vec!["etcd-ca".to_owned()]).expect("ca");
            std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).expect("write");
            std::fs::write(dir.path().join("client.pem"), client.cert.pem()).expect("write");
            Files::write_key(dir.path(), "client.key", &client.signing_key.serialize_pem(), 0o600);
            let other = rcgen::KeyPair::generate().expect("key");
            Files::write_key(dir.path(), "other.key", &other.serialize_pem(), 0o600);
            Files { dir }
        }

        fn write_key(dir: &Path, name: &str, pem: &str, mode: u32) {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            }
        }

        fn config(ca: &str, cert: Option<&str>, key: Option<&str>) -> EtcdConfig {
            EtcdConfig {
                endpoints: vec!["https://127.0.0.1:2379".to_owned()],
                prefix: "/remedy/".to_owned(),
                request_timeout: Duration::from_secs(2),
                tls: Some(EtcdTls {
                    ca_file: ca.to_owned(),
                    cert_file: cert.map(str::to_owned),
                    key_file: key.map(str::to_owned),
                }),
                insecure_plaintext: false,
            }
        }

        fn build(&self, config: &EtcdConfig) -> Result<EtcdCoordination, CoordError> {
            EtcdCoordination::from_config(config, self.dir.path())
        }
    }

    fn tls_file_error(result: Result<EtcdCoordination, CoordError>) -> (&'static str, PathBuf, String) {
        match result {
            Err(CoordError::TlsFile { key, path, problem }) => (key, path, problem),
            other => panic!("expected a TlsFile error, got {other:?}"),
        }
    }

    #[test]
    fn from_config_reads_the_ca_and_client_certificate_relative_to_the_config_folder() {
        let files = Files::new();
        let with_client = Files::config("ca.pem", Some("client.pem"), Some("client.key"));
        let client = files.build(&with_client).expect("valid files");
        assert_eq!(client.0.endpoints, ["https://127.0.0.1:2379"]);
        assert_eq!(client.0.settings.request_timeout, Duration::from_secs(2));
        assert!(files.build(&Files::config("ca.pem", None, None)).is_ok(), "a client certificate is optional");
    }

    #[test]
    fn from_config_names_a_missing_or_empty_ca_file() {
        let files = Files::new();
        let (key, path, problem) = tls_file_error(files.build(&Files::config("missing-ca.pem", None, None)));
        assert_eq!((key, path), ("ha.etcd.tls.caFile", files.dir.path().join("missing-ca.pem")));
        assert!(problem.contains("cannot read it"), "{problem}");
        std::fs::write(files.dir.path().join("empty.pem"), "not a certificate\n").expect("write");
        let (key, _, problem) = tls_file_error(files.build(&Files::config("empty.pem", None, None)));
        assert_eq!(key, "ha.etcd.tls.caFile");
        assert!(problem.contains("no certificate"), "{problem}");
        let error = files.build(&Files::config("empty.pem", None, None)).expect_err("no certificate").to_string();
        assert!(error.starts_with("ha.etcd.tls.caFile ") && error.contains("empty.pem"), "{error}");
    }

    #[test]
    fn from_config_refuses_a_certificate_without_its_key() {
        let files = Files::new();
        for config in
            [Files::config("ca.pem", Some("client.pem"), None), Files::config("ca.pem", None, Some("client.key"))]
        {
            match files.build(&config) {
                Err(CoordError::Setup(message)) => assert!(message.contains("both or neither"), "{message}"),
                other => panic!("expected a setup error, got {other:?}"),
            }
        }
    }

    #[test]
    fn from_config_refuses_a_key_that_others_may_read_or_that_is_not_the_certificates() {
        let files = Files::new();
        let (key, path, problem) =
            tls_file_error(files.build(&Files::config("ca.pem", Some("client.pem"), Some("other.key"))));
        assert_eq!((key, path), ("ha.etcd.tls.keyFile", files.dir.path().join("other.key")));
        assert!(problem.contains("does not match the certificate"), "{problem}");
        #[cfg(unix)]
        {
            let pem = std::fs::read_to_string(files.dir.path().join("client.key")).expect("read");
            Files::write_key(files.dir.path(), "loose.key", &pem, 0o640);
            let (key, _, problem) =
                tls_file_error(files.build(&Files::config("ca.pem", Some("client.pem"), Some("loose.key"))));
            assert_eq!(key, "ha.etcd.tls.keyFile");
            assert!(problem.contains("mode 640") && problem.contains("chmod 600"), "{problem}");
            assert!(!problem.contains("PRIVATE KEY-----"), "the key is not echoed: {problem}");
        }
        Files::write_key(
            files.dir.path(),
            "cert-only.key",
            &std::fs::read_to_string(files.dir.path().join("client.pem")).expect("read"),
            0o600,
        );
        let (_, _, problem) =
            tls_file_error(files.build(&Files::config("ca.pem", Some("client.pem"), Some("cert-only.key"))));
        assert!(problem.contains("no private key"), "{problem}");
    }

    #[test]
    fn from_config_refuses_endpoints_its_settings_do_not_cover() {
        let files = Files::new();
        let mut plain = Files::config("ca.pem", None, None);
        plain.tls = None;
        let error = files.build(&plain).expect_err("https without tls").to_string();
        assert!(error.contains("needs ha.etcd.tls"), "{error}");
        plain.endpoints = vec!["http://127.0.0.1:2379".to_owned()];
        let error = files.build(&plain).expect_err("http without consent").to_string();
        assert!(error.contains("insecurePlaintext"), "{error}");
        plain.insecure_plaintext = true;
        assert!(files.build(&plain).is_ok());
    }

    #[test]
    fn certificate_problems_are_found_inside_the_io_errors_that_wrap_them() {
        let bad_issuer = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, bad_issuer));
        let problem = tls_problem(&wrapped).expect("found");
        assert!(problem.contains("UnknownIssuer") && problem.contains("ha.etcd.tls.caFile"), "{problem}");
        let refused = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        assert!(tls_problem(&std::io::Error::other(refused)).is_some_and(|p| p.contains("ha.etcd.tls.certFile")));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(tls_problem(&reset), None, "not a certificate problem");
        let other_tls = std::io::Error::other(rustls::Error::DecryptError);
        assert_eq!(tls_problem(&other_tls), None, "not a certificate problem");
    }
}
