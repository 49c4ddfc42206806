//! How the app registration proves who it is at the token endpoint: a client secret, a client
//! assertion signed with the key of a certificate uploaded to the app (`private_key_jwt`), or a
//! token from an identity provider the app trusts (workload identity federation).
//!
//! The assertion follows https://learn.microsoft.com/entra/identity-platform/certificate-credentials:
//! header `alg: PS256`, `typ: JWT`, `x5t#S256` (base64url SHA-256 of the certificate's DER);
//! claims `aud` = the token endpoint URL, `iss` = `sub` = the client id, a random `jti`, `nbf` and
//! `iat` now, `exp` ten minutes later (the page asks for at most 5 to 10 minutes after `nbf`). A
//! new one is signed for every token request. Both it and a federated token go as
//! `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and
//! `client_assertion` (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow).
//! The federated token file is read again for every token request: whoever writes it (the
//! kubelet, for AKS workload identity) replaces it before the token in it expires.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use remedy_policies::config::{EntraConfig, EntraCredential};
use ring::signature::RsaKeyPair;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use zeroize::Zeroizing;

use super::error::EntraError;
use crate::secret::Secret;

/// `client_assertion_type` for certificate and federated assertions alike.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a signed assertion.
const ASSERTION_LIFETIME_SECONDS: i64 = 600;
/// A certificate expiring sooner than this is warned about at start.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// Which kind of credential, for messages that say what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    ClientSecret,
    ClientCertificate,
    FederatedToken,
}

impl CredentialKind {
    /// The configuration key that names it.
    pub fn key(self) -> &'static str {
        match self {
            CredentialKind::ClientSecret => "clientSecretFile",
            CredentialKind::ClientCertificate => "clientCertificateFile",
            CredentialKind::FederatedToken => "federatedTokenFile",
        }
    }
}

/// The credential, read and checked.
pub(crate) enum Credential {
    Secret(Secret),
    Certificate(Box<CertificateKey>),
    /// The file is read for each token request.
    FederatedToken(PathBuf),
}

/// The private key and the thumbprint of the certificate it belongs to.
pub(crate) struct CertificateKey {
    key: RsaKeyPair,
    /// `x5t#S256`.
    thumbprint: String,
    path: PathBuf,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Secret(secret) => write!(f, "ClientSecret({secret:?})"),
            Credential::Certificate(certificate) => f
                .debug_struct("ClientCertificate")
                .field("path", &certificate.path)
                .field("x5t#S256", &certificate.thumbprint)
                .field("key", &"[redacted]")
                .finish(),
            Credential::FederatedToken(path) => f.debug_tuple("FederatedTokenFile").field(path).finish(),
        }
    }
}

/// What one token request carries to prove the client's identity.
pub(crate) enum Proof<'a> {
    Secret(&'a Secret),
    /// A signed client assertion or a federated token.
    Assertion(Secret),
}

impl Proof<'_> {
    /// The form fields, beside `client_id`, `scope` and `grant_type`.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        match self {
            Proof::Secret(secret) => vec![("client_secret", secret.expose())],
            Proof::Assertion(assertion) => {
                vec![("client_assertion_type", JWT_BEARER), ("client_assertion", assertion.expose())]
            }
        }
    }

    /// The value that must never be shown (scrubbed from what the endpoint answers).
    pub fn secret(&self) -> &str {
        match self {
            Proof::Secret(secret) => secret.expose(),
            Proof::Assertion(assertion) => assertion.expose(),
        }
    }
}

impl Credential {
    /// Reads the credential `config` names; `resolve` makes its path absolute.
    pub fn from_config(config: &EntraConfig, resolve: impl Fn(&str) -> PathBuf) -> Result<Credential, EntraError> {
        match config.credential().map_err(EntraError::Config)? {
            EntraCredential::ClientSecret(file) => {
                Secret::from_file(&resolve(file)).map(Credential::Secret).map_err(|e| EntraError::Config(e.to_string()))
            }
            EntraCredential::ClientCertificate(file) => {
                CertificateKey::read(&resolve(file), Utc::now()).map(|key| Credential::Certificate(Box::new(key)))
            }
            EntraCredential::FederatedToken(file) => {
                let path = resolve(file);
                // Read once now, so that a wrong path shows at start.
                read_federated_token(&path)?;
                Ok(Credential::FederatedToken(path))
            }
        }
    }

