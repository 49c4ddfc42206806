//! TLS for LDAPS and StartTLS: rustls, verifying the DC against the configured CA file.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use super::error::AdError;

/// Makes ring the process's rustls crypto provider unless one is set already. ldap3 builds its
/// own `ClientConfig` in one case (verification off, `allowInsecure`) with the process default,
/// which panics when no default is set and more than one provider is compiled in.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client configuration trusting exactly the CAs in `ca_file` (PEM), or the system's roots when
/// there is none. Certificates are verified by webpki as usual; see [`SaysWhichNames`].
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, AdError> {
    install_crypto_provider();
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| AdError::Config(format!("caFile {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(AdError::Config(format!("caFile {} holds no PEM certificate", path.display())));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| AdError::Config(format!("caFile {}: unusable certificate: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(AdError::Config(
                    "no caFile is configured and no system CA certificates were found: set activeDirectory.caFile"
                        .into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| AdError::Config(format!("TLS setup: {e}")))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AdError::Config(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SaysWhichNames { webpki }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The webpki verifier, unchanged in what it accepts; when the certificate does not name the host
/// of the URL, its error says which names the certificate has ([`NameMismatch`]).
#[derive(Debug)]
struct SaysWhichNames {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for SaysWhichNames {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now).map_err(|error| {
            match error {
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                ) => rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                    NameMismatch::of(server_name, end_entity),
                )))),
                other => other,
            }
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A trusted certificate that does not name the host of the URL, and the names it has:
/// `DNS:dc1.remedy.test`, `IP:10.0.0.5`, or, without a subjectAltName, its subject's `CN=dc1`
/// (which TLS clients no longer match against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameMismatch {
    pub host: String,
    pub alt_names: Vec<String>,
    pub common_names: Vec<String>,
}

impl NameMismatch {
    fn of(server_name: &ServerName<'_>, certificate: &CertificateDer<'_>) -> NameMismatch {
        let host = server_name.to_str().into_owned();
        let Ok((_, certificate)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
            return NameMismatch { host, alt_names: Vec::new(), common_names: Vec::new() };
        };
        let alt_names = match certificate.subject_alternative_name() {
            Ok(Some(extension)) => extension.value.general_names.iter().map(general_name).collect(),
            _ => Vec::new(),
        };
        let common_names = certificate
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(|cn| format!("CN={cn}"))
            .collect();
        NameMismatch { host, alt_names, common_names }
    }
}

fn general_name(name: &x509_parser::extensions::GeneralName<'_>) -> String {
    use x509_parser::extensions::GeneralName;
    match name {
        GeneralName::DNSName(dns) => format!("DNS:{dns}"),
        GeneralName::IPAddress(bytes) => match <[u8; 4]>::try_from(*bytes) {
            Ok(v4) => format!("IP:{}", std::net::Ipv4Addr::from(v4)),
            Err(_) => match <[u8; 16]>::try_from(*bytes) {
                Ok(v6) => format!("IP:{}", std::net::Ipv6Addr::from(v6)),
                Err(_) => "IP:(malformed)".to_owned(),
            },
        },
        GeneralName::URI(uri) => format!("URI:{uri}"),
        GeneralName::RFC822Name(mail) => format!("email:{mail}"),
        other => other.to_string(),
    }
}

impl std::fmt::Display for NameMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the DC's certificate has no subjectAltName for {}", self.host)?;
        match (self.alt_names.as_slice(), self.common_names.as_slice()) {
            ([], []) => write!(f, " (it names no host at all)"),
            ([], common) => write!(f, " (it has no subjectAltName at all and names only {})", common.join(", ")),
            (alt, _) => write!(f, " (it names only {})", alt.join(", ")),
        }
    }
}

impl std::error::Error for NameMismatch {}

/// Explains a rustls failure in the operator's terms: sentences, never a debug dump.
pub fn explain(error: &rustls::Error, ca_file: Option<&Path>) -> String {
    let trust = match ca_file {
        Some(path) => format!("the CA certificate(s) in caFile {}", path.display()),
        None => "the system's CA certificates (no caFile is configured)".to_owned(),
    };
    match error {
        rustls::Error::InvalidCertificate(reason) => {
            let why = match reason {
                CertificateError::Other(other) => match other.0.downcast_ref::<NameMismatch>() {
                    Some(mismatch) => format!(
                        "{mismatch}: put a name or address the certificate has in the URL, or give the DC a \
                         certificate that names {}",
                        mismatch.host
                    ),
                    None => format!("the DC's certificate was rejected: {other}"),
                },
                CertificateError::UnknownIssuer => format!("the DC's certificate is not signed by {trust}"),
                other => format!("the DC's certificate was rejected: {other}"),
            };
            format!("certificate verification failed: {why}")
        }
        rustls::Error::InvalidMessage(_) => {
            format!("the server did not answer in TLS (it answered in plain text?): {PLAIN_TEXT_HINT}")
        }
        other => format!("handshake failed: {other}"),
    }
}

/// The question to ask when a TLS handshake meets a server that speaks LDAP in the clear.
pub const PLAIN_TEXT_HINT: &str = "is this an ldap:// port (389) rather than an ldaps:// one (636)?";
