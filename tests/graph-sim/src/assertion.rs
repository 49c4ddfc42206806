//! JSON Web Tokens as the token endpoint meets them in place of a client secret: a client
//! assertion signed with a certificate registered on the app (`private_key_jwt`), or a token from
//! an identity provider the app trusts (workload identity federation). Parsing, RS256/PS256
//! signatures (ring), certificates (x509-parser) and their thumbprints.
//!
//! Sources: https://learn.microsoft.com/entra/identity-platform/certificate-credentials (header
//! `alg` RS256 or PS256, `typ`, `x5t#S256` = base64url SHA-256 of the certificate's DER, or the
//! older `x5t` = SHA-1; claims `aud` = the token endpoint URL, `iss` = `sub` = the client id,
//! `jti`, `nbf`, `exp`, `iat`), https://learn.microsoft.com/graph/api/resources/federatedidentitycredential
//! (a federated credential: `issuer`, `subject`, `audiences`, `api://AzureADTokenExchange` for
//! Entra ID).
//!
//! Also [`sign_jwt`], the signing side, for tests: what an identity provider (or a client) does.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaKeyPair, UnparsedPublicKey};
use serde_json::{Map, Value};

/// A JWT split into its parts; nothing about it is trusted yet.
#[derive(Debug)]
pub(crate) struct Jwt {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// `header.payload`, as signed.
    signed: String,
    signature: Vec<u8>,
}

impl Jwt {
    /// Splits and decodes a compact JWS; the reason when it is not one.
    pub fn parse(text: &str) -> Result<Jwt, String> {
        let mut parts = text.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("a JWT has three parts separated by '.'".into());
        };
        let object = |part: &str, name: &str| -> Result<Map<String, Value>, String> {
            let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| format!("the {name} is not base64url"))?;
            match serde_json::from_slice(&bytes) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(format!("the {name} is not a JSON object")),
            }
        };
        Ok(Jwt {
            header: object(header, "header")?,
            claims: object(payload, "payload")?,
            signed: format!("{header}.{payload}"),
            signature: URL_SAFE_NO_PAD.decode(signature).map_err(|_| "the signature is not base64url".to_owned())?,
        })
    }

    pub fn header_text(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    pub fn claim_text(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A NumericDate claim (seconds since the epoch).
    pub fn claim_time(&self, name: &str) -> Option<i64> {
        self.claims.get(name).and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
    }

    /// `aud`: one string, or the first of an array.
    pub fn audiences(&self) -> Vec<&str> {
        match self.claims.get("aud") {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether `public_key` (PKCS#1 RSAPublicKey) made the signature, with the header's `alg`.
    pub fn verify(&self, public_key: &[u8]) -> Result<(), String> {
        let algorithm: &dyn signature::VerificationAlgorithm = match self.header_text("alg") {
            Some("RS256") => &signature::RSA_PKCS1_2048_8192_SHA256,
            Some("PS256") => &signature::RSA_PSS_2048_8192_SHA256,
            other => return Err(format!("alg {other:?} is not RS256 or PS256")),
        };
        UnparsedPublicKey::new(algorithm, public_key)
            .verify(self.signed.as_bytes(), &self.signature)
            .map_err(|_| "the signature does not match".to_owned())
    }
}

/// A certificate as the app registration (or a trusted issuer) holds it.
#[derive(Debug, Clone)]
pub(crate) struct Certificate {
    /// SHA-256 of the DER, as `x5t#S256` carries it (raw bytes).
    pub sha256: Vec<u8>,
    /// SHA-1 of the DER, as `x5t` carries it.
    pub sha1: Vec<u8>,
    /// The subject public key (PKCS#1 RSAPublicKey for RSA).
    pub public_key: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
}

impl Certificate {
    /// Reads the first certificate of a PEM text.
    pub fn from_pem(pem: &str) -> Result<Certificate, String> {
        let block = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
            .filter_map(Result::ok)
            .find(|block| block.label == "CERTIFICATE")
            .ok_or_else(|| "no PEM block \"CERTIFICATE\"".to_owned())?;
        let certificate = block.parse_x509().map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let validity = certificate.validity();
        Ok(Certificate {
            sha256: ring::digest::digest(&ring::digest::SHA256, &block.contents).as_ref().to_vec(),
            sha1: ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &block.contents).as_ref().to_vec(),
            public_key: certificate.public_key().subject_public_key.data.to_vec(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// Whether the JWT's header names this certificate (`x5t#S256`, or `x5t`).
    pub fn is_named_by(&self, jwt: &Jwt) -> bool {
        let decoded = |name: &str| jwt.header_text(name).and_then(|t| URL_SAFE_NO_PAD.decode(t).ok());
        decoded("x5t#S256").is_some_and(|t| t == self.sha256) || decoded("x5t").is_some_and(|t| t == self.sha1)
    }
}

/// The thumbprint a JWT's header names, in hex as the portal shows it (for error texts).
pub(crate) fn named_thumbprint(jwt: &Jwt) -> String {
    ["x5t#S256", "x5t"]
        .iter()
        .find_map(|name| jwt.header_text(name).and_then(|t| URL_SAFE_NO_PAD.decode(t).ok()))
        .map(|bytes| bytes.iter().map(|b| format!("{b:02X}")).collect())
        .unwrap_or_default()
}

/// The base64url SHA-256 thumbprint of the first certificate in `certificate_pem`: the `x5t#S256`
/// a JWT signed with its key names.
pub fn thumbprint_sha256(certificate_pem: &str) -> Result<String, String> {
    Certificate::from_pem(certificate_pem).map(|c| URL_SAFE_NO_PAD.encode(c.sha256))
}

/// Signs `claims` as a compact JWT with the RSA private key of `key_pem` (PKCS#8 `PRIVATE KEY` or
/// PKCS#1 `RSA PRIVATE KEY`); `header` gets `alg` (RS256 unless it names PS256) and `typ: JWT`
/// when it lacks them. For tests: this is the signing side (an identity provider issuing a
/// federated token, or a client making an assertion), which the simulator itself never does.
pub fn sign_jwt(key_pem: &str, mut header: Map<String, Value>, claims: &Value) -> Result<String, String> {
    let block = x509_parser::pem::Pem::iter_from_buffer(key_pem.as_bytes())
        .filter_map(Result::ok)
        .find(|block| block.label.ends_with("PRIVATE KEY"))
        .ok_or_else(|| "no PEM block \"PRIVATE KEY\"".to_owned())?;
    let key = match block.label.as_str() {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&block.contents),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&block.contents),
        other => return Err(format!("unsupported key block {other:?}")),
    }
    .map_err(|e| format!("not an RSA key: {e}"))?;
    header.entry("alg").or_insert_with(|| Value::from("RS256"));
    header.entry("typ").or_insert_with(|| Value::from("JWT"));
    let padding: &'static dyn signature::RsaEncoding = if header.get("alg").and_then(Value::as_str) == Some("PS256") {
        &signature::RSA_PSS_SHA256
    } else {
        &signature::RSA_PKCS1_SHA256
    };
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(padding, &ring::rand::SystemRandom::new(), signed.as_bytes(), &mut signature)
        .map_err(|_| "signing failed".to_owned())?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}