    pub fn kind(&self) -> CredentialKind {
        match self {
            Credential::Secret(_) => CredentialKind::ClientSecret,
            Credential::Certificate(_) => CredentialKind::ClientCertificate,
            Credential::FederatedToken(_) => CredentialKind::FederatedToken,
        }
    }

    /// The proof for one token request to `token_url`.
    pub fn proof(&self, token_url: &str, client_id: &str) -> Result<Proof<'_>, EntraError> {
        match self {
            Credential::Secret(secret) => Ok(Proof::Secret(secret)),
            Credential::Certificate(certificate) => {
                certificate.assertion(token_url, client_id, Utc::now()).map(Proof::Assertion)
            }
            Credential::FederatedToken(path) => read_federated_token(path).map(Proof::Assertion),
        }
    }
}

fn read_federated_token(path: &Path) -> Result<Secret, EntraError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
        EntraError::Config(format!("cannot read the federated token file {} (federatedTokenFile): {e}", path.display()))
    })?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| EntraError::Config(format!("the federated token file {} is not text", path.display())))?
        .trim();
    if text.split('.').count() != 3 {
        return Err(EntraError::Config(format!(
            "the federated token file {} does not hold a JWT (three base64url parts separated by '.')",
            path.display()
        )));
    }
    Ok(Secret::new(text.to_owned()))
}

