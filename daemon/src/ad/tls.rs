//! TLS for LDAPS and StartTLS: rustls, verifying the DC against the configured CA file.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use super::error::AdError;

/// Makes ring the process's rustls crypto provider unless one is set already. ldap3 builds its
/// own `ClientConfig` in one case (verification off, `allowInsecure`) with the process default,
/// which panics when no default is set and more than one provider is compiled in.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client configuration trusting exactly the CAs in `ca_file` (PEM), or the system's roots when
/// there is none.
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
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AdError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Explains a rustls failure in the operator's terms.
pub fn explain(error: &rustls::Error, ca_file: Option<&Path>) -> String {
    let trust = match ca_file {
        Some(path) => format!("the CA certificate(s) in caFile {}", path.display()),
        None => "the system's CA certificates (no caFile is configured)".to_owned(),
    };
    match error {
        rustls::Error::InvalidCertificate(reason) => format!(
            "certificate verification failed: the DC's certificate was rejected ({reason:?}); it must be signed by {trust} and name the host of the URL"
        ),
        other => format!("handshake failed: {other}"),
    }
}
