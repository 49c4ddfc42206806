//! Where Graph and the token endpoint are, and the HTTPS client that reaches them (rustls with
//! ring, the system's CA certificates plus `caFile`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use remedy_policies::config::EntraConfig;
use reqwest::Url;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use super::error::EntraError;

/// The URLs derived from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// `{authorityHost}/{tenantId}/oauth2/v2.0/token`.
    pub token_url: String,
    /// `{graphUrl}/v1.0`, without a trailing slash: requests are `{graph_base}{path}`.
    pub graph_base: String,
    /// The client credentials scope: `{origin of graphUrl}/.default` for Microsoft Graph's own
    /// hosts (`https://graph.microsoft.com/.default` in the public cloud,
    /// `https://graph.microsoft.us/.default` in US Government L4, ...); for any other host (a
    /// forwarding proxy, a local test double) the cloud-independent application id form
    /// `00000003-0000-0000-c000-000000000000/.default`, because a token is only ever issued for
    /// Microsoft Graph itself, never for whatever host relays the calls.
    pub scope: String,
}

impl Endpoints {
    pub fn from_config(config: &EntraConfig) -> Result<Self, EntraError> {
        let tenant = config.tenant_id.trim();
        if tenant.is_empty() || !tenant.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return Err(EntraError::Config(format!(
                "tenantId {tenant:?} must be the tenant's GUID or its domain name (letters, digits, '-' and '.')"
            )));
        }
        if config.client_id.trim().is_empty() {
            return Err(EntraError::Config("clientId is empty".into()));
        }
        let authority = parse_base("authorityHost", &config.authority_host)?;
        let graph = parse_base("graphUrl", &config.graph_url)?;
        let authority_text = authority.as_str().trim_end_matches('/');
        let graph_text = graph.as_str().trim_end_matches('/');
        let graph_base =
            if graph_text.ends_with("/v1.0") { graph_text.to_owned() } else { format!("{graph_text}/v1.0") };
        Ok(Endpoints {
            token_url: format!("{authority_text}/{tenant}/oauth2/v2.0/token"),
            graph_base,
            scope: scope_for(&graph),
        })
    }

    /// The absolute URL of a Graph path (`/users/{id}`).
    pub fn graph(&self, path: &str) -> String {
        format!("{}{path}", self.graph_base)
    }
}

/// Microsoft Graph's service roots: global, US Government L4 and L5 (DOD), China (21Vianet).
/// Source: https://learn.microsoft.com/graph/deployments
const GRAPH_HOSTS: &[&str] =
    &["graph.microsoft.com", "graph.microsoft.us", "dod-graph.microsoft.us", "microsoftgraph.chinacloudapi.cn"];

/// Microsoft Graph's application id, the same in every cloud.
const GRAPH_APP_ID_SCOPE: &str = "00000003-0000-0000-c000-000000000000/.default";

fn scope_for(graph: &Url) -> String {
    let known = graph.host_str().is_some_and(|host| GRAPH_HOSTS.iter().any(|h| h.eq_ignore_ascii_case(host)));
    if known {
        format!("{}/.default", graph.origin().ascii_serialization())
    } else {
        GRAPH_APP_ID_SCOPE.to_owned()
    }
}

