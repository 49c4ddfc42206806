//! The HTTP client of the operator commands (`status`, `history`, `reconcile`, `approve`): where
//! the daemon's API is, the bearer token, TLS, and what the API's answers mean for the exit code.
//!
//! The token comes from a file (`--token-file`, `REMEDY_TOKEN_FILE`) or from `REMEDY_TOKEN`, never
//! from a flag (it would show in `ps`). It is held as a [`Secret`], sent only in the
//! `Authorization` header (marked sensitive), and never printed or logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderValue, AUTHORIZATION, DATE};
use reqwest::{Method, StatusCode, Url};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::secret::Secret;

/// The flags every operator command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The API of `remedy serve` (`api.listen` in its configuration).
    #[arg(long, env = "REMEDY_SERVER", default_value = "http://127.0.0.1:8470")]
    pub server: String,
    /// A file holding the bearer token. Without it, the token is read from the environment
    /// variable REMEDY_TOKEN (there is no --token flag: the command line shows in `ps`).
    #[arg(long, env = "REMEDY_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA certificate(s) to trust for an https:// server instead of the system's
    /// (a private CA).
    #[arg(long, env = "REMEDY_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

/// Why a request got no useful answer. The exit code is part of the type: see [`exit_code`].
///
/// [`exit_code`]: ClientError::exit_code
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error (`{"error": {"code", "message"}}`).
    #[error("{status} {code}: {message}")]
    Api { status: u16, code: String, message: String },
    /// No answer: connection refused, TLS handshake, timeout.
    #[error("cannot reach the remedy API at {server}: {detail}")]
    Unreachable { server: String, detail: String },
    /// An answer that is not what the API sends.
    #[error("unexpected answer from {url}: {detail}")]
    Protocol { url: String, detail: String },
    /// The client cannot be set up: bad URL, no token, unreadable CA file.
    #[error("{0}")]
    Setup(String),
}

/// The HTTP statuses that are the server's "no" to what was asked (exit 1): not allowed, no such
/// thing, not in that state. Everything else, 401 included, is a problem of the call (exit 2).
const REFUSALS: [u16; 3] = [403, 404, 409];

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Api { status, .. } if REFUSALS.contains(status) => 1,
            _ => 2,
        }
    }

    /// Whether the API said "no such thing" (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }
}

/// A connection to the daemon's API.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Secret,
}

/// A successful answer with the server's clock (its `Date` header), when it sent one.
#[derive(Debug)]
pub struct Answer<T> {
    pub body: T,
    pub server_time: Option<DateTime<Utc>>,
}

impl Client {
    pub fn new(args: &ClientArgs) -> Result<Client, ClientError> {
        let base = parse_server(&args.server)?;
        let token = read_token(args.token_file.as_deref())?;
        if base.scheme() == "http" && !is_loopback(&base) {
            tracing::warn!(server = %base, "plain http:// to a host other than loopback: the token travels in clear");
        }
        let tls = tls_config(args.ca_file.as_deref(), base.scheme() == "https")?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            // A redirect would be a misconfigured server or proxy: say so rather than follow it.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("remedy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Setup(format!("HTTP client: {}", chain(&e))))?;
        Ok(Client { http, base, token })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &[&str], query: &[(&str, String)]) -> Result<T, ClientError> {
        Ok(self.send(Method::GET, path, query, None).await?.body)
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &[&str],
        body: Option<serde_json::Value>,
    ) -> Result<Answer<T>, ClientError> {
        self.send(Method::POST, path, &[], body).await
    }

    /// `GET` a probe that answers its body with `503` as with `200` (`/readyz`), without the token
    /// (a probe needs none).
    pub async fn probe<T: DeserializeOwned>(&self, path: &[&str]) -> Result<T, ClientError> {
        let url = self.url(path, &[]);
        let unreachable =
            |e: reqwest::Error| ClientError::Unreachable { server: self.base.to_string(), detail: chain(&e) };
        let response = self.http.get(url.clone()).send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() && status != StatusCode::SERVICE_UNAVAILABLE {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol { url: without_query(&url), detail: e.to_string() })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<Answer<T>, ClientError> {
        let url = self.url(path, query);
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", self.token.expose())).map_err(|_| {
            ClientError::Setup("the token is not usable in an HTTP header (control characters?)".into())
        })?;
        authorization.set_sensitive(true);
        let mut request = self.http.request(method, url.clone()).header(AUTHORIZATION, authorization);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ClientError::Unreachable { server: self.base.to_string(), detail: chain(&e) })?;
        let status = response.status();
        let server_time = response
            .headers()
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
            .map(|t| t.with_timezone(&Utc));
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable { server: self.base.to_string(), detail: chain(&e) })?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        let body = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol { url: without_query(&url), detail: e.to_string() })?;
        Ok(Answer { body, server_time })
    }

    fn url(&self, path: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }
}

