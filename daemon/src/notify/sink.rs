//! One configured notification sink: its secrets read, its URL checked, and the POST of one
//! notification in its kind's shape (signed for a webhook), with errors stripped of the URL.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use remedy_policies::config::{NotificationSink, SinkKind};
use reqwest::Url;

use super::payload;
use crate::model::Notification;
use crate::secret::{Secret, SecretError};
use crate::store::StoreError;

/// Why notifications cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notifications {sink}: urlFile: {source}")]
    UrlFile {
        sink: String,
        #[source]
        source: SecretError,
    },
    #[error("notifications {sink}: hmacSecretFile: {source}")]
    HmacFile {
        sink: String,
        #[source]
        source: SecretError,
    },
    /// Never says the URL: it is a secret.
    #[error("notifications {sink}: the URL in {file} {problem}")]
    Url { sink: String, file: String, problem: &'static str },
    #[error("notifications {sink}: cannot make the HTTP client: {detail}")]
    Client { sink: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One configured sink, ready to post.
pub struct Sink {
    pub(super) config: NotificationSink,
    url: Secret,
    hmac: Option<Secret>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("name", &self.config.name).field("kind", &self.config.kind).finish_non_exhaustive()
    }
}

/// Why one delivery failed, without the URL.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) text: String,
    pub(super) retry_after: Option<Duration>,
}

impl Sink {
    /// Reads the sink's secrets (paths relative to `config_dir`) and checks its URL: `https://`,
    /// or `http://` to a loopback address only.
    pub fn from_config(config: &NotificationSink, config_dir: &Path) -> Result<Sink, NotifyError> {
        let sink = config.name.clone();
        let url_path = config_dir.join(&config.url_file);
        let url = Secret::from_file(&url_path).map_err(|source| NotifyError::UrlFile { sink: sink.clone(), source })?;
        let bad = |problem| NotifyError::Url { sink: sink.clone(), file: url_path.display().to_string(), problem };
        let parsed = Url::parse(url.expose().trim()).map_err(|_| bad("is not a URL"))?;
        match parsed.scheme() {
            "https" => {}
            "http" if is_loopback(&parsed) => {}
            "http" => return Err(bad("is plain http://: use https:// (http:// only to a loopback address)")),
            _ => return Err(bad("is not an https:// URL")),
        }
        let hmac = match &config.hmac_secret_file {
            Some(file) => Some(
                Secret::from_file(&config_dir.join(file))
                    .map_err(|source| NotifyError::HmacFile { sink: sink.clone(), source })?,
            ),
            None => None,
        };
        let client = http_client(config.timeout).map_err(|detail| NotifyError::Client { sink, detail })?;
        Ok(Sink { config: config.clone(), url, hmac, client })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub(super) fn wants(&self, notification: &Notification) -> bool {
        self.config.filter().wants(notification.kind)
    }

    /// Posts one notification; 2xx is delivered, anything else a failure.
    pub(super) async fn post(&self, notification: &Notification) -> Result<(), Failure> {
        let body = payload::body(self.config.kind, notification);
        let mut request = self
            .client
            .post(self.url.expose().trim())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(payload::EVENT_ID_HEADER, &notification.id);
        if let (SinkKind::Webhook, Some(key)) = (self.config.kind, &self.hmac) {
            let timestamp = Utc::now().timestamp();
            request = request
                .header(payload::TIMESTAMP_HEADER, timestamp.to_string())
                .header(payload::SIGNATURE_HEADER, payload::signature(key.expose().as_bytes(), timestamp, &body));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|error| Failure { text: self.redact(&describe(&error.without_url())), retry_after: None })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::entra::retry::parse_retry_after(v, Utc::now()));
        Err(Failure { text: format!("the receiver answered {status}"), retry_after })
    }

    /// Removes the URL (and its path, which holds the token) from a text, should a library have
    /// put it there.
    fn redact(&self, text: &str) -> String {
        let url = self.url.expose().trim();
        let mut text = text.replace(url, "[url]");
        if let Ok(parsed) = Url::parse(url) {
            for secret in [parsed.path(), parsed.query().unwrap_or_default()] {
                if secret.len() > 1 {
                    text = text.replace(secret, "[url]");
                }
            }
        }
        text
    }
}

/// An error and its sources on one line.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// rustls (ring) trusting the system's CA certificates; no redirects (a redirect would carry the
/// body elsewhere).
fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("remedy/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::notify) fn sink(kind: SinkKind, url: &str, dir: &Path) -> Result<Sink, NotifyError> {
        std::fs::write(dir.join("url"), format!("{url}\n")).expect("url file");
        let config = NotificationSink {
            name: "soc".to_owned(),
            kind,
            url_file: "url".to_owned(),
            events: None,
            min_severity: Default::default(),
            hmac_secret_file: None,
            timeout: Duration::from_secs(10),
        };
        Sink::from_config(&config, dir)
    }

    #[test]
    fn a_sink_url_is_https_or_loopback_http_and_never_shown() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        for url in ["https://hooks.slack.com/services/T0/B0/s3cr3t", "http://127.0.0.1:9/x", "http://[::1]/x"] {
            assert!(sink(SinkKind::Slack, url, dir.path()).is_ok(), "{url}");
        }
        for url in ["http://hooks.example.com/s3cr3t", "ftp://example.com/s3cr3t", "not a url s3cr3t"] {
            let error = sink(SinkKind::Webhook, url, dir.path()).expect_err(url).to_string();
            assert!(!error.contains("s3cr3t") && error.contains("url"), "{url}: {error}");
        }
        let missing = NotificationSink {
            url_file: "absent".to_owned(),
            ..NotificationSink {
                name: "soc".to_owned(),
                kind: SinkKind::Teams,
                url_file: String::new(),
                events: None,
                min_severity: Default::default(),
                hmac_secret_file: None,
                timeout: Duration::from_secs(10),
            }
        };
        let error = Sink::from_config(&missing, dir.path()).expect_err("no file").to_string();
        assert!(error.contains("notifications soc: urlFile") && error.contains("absent"), "{error}");
    }

    #[test]
    fn errors_are_stripped_of_the_url() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = sink(SinkKind::Teams, "https://example.com/workflows/abc123?sig=s3cr3t", dir.path()).expect("sink");
        let text = sink.redact("error sending request for url (https://example.com/workflows/abc123?sig=s3cr3t): x");
        assert!(!text.contains("s3cr3t") && !text.contains("abc123"), "{text}");
        assert_eq!(sink.redact("sig=s3cr3t"), "[url]");
    }
}
