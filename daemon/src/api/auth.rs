//! Who is calling: bearer tokens from `api.tokens`, matched by their SHA-256, each with a role.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use remedy_policies::config::{ApiToken, Role};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::ApiState;

/// The configured tokens, as hashes.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    known: Vec<(String, Role, [u8; 32])>,
}

impl Tokens {
    pub fn new(tokens: &[ApiToken]) -> Tokens {
        let known = tokens
            .iter()
            .filter_map(|t| {
                let bytes = hex::decode(t.sha256.trim()).ok()?;
                let hash: [u8; 32] = bytes.try_into().ok()?;
                Some((t.name.clone(), t.role, hash))
            })
            .collect();
        Tokens { known }
    }

    /// The caller a presented token stands for.
    pub fn caller(&self, token: &str) -> Option<Caller> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, whatever matched, in time independent of where they differ.
        let mut found = None;
        for (name, role, hash) in &self.known {
            let difference = hash.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if difference == 0 {
                found = Some(Caller { name: name.clone(), role: *role });
            }
        }
        found
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// 403 unless the caller's role may act (reconcile, approve).
    pub fn must_act(&self) -> Result<(), ApiError> {
        if self.role.may_act() {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{} has the role {}, which may read but not act: reconciling and approving need security-operator \
                 or security-administrator",
                self.name,
                role_name(self.role)
            )))
        }
    }
}

pub fn role_name(role: Role) -> String {
    serde_json::to_value(role).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("no Authorization header: send `Authorization: Bearer <token>`"))?;
        let text = header.to_str().map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
        state.tokens.caller(token).ok_or_else(|| ApiError::unauthorized("unknown token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_known_by_its_hash() {
        let hash = hex::encode(Sha256::digest(b"s3cret"));
        let tokens = Tokens::new(&[ApiToken { name: "alice".into(), role: Role::SecurityReader, sha256: hash }]);
        assert_eq!(tokens.caller("s3cret"), Some(Caller { name: "alice".into(), role: Role::SecurityReader }));
        assert_eq!(tokens.caller("s3cre"), None);
        assert_eq!(tokens.caller(""), None);
    }
}
