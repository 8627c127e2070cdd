//! Client auth: who may spend the provider key. Closed unless configured otherwise. A caller
//! proves itself with a client key from `ROUTER_API_KEYS`, or (with `JWT_*` set) with their
//! sign-in provider's token, verified in `jwt`.

use std::cell::RefCell;

use crate::bindings::{Bindings, Reader};
use crate::http::error::ApiError;
use crate::http::jwt::{self, JwtConfig, KeySet, TokenError, TokenVerification};
use crate::routing::log::Log;

/// `ROUTER_API_KEYS` and `ALLOW_UNAUTHENTICATED`: who may spend the provider key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAuth {
    /// `(name, key)`: logs and rate limits use the name, never the key.
    pub keys: Vec<(String, String)>,
    pub allow_unauthenticated: bool,
    /// `JWT_*`: end users' tokens from a sign-in provider.
    pub jwt: Option<JwtConfig>,
}

impl ClientAuth {
    /// `ROUTER_API_KEYS`, `ALLOW_UNAUTHENTICATED` and the `JWT_*` bindings.
    pub fn read<B: Bindings>(r: &mut Reader<'_, B>) -> ClientAuth {
        let keys = r.text("ROUTER_API_KEYS");
        ClientAuth {
            allow_unauthenticated: r.flag("ALLOW_UNAUTHENTICATED"),
            keys: r.ok(
                "ROUTER_API_KEYS",
                parse_client_keys(keys.as_deref()),
                Vec::new(),
            ),
            jwt: JwtConfig::read(r),
        }
    }
}

/// `ROUTER_API_KEYS`: comma-separated, each `key` or `name:key`. Errors never echo a key.
pub fn parse_client_keys(keys: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let mut parsed: Vec<(String, String)> = Vec::new();
    for (i, entry) in keys.unwrap_or("").split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            continue;
        }
        let (name, key) = match entry.split_once(':') {
            Some((name, key)) => (name.trim().to_string(), key.trim().to_string()),
            None => (format!("client-{}", i + 1), entry.to_string()),
        };
        if key.is_empty() || name.is_empty() {
            return Err(format!(
                "`ROUTER_API_KEYS` entry {} is `name:` with no key or `:key` with no name",
                i + 1
            ));
        }
        if parsed.iter().any(|(n, _)| *n == name) {
            return Err(format!(
                "`ROUTER_API_KEYS` entry {} reuses the name of an earlier one",
                i + 1
            ));
        }
        parsed.push((name, key));
    }
    Ok(parsed)
}

/// Why a caller was refused; the message tells them (or the operator) what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Neither `ROUTER_API_KEYS`, `JWT_*` nor `ALLOW_UNAUTHENTICATED` is set: the router refuses
    /// to be an open proxy for the company's Groq key.
    NotConfigured,
    MissingKey,
    WrongKey,
    /// A user's JWT that fails a check.
    InvalidToken(TokenError),
    /// No keys to check a token with (the JWKS could not be fetched and nothing is cached, or a
    /// key could not be imported).
    Unavailable,
}

impl From<TokenError> for AuthError {
    fn from(e: TokenError) -> Self {
        AuthError::InvalidToken(e)
    }
}

impl AuthError {
    /// The answer a caller refused for this reason gets: what to send, in the words `auth`'s
    /// configuration calls for.
    pub fn refusal(self, auth: &ClientAuth) -> ApiError {
        let missing = match auth.jwt {
            Some(_) => "missing credentials; send `Authorization: Bearer <token>` with your sign-in provider's token",
            None => "missing client key; send `Authorization: Bearer <key>`",
        };
        match self {
            AuthError::NotConfigured => ApiError::AuthNotConfigured,
            AuthError::MissingKey => ApiError::Unauthorized { message: missing },
            AuthError::WrongKey => ApiError::Unauthorized {
                message: "invalid client key",
            },
            AuthError::Unavailable => ApiError::AuthUnavailable,
            AuthError::InvalidToken(why) => {
                let message = auth.jwt.as_ref().map(|jwt| why.message(jwt));
                ApiError::InvalidToken(message.unwrap_or_else(|| "invalid token".into()))
            }
        }
    }
}

/// Who is calling: a client key's name, a verified user, or nobody (where that is allowed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller {
    pub name: Option<String>,
    /// Verified by a JWT: the name is the user's, and `tasks` may narrow what they call.
    pub user: bool,
    /// The tasks a user may call (`JWT_TASKS_CLAIM`); `None`: any.
    pub tasks: Option<Vec<String>>,
}

impl Caller {
    fn client(name: &str) -> Caller {
        Caller {
            name: Some(name.to_string()),
            ..Caller::default()
        }
    }

    /// Whether this caller may call `task`.
    pub fn may_call(&self, task: &str) -> bool {
        self.tasks
            .as_ref()
            .is_none_or(|tasks| tasks.iter().any(|t| t == task))
    }

    /// The rate-limit key: users and client keys apart, so a user named like a client does not
    /// share its limit; an anonymous caller's IP.
    pub fn limit_key(&self, ip: Option<&str>) -> String {
        match (&self.name, self.user) {
            (Some(name), true) => format!("user:{name}"),
            (Some(name), false) => format!("client:{name}"),
            (None, _) => format!("ip:{}", ip.unwrap_or("unknown")),
        }
    }
}

/// The credentials a request carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// Cloudflare Access's `Cf-Access-Jwt-Assertion` header.
    pub access_jwt: Option<&'a str>,
}