/// Runs one command's requests (a small runtime: one command, one server).
pub fn block_on<T>(future: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    Ok(runtime.block_on(future))
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInner,
}

#[derive(Deserialize)]
struct ErrorInner {
    code: String,
    message: String,
}

/// The API's error, or (from something in between, a proxy) the status and the start of the body.
fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Api { status: status.as_u16(), code: body.error.code, message: body.error.message },
        Err(_) => {
            let text = String::from_utf8_lossy(bytes);
            let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect();
            let code = status.canonical_reason().unwrap_or("error").to_ascii_lowercase().replace(' ', "-");
            let message = if text.is_empty() { "(no body)".to_owned() } else { text };
            ClientError::Api { status: status.as_u16(), code, message }
        }
    }
}

fn parse_server(text: &str) -> Result<Url, ClientError> {
    let url = Url::parse(text.trim()).map_err(|e| {
        ClientError::Setup(format!("--server {text:?} is not a URL such as http://127.0.0.1:8470: {e}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ClientError::Setup(format!("--server {text:?}: use http://host:port or https://host:port")));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(ClientError::Setup(format!(
            "--server {text:?} must not have credentials, a query or a fragment (the token goes in --token-file)"
        )));
    }
    Ok(url)
}

/// The token: from the file if one is named, else from REMEDY_TOKEN.
fn read_token(file: Option<&Path>) -> Result<Secret, ClientError> {
    if let Some(path) = file {
        return Secret::from_file(path).map_err(|e| ClientError::Setup(format!("--token-file: {e}")));
    }
    match std::env::var("REMEDY_TOKEN") {
        Ok(value) if !value.trim().is_empty() => Ok(Secret::new(value.trim().to_owned())),
        Ok(_) => Err(ClientError::Setup("REMEDY_TOKEN is empty".into())),
        Err(std::env::VarError::NotUnicode(_)) => Err(ClientError::Setup("REMEDY_TOKEN is not UTF-8 text".into())),
        Err(std::env::VarError::NotPresent) => Err(ClientError::Setup(
            "no API token: name a file holding it with --token-file (or REMEDY_TOKEN_FILE), or set REMEDY_TOKEN".into(),
        )),
    }
}

/// rustls with ring, trusting exactly the CAs of `ca_file`, else the system's.
fn tls_config(ca_file: Option<&Path>, https: bool) -> Result<ClientConfig, ClientError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ClientError::Setup(format!("--ca-file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(ClientError::Setup(format!("--ca-file {} holds no PEM certificate", path.display())));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    ClientError::Setup(format!("--ca-file {}: unusable certificate: {e}", path.display()))
                })?;
            }
        }
        None if https => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(ClientError::Setup(
                    "no system CA certificates were found: name the server's CA with --ca-file".into(),
                ));
            }
        }
        None => {}
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Setup(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

/// An error and its sources on one line (reqwest's own text is only the outermost layer).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_exit_1_and_everything_else_exits_2() {
        let api = |status| ClientError::Api { status, code: "x".into(), message: "y".into() };
        for status in [403, 404, 409] {
            assert_eq!(api(status).exit_code(), 1, "{status}");
        }
        for status in [400, 401, 405, 500, 503] {
            assert_eq!(api(status).exit_code(), 2, "{status}");
        }
        assert_eq!(ClientError::Unreachable { server: "s".into(), detail: "d".into() }.exit_code(), 2);
        assert_eq!(api(403).to_string(), "403 x: y");
    }

    #[test]
    fn an_error_body_from_elsewhere_is_shown_short() {
        let error = api_error(StatusCode::BAD_GATEWAY, b"<html>\n  upstream down\n</html>");
        assert_eq!(error.to_string(), "502 bad-gateway: <html> upstream down </html>");
        let error = api_error(StatusCode::FORBIDDEN, br#"{"error":{"code":"forbidden","message":"no"}}"#);
        assert_eq!(error.to_string(), "403 forbidden: no");
    }

    #[test]
    fn paths_are_segments_of_the_server_url() {
        let client = |server: &str| Client {
            http: reqwest::Client::builder()
                .tls_backend_preconfigured(tls_config(None, false).unwrap())
                .build()
                .unwrap(),
            base: parse_server(server).unwrap(),
            token: Secret::new("t".into()),
        };
        let plain = client("http://127.0.0.1:8470");
        assert_eq!(plain.url(&["v1", "manifests", "inc-1"], &[]).as_str(), "http://127.0.0.1:8470/v1/manifests/inc-1");
        let behind_proxy = client("https://remedy.example.com/api/");
        assert_eq!(
            behind_proxy.url(&["v1", "history"], &[("since", "2026-01-01T00:00:00+01:00".into())]).as_str(),
            "https://remedy.example.com/api/v1/history?since=2026-01-01T00%3A00%3A00%2B01%3A00"
        );
        assert!(parse_server("http://user:pw@host").is_err());
        assert!(parse_server("ftp://host").is_err());
    }
}
