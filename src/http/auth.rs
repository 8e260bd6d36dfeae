//! Bearer-token authentication: who calls, for which tenant, with which role.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use compact_str::CompactString;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::views::RatingsClaim;
use crate::jwt::{Claims, DEFAULT_TENANT, JwtSecret};
use matchwell_actors::error::{MAX_TENANT_LEN, MAX_USER_ID_LEN};

/// Seconds of clock skew tolerated on `exp`.
const EXPIRY_LEEWAY_S: u64 = 5;

/// Checks tokens. Built once at start and shared by every worker, so that the decoded key and
/// the validation rules are not rebuilt for each request.
pub(crate) struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    /// Accepts HS256 tokens signed with `secret`.
    pub(crate) fn new(secret: &JwtSecret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.validate_aud = false;
        validation.leeway = EXPIRY_LEEWAY_S;
        Self {
            key: DecodingKey::from_secret(secret.bytes()),
            validation,
        }
    }

    /// The caller behind an `Authorization` header.
    fn authenticate(&self, request: &HttpRequest) -> Result<Caller, ApiError> {
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
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|error| {
                ApiError::Unauthorized(match error.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::InvalidSignature => "bad token signature",
                    // The header and the claims are deserialized before the claims are
                    // validated, so a missing `exp` or `sub` shows up as a JSON error too.
                    ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => {
                        "malformed token: header or claims do not parse (`sub` and `exp` are required)"
                    }
                    _ => "malformed token",
                })
            })?
            .claims;
        if claims.sub.is_empty() || claims.sub.len() > MAX_USER_ID_LEN {
            return Err(ApiError::Unauthorized(
                "token `sub` must be 1 to 64 bytes long",
            ));
        }
        let tenant = claims.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
        if tenant.is_empty() || tenant.len() > MAX_TENANT_LEN {
            return Err(ApiError::Unauthorized(
                "token `tenant` must be 1 to 64 bytes long",
            ));
        }
        Ok(Caller {
            tenant: tenant.into(),
            user: claims.sub.into(),
            role: match claims.role.as_deref() {
                Some("service") => Role::Service,
                Some("admin") => Role::Admin,
                _ => Role::User,
            },
            ratings: claims.ratings,
        })
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
#[derive(Debug)]
pub(crate) struct Caller {
    /// The token's tenant.
    pub(crate) tenant: CompactString,
    /// The token's `sub`.
    user: CompactString,
    role: Role,
    ratings: Option<RatingsClaim>,
}

impl Caller {
    /// The user this request acts for: `user_id` when given (a service token may name any
    /// user of its tenant, others only themselves), else the token's own `sub`.
    pub(crate) fn act_as<'a>(&'a self, user_id: Option<&'a str>) -> Result<Acting<'a>, ApiError> {
        match user_id {
            None => Ok(self.acting_as_self()),
            Some(user) if user == self.user => Ok(self.acting_as_self()),
            Some(user) if self.role == Role::Service => Ok(Acting {
                tenant: &self.tenant,
                user,
                ratings: None,
            }),
            Some(_) => Err(ApiError::Forbidden(
                "only service tokens may act for another user",
            )),
        }
    }

    fn acting_as_self(&self) -> Acting<'_> {
        Acting {
            tenant: &self.tenant,
            user: &self.user,
            ratings: self.ratings.as_ref(),
        }
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

impl Acting<'_> {
    /// The rating the token vouches for in `time_control`, if any.
    pub(crate) fn claimed_rating(&self, time_control: &str) -> Option<i64> {
        self.ratings?.get(time_control).copied()
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match request.app_data::<web::Data<AppState>>() {
            Some(state) => state.auth.authenticate(request),
            None => Err(ApiError::Unavailable("server misconfigured".into())),
        })
    }
}