/// This isolate's and request's means to verify tokens.
pub struct TokenCheck<'a, T> {
    pub tokens: &'a T,
    pub keys: &'a RefCell<KeySet>,
    pub now_ms: u64,
    pub log: &'a dyn Log,
}

impl ClientAuth {
    pub fn is_configured(&self) -> bool {
        self.allow_unauthenticated || !self.keys.is_empty() || self.jwt.is_some()
    }

    /// Checks a request's credentials: a bearer token that is a client key is that client;
    /// otherwise, with `JWT_*` set, one of three base64url parts is a user's JWT, and without a
    /// bearer token Cloudflare Access's assertion is. Keys are looked at first, so a client key
    /// that happens to hold two dots still works.
    pub async fn authenticate(
        &self,
        credentials: Credentials<'_>,
        check: &TokenCheck<'_, impl TokenVerification>,
    ) -> Result<Caller, AuthError> {
        if !self.is_configured() {
            return Err(AuthError::NotConfigured);
        }
        let bearer = credentials.authorization.and_then(bearer_token);
        if let Some(name) = bearer.and_then(|token| self.key_owner(token)) {
            return Ok(Caller::client(name));
        }
        let jwt = match (&self.jwt, bearer) {
            (Some(jwt), Some(token)) if jwt::looks_like_jwt(token) => Some((jwt, token)),
            (Some(jwt), None) => credentials.access_jwt.map(|token| (jwt, token.trim())),
            _ => None,
        };
        if let Some((config, token)) = jwt {
            let user = jwt::verify_token(
                token,
                config,
                check.keys,
                check.tokens,
                check.now_ms,
                check.log,
            )
            .await?;
            return Ok(Caller {
                name: Some(user.name),
                user: true,
                tasks: user.tasks,
            });
        }
        self.without_key(bearer).map(|()| Caller::default())
    }

    /// Checks an `Authorization` header against the client keys. `Ok(Some(name))` for a known
    /// client, `Ok(None)` for an anonymous caller when unauthenticated access is allowed.
    pub fn check(&self, authorization: Option<&str>) -> Result<Option<&str>, AuthError> {
        if !self.is_configured() {
            return Err(AuthError::NotConfigured);
        }
        let bearer = authorization.and_then(bearer_token);
        match bearer.and_then(|token| self.key_owner(token)) {
            Some(name) => Ok(Some(name)),
            None => self.without_key(bearer).map(|()| None),
        }
    }

    /// The name of the client whose key `token` is. Every key is compared, whatever matches, so
    /// timing does not tell which one (or whether any) shares a prefix with what was sent.
    fn key_owner(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (name, key) in &self.keys {
            if constant_time_eq(key.as_bytes(), token.as_bytes()) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// A caller whose bearer token (if any) is no client key: anonymous where that is allowed
    /// (any bearer passes only when there are no keys to be wrong about).
    fn without_key(&self, bearer: Option<&str>) -> Result<(), AuthError> {
        match bearer {
            Some(_) if self.keys.is_empty() && self.allow_unauthenticated => Ok(()),
            Some(_) => Err(AuthError::WrongKey),
            None if self.allow_unauthenticated => Ok(()),
            None => Err(AuthError::MissingKey),
        }
    }
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(keys: Option<&str>, allow_unauthenticated: bool) -> ClientAuth {
        ClientAuth {
            keys: parse_client_keys(keys).unwrap(),
            allow_unauthenticated,
            jwt: None,
        }
    }

    #[test]
    fn closed_unless_configured() {
        assert_eq!(
            auth(None, false).check(Some("Bearer x")),
            Err(AuthError::NotConfigured)
        );
        assert_eq!(
            auth(Some(" , "), false).check(None),
            Err(AuthError::NotConfigured)
        );
    }

    #[test]
    fn keys_named_and_unnamed() {
        let auth = auth(Some("k1, web:k2 ,mobile:k:3"), false);
        assert_eq!(auth.check(Some("Bearer k1")), Ok(Some("client-1")));
        assert_eq!(auth.check(Some("bearer k2")), Ok(Some("web")));
        assert_eq!(auth.check(Some("Bearer k:3")), Ok(Some("mobile")));
        assert_eq!(auth.check(Some("Bearer k")), Err(AuthError::WrongKey));
        assert_eq!(auth.check(Some("Bearer k22")), Err(AuthError::WrongKey));
        assert_eq!(auth.check(Some("Basic k1")), Err(AuthError::MissingKey));
        assert_eq!(auth.check(None), Err(AuthError::MissingKey));
    }

    #[test]
    fn unauthenticated_allowed_but_wrong_keys_still_refused() {
        let open = auth(None, true);
        assert_eq!(open.check(None), Ok(None));
        assert_eq!(open.check(Some("Bearer whatever")), Ok(None));
        let keyed = auth(Some("web:k"), true);
        assert_eq!(keyed.check(None), Ok(None));
        assert_eq!(keyed.check(Some("Bearer k")), Ok(Some("web")));
        assert_eq!(keyed.check(Some("Bearer nope")), Err(AuthError::WrongKey));
    }

    #[test]
    fn bad_entries_are_refused_without_echoing_keys() {
        let err = parse_client_keys(Some("web:")).unwrap_err();
        assert!(err.contains("entry 1"), "{err}");
        let err = parse_client_keys(Some("a:secret1,a:secret2")).unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
