//! JSON Web Tokens: the HS256 secret, the claims the API understands, the audience and
//! issuer tokens must name, and minting tokens.
//!
//! The secret comes from `MATCHWELL_JWT_SECRET` when set, and nothing else is then consulted.
//! Without it a development secret is generated once and kept in the data directory (file
//! mode 0600), so that `matchwell serve` works with no configuration and `matchwell token`
//! mints tokens that the local server accepts.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Name of the development secret file inside the data directory.
pub const DEV_SECRET_FILE: &str = "jwt-dev-secret";

/// Shortest secret accepted: HS256 needs at least as many bytes as its hash output.
pub const MIN_SECRET_LEN: usize = 32;

/// Tenant of tokens without a `tenant` claim.
pub const DEFAULT_TENANT: &str = "default";

/// Why no secret could be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The configured secret is too short to be safe.
    #[error("MATCHWELL_JWT_SECRET must be at least {MIN_SECRET_LEN} bytes long")]
    TooShort,
    /// The development secret file could not be read or written.
    #[error("development JWT secret {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
}

/// Where the secret came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOrigin {
    /// `MATCHWELL_JWT_SECRET`.
    Configured,
    /// An existing development secret file.
    DevFile(PathBuf),
    /// A development secret file generated just now.
    GeneratedDevFile(PathBuf),
}

/// The HS256 secret with its origin.
pub struct JwtSecret {
    bytes: Vec<u8>,
    /// Where it came from.
    pub origin: SecretOrigin,
}

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSecret")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl JwtSecret {
    /// The configured secret if any; otherwise the development secret of `data_dir`, generated
    /// if missing.
    pub fn resolve(configured: Option<&str>, data_dir: &Path) -> Result<Self, SecretError> {
        if let Some(secret) = configured {
            if secret.len() < MIN_SECRET_LEN {
                return Err(SecretError::TooShort);
            }
            return Ok(Self {
                bytes: secret.as_bytes().to_vec(),
                origin: SecretOrigin::Configured,
            });
        }
        let path = data_dir.join(DEV_SECRET_FILE);
        let file_error = |source| SecretError::File {
            path: path.clone(),
            source,
        };
        match fs::read_to_string(&path) {
            Ok(text) if text.trim().len() >= MIN_SECRET_LEN => Ok(Self {
                bytes: text.trim().as_bytes().to_vec(),
                origin: SecretOrigin::DevFile(path),
            }),
            Ok(_) => Err(file_error(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("shorter than {MIN_SECRET_LEN} bytes; delete it to generate a new one"),
            ))),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(data_dir).map_err(file_error)?;
                let mut random = [0_u8; 32];
                rand::rng().fill_bytes(&mut random);
                let text: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(file_error)?;
                file.write_all(text.as_bytes()).map_err(file_error)?;
                file.sync_all().map_err(file_error)?;
                Ok(Self {
                    bytes: text.into_bytes(),
                    origin: SecretOrigin::GeneratedDevFile(path),
                })
            }
            Err(error) => Err(file_error(error)),
        }
    }

    /// The secret's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The audience (`aud`) and issuer (`iss`) of tokens. The server requires each one that is
/// set, and `matchwell token` writes it, so that a token minted for another service or by
/// another issuer sharing the secret is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenScope {
    /// The `aud` tokens must name.
    pub audience: Option<String>,
    /// The `iss` tokens must carry.
    pub issuer: Option<String>,
}

/// A token's `aud`: RFC 7519 allows one audience as a string or several as an array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

/// The claims of a matchwell token (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// The tenant; [`DEFAULT_TENANT`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `service` (may act for any user of its tenant) or `admin` (may read `/internal/*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Ratings by time control (`"5+3"` → 1800); they win over a request's `rating`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratings: Option<BTreeMap<String, i64>>,
    /// Who the token is for; checked when the server has an audience ([`TokenScope`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Who issued the token; checked when the server has an issuer ([`TokenScope`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

impl Claims {
    /// Claims for `user` that expire `ttl` from now.
    pub fn new(user: &str, ttl: Duration) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            sub: user.to_owned(),
            exp: now.saturating_add(ttl).as_secs(),
            tenant: None,
            role: None,
            ratings: None,
            aud: None,
            iss: None,
        }
    }

    /// These claims naming the audience and issuer of `scope`.
    pub fn scoped(self, scope: &TokenScope) -> Self {
        Self {
            aud: scope.audience.clone().map(Audience::One),
            iss: scope.issuer.clone(),
            ..self
        }
    }
}

/// Signs `claims` with `secret` (HS256).
pub fn mint(secret: &JwtSecret, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.bytes()),
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_configured_secret_wins_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let secret = JwtSecret::resolve(Some(&"s".repeat(32)), dir.path()).unwrap();
        assert_eq!(secret.origin, SecretOrigin::Configured);
        assert!(!dir.path().join(DEV_SECRET_FILE).exists());
        assert!(matches!(
            JwtSecret::resolve(Some("short"), dir.path()),
            Err(SecretError::TooShort)
        ));
    }

    #[test]
    fn the_dev_secret_is_generated_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let first = JwtSecret::resolve(None, &data_dir).unwrap();
        let path = data_dir.join(DEV_SECRET_FILE);
        assert_eq!(first.origin, SecretOrigin::GeneratedDevFile(path.clone()));
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = JwtSecret::resolve(None, &data_dir).unwrap();
        assert_eq!(second.origin, SecretOrigin::DevFile(path));
        assert_eq!(first.bytes(), second.bytes());
    }
}
