//! Bearer-token authentication: who calls, for which tenant, with which role.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use compact_str::CompactString;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::http::AppState;
use crate::http::access::access_logged;
use crate::http::error::ApiError;
use crate::http::views::RatingsClaim;
use crate::jwt::{Claims, DEFAULT_TENANT, JwtSecret, TokenScope};
use matchwell_actors::error::{MAX_TENANT_LEN, MAX_USER_ID_LEN, check_name};

/// Seconds of clock skew tolerated on `exp`.
const EXPIRY_LEEWAY_S: u64 = 5;

/// How many verified tokens are remembered (a few hundred bytes each).
const VERIFIED_TOKENS: usize = 32_768;

/// Checks tokens. Built once at start and shared by every worker, so that the decoded key and
/// the validation rules are not rebuilt for each request.
///
/// A client sends the same token with every request until it expires, and checking one
/// (decoding, two JSON parses, an HMAC) costs more than the rest of a status request's
/// handler. So each token that passed is remembered, by its exact text, with the caller it
/// names and its expiry: a token seen again skips all but the expiry check. Only tokens that
/// passed are remembered, so a forged one is checked in full every time.
pub(crate) struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    verified: quick_cache::sync::Cache<String, VerifiedToken>,
}

/// A token that passed, and what it says.
#[derive(Debug, Clone)]
struct VerifiedToken {
    caller: Caller,
    /// Its `exp`, seconds since the Unix epoch.
    expires_at_s: u64,
}

impl Authenticator {
    /// Accepts HS256 tokens signed with `secret` that name the audience and issuer of
    /// `scope`, where it has them.
    pub(crate) fn new(secret: &JwtSecret, scope: &TokenScope) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        // Without an audience of its own, the server accepts tokens with any `aud`.
        validation.validate_aud = false;
        if let Some(audience) = &scope.audience {
            validation.set_audience(&[audience]);
            validation.validate_aud = true;
            required.push("aud");
        }
        // An issuer is only compared when the token has one, hence required.
        if let Some(issuer) = &scope.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation.validate_exp = true;
        validation.leeway = EXPIRY_LEEWAY_S;
        Self {
            key: DecodingKey::from_secret(secret.bytes()),
            validation,
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
        }
    }

    /// The caller behind an `Authorization` header.
    pub(crate) fn authenticate(&self, request: &HttpRequest) -> Result<Caller, ApiError> {
        let value = request
            .headers()
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("missing bearer token"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|text| {
                text.strip_prefix("Bearer ")
                    .or_else(|| text.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::Unauthorized(
                "Authorization must be `Bearer <token>`",
            ))?;
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        self.verify(token, now_s)
    }

    /// The caller `token` names, if it is valid at `now_s`.
    fn verify(&self, token: &str, now_s: u64) -> Result<Caller, ApiError> {
        if let Some(known) = self.verified.get(token) {
            if known.expires_at_s.saturating_add(EXPIRY_LEEWAY_S) < now_s {
                self.verified.remove(token);
                return Err(ApiError::Unauthorized("token expired"));
            }
            return Ok(known.caller);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|error| {
                ApiError::Unauthorized(match error.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::InvalidSignature => "bad token signature",
                    ErrorKind::InvalidAudience => "token `aud` does not name this server",
                    ErrorKind::InvalidIssuer => "token `iss` is not this server's issuer",
                    ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                        "token has no `aud`; this server requires one"
                    }
                    ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => {
                        "token has no `iss`; this server requires one"
                    }
                    // The header and the claims are deserialized before the claims are
                    // validated, so a missing `exp` or `sub` shows up as a JSON error too.
                    ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => {
                        "malformed token: header or claims do not parse (`sub` and `exp` are required)"
                    }
                    _ => "malformed token",
                })
            })?
            .claims;
        let length = |text: &str| text.chars().count();
        if claims.sub.is_empty() || length(&claims.sub) > MAX_USER_ID_LEN {
            return Err(ApiError::Unauthorized(
                "token `sub` must be 1 to 64 characters long",
            ));
        }
        let tenant = claims.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
        if tenant.is_empty() || length(tenant) > MAX_TENANT_LEN {
            return Err(ApiError::Unauthorized(
                "token `tenant` must be 1 to 64 characters long",
            ));
        }
        let caller = Caller {
            tenant: tenant.into(),
            user: claims.sub.into(),
            role: match claims.role.as_deref() {
                Some("service") => Role::Service,
                Some("admin") => Role::Admin,
                _ => Role::User,
            },
            ratings: claims.ratings.map(Arc::new),
        };
        self.verified.insert(
            token.to_owned(),
            VerifiedToken {
                caller: caller.clone(),
                expires_at_s: claims.exp,
            },
        );
        Ok(caller)
    }
}

/// What a token allows beyond acting for its own `sub`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    /// May act for any user of its tenant.
    Service,
    /// May read `/internal/*`.
    Admin,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The token's tenant.
    pub(crate) tenant: CompactString,
    /// The token's `sub`.
    user: CompactString,
    role: Role,
    /// Shared with the remembered token it came from.
    ratings: Option<Arc<RatingsClaim>>,
}