/// Parses a base URL; plain `http://` only for a loopback host (a local test double): the client
/// secret and the access tokens must not cross a network in clear.
fn parse_base(field: &str, text: &str) -> Result<Url, EntraError> {
    let url = Url::parse(text.trim()).map_err(|e| EntraError::Config(format!("{field} {text:?} is not a URL: {e}")))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(EntraError::Config(format!("{field} {text:?} must not have a query or fragment")));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(EntraError::Config(format!(
            "{field} {text:?} is plain HTTP: the client secret and access tokens would cross the network in clear; use https:// (http:// is accepted for loopback addresses only)"
        ))),
        other => Err(EntraError::Config(format!("{field} {text:?} has scheme {other:?}: use https://"))),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Percent-encodes one path segment (a UPN or an object id): everything but RFC 3986's
/// unreserved characters and `@` is escaped, so `#`, `?`, `/` and `%` in a UPN stay in the segment.
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `/users/{id or UPN}`. A UPN that starts with `$` must be written `/users('$x@contoso.com')`
/// (Graph reads `/users/$...` as a system segment).
pub fn user_path(key: &str) -> String {
    if key.starts_with('$') {
        format!("/users('{}')", encode_segment(&key.replace('\'', "''")))
    } else {
        format!("/users/{}", encode_segment(key))
    }
}

/// The HTTP client: rustls (ring) trusting the system's CA certificates and those in `ca_file`.
pub fn client(
    config: &EntraConfig,
    ca_file: Option<&Path>,
    endpoints: &Endpoints,
) -> Result<reqwest::Client, EntraError> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| EntraError::Config(format!("caFile {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(EntraError::Config(format!("caFile {} holds no PEM certificate", path.display())));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| EntraError::Config(format!("caFile {}: unusable certificate: {e}", path.display())))?;
        }
    }
    let needs_tls = endpoints.token_url.starts_with("https:") || endpoints.graph_base.starts_with("https:");
    if needs_tls && roots.is_empty() {
        return Err(EntraError::Config(
            "no system CA certificates were found and no caFile is configured: set entraId.caFile".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| EntraError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        // Graph does not redirect these calls; a redirect would be a misconfiguration to report.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("remedy/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| EntraError::Config(format!("HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(authority: &str, graph: &str) -> EntraConfig {
        EntraConfig {
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "00000000-0000-0000-0000-000000000001".into(),
            client_secret_file: Some("secret".into()),
            client_certificate_file: None,
            federated_token_file: None,
            authority_host: authority.into(),
            graph_url: graph.into(),
            ca_file: None,
            request_timeout: Duration::from_secs(15),
            delta_interval: Duration::from_secs(30),
            confirmation_deadline: Duration::from_secs(300),
        }
    }

    #[test]
    fn public_cloud_defaults() {
        let e = Endpoints::from_config(&config("https://login.microsoftonline.com", "https://graph.microsoft.com"))
            .unwrap();
        assert_eq!(e.scope, "https://graph.microsoft.com/.default");
        assert_eq!(e.token_url, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
        assert_eq!(e.graph("/$batch"), "https://graph.microsoft.com/v1.0/$batch");
    }

    #[test]
    fn national_clouds_and_the_simulator() {
        let us = Endpoints::from_config(&config("https://login.microsoftonline.us/", "https://graph.microsoft.us/"))
            .unwrap();
        assert_eq!(us.scope, "https://graph.microsoft.us/.default");
        assert_eq!(us.graph_base, "https://graph.microsoft.us/v1.0");
        let sim = Endpoints::from_config(&config("http://127.0.0.1:8080", "http://127.0.0.1:8080")).unwrap();
        assert_eq!(sim.scope, "00000003-0000-0000-c000-000000000000/.default");
        let china = Endpoints::from_config(&config(
            "https://login.chinacloudapi.cn",
            "https://microsoftgraph.chinacloudapi.cn",
        ))
        .unwrap();
        assert_eq!(china.scope, "https://microsoftgraph.chinacloudapi.cn/.default");
        assert_eq!(sim.token_url, "http://127.0.0.1:8080/contoso.onmicrosoft.com/oauth2/v2.0/token");
        let versioned =
            Endpoints::from_config(&config("https://login.microsoftonline.com", "https://graph.microsoft.com/v1.0"))
                .unwrap();
        assert_eq!(versioned.graph_base, "https://graph.microsoft.com/v1.0");
    }

    #[test]
    fn clear_text_only_on_loopback() {
        let error =
            Endpoints::from_config(&config("http://login.example.com", "https://graph.microsoft.com")).unwrap_err();
        assert!(error.to_string().contains("plain HTTP"), "{error}");
        assert!(Endpoints::from_config(&config("http://localhost:1", "http://[::1]:2")).is_ok());
        let mut bad = config("https://login.microsoftonline.com", "https://graph.microsoft.com");
        bad.tenant_id = "a/b".into();
        assert!(Endpoints::from_config(&bad).is_err());
    }

    #[test]
    fn paths_keep_upns_in_one_segment() {
        assert_eq!(user_path("alice@contoso.com"), "/users/alice@contoso.com");
        assert_eq!(user_path("a#b?c/d%@x.com"), "/users/a%23b%3Fc%2Fd%25@x.com");
        assert_eq!(user_path("$admin@x.com"), "/users('%24admin@x.com')");
    }
}