impl CertificateKey {
    /// Reads a PEM file holding the RSA private key (PKCS#8 `PRIVATE KEY` or PKCS#1
    /// `RSA PRIVATE KEY`, unencrypted) and its certificate, and checks that they belong together
    /// and that the certificate is valid at `now`.
    fn read(path: &Path, now: DateTime<Utc>) -> Result<CertificateKey, EntraError> {
        let problem = |what: String| EntraError::Config(format!("clientCertificateFile {}: {what}", path.display()));
        let pem = Zeroizing::new(std::fs::read(path).map_err(|e| problem(format!("cannot read it: {e}")))?);
        let key = match PrivateKeyDer::from_pem_slice(&pem) {
            Ok(PrivateKeyDer::Pkcs8(der)) => RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()),
            Ok(PrivateKeyDer::Pkcs1(der)) => RsaKeyPair::from_der(der.secret_pkcs1_der()),
            Ok(_) => {
                return Err(problem(
                    "the private key is not an RSA key (Entra ID certificate credentials are RSA)".into(),
                ))
            }
            Err(_) if contains(&pem, b"ENCRYPTED PRIVATE KEY") => {
                return Err(problem(
                    "the private key is encrypted; remedy reads an unencrypted key from a file only it may read \
                     (openssl pkey -in encrypted.pem -out key.pem, then chmod 600)"
                        .into(),
                ))
            }
            Err(_) => return Err(problem("no private key (PRIVATE KEY or RSA PRIVATE KEY block) in it".into())),
        }
        .map_err(|e| problem(format!("the RSA private key cannot be used: {e}")))?;
        let certificate = CertificateDer::pem_slice_iter(&pem).next().and_then(Result::ok).ok_or_else(|| {
            problem(
                "no certificate (CERTIFICATE block) in it: append the certificate uploaded to the app registration"
                    .into(),
            )
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref())
            .map_err(|e| problem(format!("the certificate cannot be read: {e}")))?;
        if parsed.public_key().subject_public_key.data.as_ref() != ring::signature::KeyPair::public_key(&key).as_ref() {
            return Err(problem(
                "the certificate is not the private key's: put the key and its own certificate in the file".into(),
            ));
        }
        let not_after = DateTime::from_timestamp(parsed.validity().not_after.timestamp(), 0).unwrap_or(now);
        if not_after <= now {
            return Err(problem(format!(
                "the certificate expired at {not_after}: make a new one, upload it to the app registration and replace the file"
            )));
        }
        let thumbprint = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, certificate.as_ref()));
        if not_after - now < chrono::Duration::days(EXPIRY_WARNING_DAYS) {
            tracing::warn!(path = %path.display(), %not_after, "the Entra ID client certificate expires soon: make a new one and upload it to the app registration");
        }
        tracing::debug!(path = %path.display(), x5t_s256 = %thumbprint, %not_after, "Entra ID client certificate read");
        Ok(CertificateKey { key, thumbprint, path: path.to_owned() })
    }

    /// A client assertion for one token request.
    fn assertion(&self, token_url: &str, client_id: &str, now: DateTime<Utc>) -> Result<Secret, EntraError> {
        let now = now.timestamp();
        let random = ring::rand::SystemRandom::new();
        let mut jti = [0u8; 16];
        ring::rand::SecureRandom::fill(&random, &mut jti)
            .map_err(|_| EntraError::Config("no randomness for the client assertion's jti".into()))?;
        let header = json!({"alg": "PS256", "typ": "JWT", "x5t#S256": self.thumbprint});
        let claims = json!({
            "aud": token_url,
            "iss": client_id,
            "sub": client_id,
            "jti": hex::encode(jti),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECONDS,
        });
        let signed =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key.sign(&ring::signature::RSA_PSS_SHA256, &random, signed.as_bytes(), &mut signature).map_err(|_| {
            EntraError::Config(format!("signing the client assertion with {} failed", self.path.display()))
        })?;
        Ok(Secret::new(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// What to do about a refusal of the token endpoint, by its AADSTS number and the credential in
/// use; `None` when remedy has nothing better to say than the endpoint's own words.
pub(crate) fn fix_for(aadsts: u32, kind: CredentialKind) -> Option<String> {
    use CredentialKind::*;
    let text = match (aadsts, kind) {
        (7000222, _) => "the client secret has expired: create a new one (app registration → Certificates & secrets → New client secret) and write its Value to the clientSecretFile, or better, move to a certificate (clientCertificateFile), which needs no shared secret; see docs/configuration.md",
        (7000215, _) => "the client secret is wrong: write the secret's Value (not its Secret ID) to the clientSecretFile, or move to a certificate (clientCertificateFile)",
        (7000216, _) => "the token request carried no credential: configure one of clientSecretFile, clientCertificateFile or federatedTokenFile",
        (700027, ClientCertificate) => "the certificate in clientCertificateFile is not registered on the app registration, has expired there, or does not match its key: upload the certificate (app registration → Certificates & secrets → Certificates → Upload certificate, or az ad app credential reset --id <clientId> --cert @cert.pem --append) and check that the file holds that certificate's own key",
        (700027, FederatedToken) => "Entra ID could not verify the signature of the token in federatedTokenFile with its issuer's keys: check the federated credential's issuer URL on the app registration",
        (700024, ClientCertificate) => "the client assertion is not within its valid time range: check this host's clock (NTP)",
        (700024, FederatedToken) => "the token in federatedTokenFile has expired or is not yet valid: check that whatever writes the file (the kubelet, with AKS workload identity) still rotates it, and this host's clock",
        (70021, _) | (700211..=700213, _) => "no federated credential on the app registration matches the token's issuer, subject and audience: add one (app registration → Certificates & secrets → Federated credentials, or az ad app federated-credential create) with the issuer and subject Entra ID names above and audience api://AzureADTokenExchange",
        (700016, _) => "no app registration with this clientId is in the tenant: check entraId.clientId and entraId.tenantId",
        (90002, _) => "the tenant is unknown: check entraId.tenantId and entraId.authorityHost",
        (50027, ClientCertificate) => "Entra ID could not read the client assertion: check that clientCertificateFile holds the certificate uploaded to the app registration",
        (50027, FederatedToken) => "Entra ID could not read the token in federatedTokenFile: check that the file holds the issuer's JWT and nothing else",
        _ => return None,
    };
    Some(text.to_owned())
}

/// The AADSTS number of a token endpoint error: the first of `error_codes`, else the one the
/// description starts with.
pub(crate) fn aadsts_number(error_codes: &[u32], description: &str) -> Option<u32> {
    error_codes.first().copied().or_else(|| {
        let digits: String = description.strip_prefix("AADSTS")?.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_number_comes_from_error_codes_or_the_description() {
        assert_eq!(aadsts_number(&[7000222], "AADSTS1: x"), Some(7000222));
        assert_eq!(aadsts_number(&[], "AADSTS700027: Client assertion failed"), Some(700027));
        assert_eq!(aadsts_number(&[], "bad gateway"), None);
    }

    #[test]
    fn an_expired_secret_names_both_fixes() {
        let fix = fix_for(7000222, CredentialKind::ClientSecret).unwrap();
        assert!(fix.contains("New client secret") && fix.contains("clientCertificateFile"), "{fix}");
        assert!(fix_for(503, CredentialKind::ClientSecret).is_none());
    }
}