impl Caller {
    /// The user this request acts for: `user_id` when given (a service token may name any
    /// user of its tenant, others only themselves), else the token's own `sub`. A user named
    /// by a service must be a valid user id, whether the request reads or writes, as the
    /// OpenAPI document says of every `user_id`.
    pub(crate) fn act_as<'a>(&'a self, user_id: Option<&'a str>) -> Result<Acting<'a>, ApiError> {
        match user_id {
            None => Ok(self.acting_as_self()),
            Some(user) if user == self.user => Ok(self.acting_as_self()),
            Some(user) if self.role == Role::Service => {
                check_name("user_id", user, MAX_USER_ID_LEN)
                    .map_err(|error| ApiError::from_engine(error, &self.tenant))?;
                Ok(Acting {
                    tenant: &self.tenant,
                    user,
                    ratings: None,
                })
            }
            Some(_) => Err(ApiError::Forbidden(
                "only service tokens may act for another user",
            )),
        }
    }

    fn acting_as_self(&self) -> Acting<'_> {
        Acting {
            tenant: &self.tenant,
            user: &self.user,
            ratings: self.ratings.as_deref(),
        }
    }

    /// The token's tenant.
    pub(crate) fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The token's `sub`.
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// Refuses callers without the `admin` role.
    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden("the admin role is required"))
        }
    }
}

/// The user a request acts for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acting<'a> {
    /// Their tenant.
    pub(crate) tenant: &'a str,
    /// Their user id.
    pub(crate) user: &'a str,
    /// The token's ratings, when the token is theirs (a service's ratings are not the
    /// user's).
    ratings: Option<&'a RatingsClaim>,
}

impl<'a> Acting<'a> {
    /// The rating the token vouches for in `time_control`, if any.
    pub(crate) fn claimed_rating(&self, time_control: &str) -> Option<i64> {
        self.ratings?.get(time_control).copied()
    }

    /// `user` of `tenant`, vouched for by no token.
    #[cfg(test)]
    pub(crate) fn new(tenant: &'a str, user: &'a str) -> Self {
        Self {
            tenant,
            user,
            ratings: None,
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    /// The caller is also left in the request's extensions for the access log, when it is
    /// written.
    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = request.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Unavailable("server misconfigured".into())));
        };
        let caller = state.auth.authenticate(request);
        if let Ok(caller) = &caller {
            if access_logged() {
                request.extensions_mut().insert(caller.clone());
            }
        }
        ready(caller)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::jwt::{Audience, mint};

    fn secret(text: &str) -> JwtSecret {
        JwtSecret::resolve(Some(text), Path::new("/nonexistent")).expect("a long enough secret")
    }

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes";

    #[test]
    fn a_remembered_token_is_accepted_until_it_expires() {
        let auth = Authenticator::new(&secret(SECRET), &TokenScope::default());
        let claims = Claims::new("alice", Duration::from_secs(60));
        let token = mint(&secret(SECRET), &claims).expect("minted");
        let issued_s = claims.exp - 60;
        assert_eq!(auth.verify(&token, issued_s).expect("valid").user, "alice");
        assert!(auth.verified.get(token.as_str()).is_some(), "remembered");
        assert_eq!(
            auth.verify(&token, issued_s + 30).expect("valid").user,
            "alice"
        );
        let late_s = claims.exp + EXPIRY_LEEWAY_S + 1;
        assert!(matches!(
            auth.verify(&token, late_s),
            Err(ApiError::Unauthorized("token expired"))
        ));
        assert!(auth.verified.get(token.as_str()).is_none(), "forgotten");
    }

    #[test]
    fn an_audience_may_be_one_of_several() {
        let scope = TokenScope {
            audience: Some("matchwell".into()),
            issuer: None,
        };
        let auth = Authenticator::new(&secret(SECRET), &scope);
        let mut claims = Claims::new("alice", Duration::from_secs(60));
        let now_s = claims.exp - 60;
        let mut verify = |audiences: &[&str]| {
            let audiences = audiences.iter().map(|name| name.to_string()).collect();
            claims.aud = Some(Audience::Many(audiences));
            auth.verify(&mint(&secret(SECRET), &claims).expect("minted"), now_s)
        };
        assert!(verify(&["billing", "matchwell"]).is_ok());
        assert!(matches!(
            verify(&["billing"]),
            Err(ApiError::Unauthorized(
                "token `aud` does not name this server"
            ))
        ));
    }

    #[test]
    fn a_token_that_fails_is_never_remembered() {
        let auth = Authenticator::new(&secret(SECRET), &TokenScope::default());
        let claims = Claims::new("mallory", Duration::from_secs(60));
        let forged = mint(&secret("another-secret-of-at-least-32-bytes"), &claims).expect("minted");
        for _ in 0..2 {
            assert!(matches!(
                auth.verify(&forged, claims.exp - 60),
                Err(ApiError::Unauthorized("bad token signature"))
            ));
        }
        assert!(auth.verified.get(forged.as_str()).is_none());
    }
}
