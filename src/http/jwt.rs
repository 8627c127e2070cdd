//! End users' JWTs (`JWT_*`): a token is decoded, its `alg` matched to the configured keys, its
//! key found (in the provider's JWKS, fetched and cached per isolate, or the HS256 secret), its
//! signature checked through [`TokenCrypto`] (the runtime's WebCrypto: no cryptography here),
//! and only then its claims. Refusals say which check failed, never the token.

use std::cell::RefCell;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::groq::{cut, read, Kind, Members, Text};
use crate::routing::config::{JwtConfig, JwtKeys};
use crate::routing::log::{write, Level, Log};

/// Larger `Authorization` tokens are refused unread.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// How far `exp` and `nbf` may be off the router's clock.
pub const LEEWAY_S: u64 = 60;
/// The bounds on how long a fetched JWKS is trusted (its `Cache-Control: max-age`).
pub const JWKS_MIN_AGE_S: u64 = 300;
pub const JWKS_MAX_AGE_S: u64 = 86_400;
/// With keys cached, the JWKS is fetched again at most this often: for an unknown `kid`, or
/// after a failed refresh of an expired set.
pub const JWKS_REFETCH_MS: u64 = 60_000;
/// With no keys at all, a failed fetch is tried again after this long (callers get 503 meanwhile).
pub const JWKS_RETRY_MS: u64 = 5_000;
/// A JWKS larger than this is refused (real ones are a few KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The signature algorithms accepted, each for one kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256, an RSA key from the JWKS.
    Rs256,
    /// ECDSA on P-256 with SHA-256, an EC key from the JWKS.
    Es256,
    /// HMAC with SHA-256, the shared `JWT_SECRET`.
    Hs256,
}

impl Alg {
    fn parse(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            "HS256" => Some(Alg::Hs256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::Hs256 => "HS256",
        }
    }
}

/// What a signature is checked with: a public JWK (only its key members, as JSON), or the secret.
#[derive(Debug, Clone, Copy)]
pub enum KeyMaterial<'a> {
    Jwk(&'a str),
    Secret(&'a [u8]),
}

/// A key to verify with; `id` names it for the runtime's cache of imported keys (it changes
/// whenever the key set is refetched).
#[derive(Debug, Clone, Copy)]
pub struct VerifyKey<'a> {
    pub id: &'a str,
    pub alg: Alg,
    pub material: KeyMaterial<'a>,
}

/// The JWKS endpoint's answer.
pub struct FetchedJwks {
    pub status: u16,
    pub cache_control: Option<String>,
    pub body: Vec<u8>,
}

/// The runtime's part: fetching the JWKS and checking signatures (WebCrypto in the Worker).
#[allow(async_fn_in_trait)]
pub trait TokenCrypto {
    async fn fetch_jwks(&self, url: &str) -> Result<FetchedJwks, String>;
    /// Whether `signature` is `key`'s signature over `signed`; `Err` if the key cannot be used.
    async fn verify(
        &self,
        key: &VerifyKey<'_>,
        signed: &[u8],
        signature: &[u8],
    ) -> Result<bool, String>;
}

/// For callers that verify no tokens (no `JWT_*` configured): never called then.
pub struct NoTokens;

impl TokenCrypto for NoTokens {
    async fn fetch_jwks(&self, _url: &str) -> Result<FetchedJwks, String> {
        Err("no JWKS client".into())
    }
    async fn verify(&self, _: &VerifyKey<'_>, _: &[u8], _: &[u8]) -> Result<bool, String> {
        Err("no token verifier".into())
    }
}

/// Why a token was refused: a 401 `invalid_token` saying which check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    TooLarge,
    /// Which part is not base64url JSON (or not three parts).
    Malformed(&'static str),
    AlgNone,
    /// An `alg` other than the one the configured keys are for.
    AlgNotAccepted,
    /// No `kid`, and the JWKS has several keys for the `alg`.
    NoKid,
    UnknownKid,
    /// The `kid`'s key is for another algorithm.
    KeyMismatch(Alg),
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// A claim missing or of the wrong type: its name, and what it must be.
    Claim(String, &'static str),
    /// The token names an extension the router does not implement (`crit`).
    Critical,
}

impl TokenError {
    pub fn message(&self, config: &JwtConfig) -> String {
        let accepted = match config.keys {
            JwtKeys::Jwks(_) => "RS256 or ES256 with a key from `JWT_JWKS_URL`",
            JwtKeys::Secret(_) => "HS256 with `JWT_SECRET`",
        };
        match self {
            TokenError::TooLarge => format!("invalid token: larger than {} KiB", MAX_TOKEN_BYTES / 1024),
            TokenError::Malformed(part) => format!("invalid token: {part}"),
            TokenError::AlgNone => "invalid token: unsigned tokens (`alg: none`) are refused".into(),
            TokenError::AlgNotAccepted => format!("invalid token: its `alg` is not accepted; this router verifies {accepted}"),
            TokenError::NoKid => "invalid token: no `kid`, and the JWKS has more than one key for its `alg`".into(),
            TokenError::UnknownKid => "invalid token: no key in the JWKS has its `kid`, even after fetching the JWKS again".into(),
            TokenError::KeyMismatch(alg) => format!("invalid token: its `alg` does not match its key, which is for {}", alg.as_str()),
            TokenError::BadSignature => "invalid token: the signature does not verify".into(),
            TokenError::Expired => format!("invalid token: expired (`exp`, {LEEWAY_S} s leeway)"),
            TokenError::NotYetValid => format!("invalid token: not valid yet (`nbf`, {LEEWAY_S} s leeway)"),
            TokenError::WrongIssuer => "invalid token: `iss` is not the issuer this router accepts (`JWT_ISSUER`)".into(),
            TokenError::WrongAudience => "invalid token: `aud` names no audience this router accepts (`JWT_AUDIENCE`)".into(),
            TokenError::Claim(name, must) => format!("invalid token: the `{}` claim {must}", cut(name, 64)),
            TokenError::Critical => "invalid token: its header names extensions (`crit`) this router does not implement".into(),
        }
    }
}

/// Why a token could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// 401: the token fails a check.
    Invalid(TokenError),
    /// 503: no keys to check it with (the JWKS could not be fetched and nothing is cached, or a
    /// key could not be imported).
    Unavailable,
}

impl From<TokenError> for AuthFailure {
    fn from(e: TokenError) -> Self {
        AuthFailure::Invalid(e)
    }
}

/// A verified user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The `JWT_CLIENT_CLAIM` value.
    pub name: String,
    /// The `JWT_TASKS_CLAIM` list, when that binding is set (a token without it may call none).
    pub tasks: Option<Vec<String>>,
}

/// Three base64url parts (the signature may be empty, as in an `alg: none` token): a JWT, not a
/// client key.
pub fn looks_like_jwt(token: &str) -> bool {
    let base64url = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !header.is_empty() && !payload.is_empty() && token.bytes().all(|c| c == b'.' || base64url(c))
}

/// A token split and its parts decoded from base64url, not yet trusted.
struct Decoded<'t> {
    header: Vec<u8>,
    claims: Vec<u8>,
    /// `header.payload`, the bytes the signature covers.
    signed: &'t str,
    signature: Vec<u8>,
}

/// A decoded token's header read, and its claims (read once, checked after the signature).
struct Read<'d> {
    alg: Alg,
    kid: Option<String>,
    claims: Members<'d>,
}

fn decode(token: &str) -> Result<Decoded<'_>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge);
    }
    let malformed = TokenError::Malformed;
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not three base64url parts"));
    };
    let signed = &token[..header.len() + 1 + payload.len()];
    let bytes = |part: &str, what| URL_SAFE_NO_PAD.decode(part).map_err(|_| malformed(what));
    Ok(Decoded {
        header: bytes(header, "the header is not base64url")?,
        claims: bytes(payload, "the payload is not base64url")?,
        signature: bytes(signature, "the signature is not base64url")?,
        signed,
    })
}

/// Reads a decoded token's header and claims as JSON objects, and its `alg` and `kid`.
fn read_token<'d>(decoded: &'d Decoded<'_>) -> Result<Read<'d>, TokenError> {
    let malformed = TokenError::Malformed;
    let header = object(&decoded.header).ok_or(malformed("the header is not a JSON object"))?;
    let claims = object(&decoded.claims).ok_or(malformed("the payload is not a JSON object"))?;
    if header.get("crit").is_some() {
        return Err(TokenError::Critical);
    }
    let text = |name| {
        string(header.get(name))
            .map_err(|_| malformed("the header's `alg` or `kid` is not a string"))
    };
    let alg = text("alg")?.ok_or(malformed("the header has no `alg`"))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::AlgNone);
    }
    let alg = Alg::parse(&alg).ok_or(TokenError::AlgNotAccepted)?;
    Ok(Read {
        alg,
        kid: text("kid")?,
        claims,
    })
}

/// A JSON object's members, each name once (a name sent twice is refused: which one a verifier
/// reads is a classic confusion).
fn object(bytes: &[u8]) -> Option<Members<'_>> {
    let members: Members = read(bytes)?;
    members.duplicate().is_none().then_some(members)
}

/// A string member: `Ok(None)` when absent, `Err` when not a string.
fn string(raw: Option<&RawValue>) -> Result<Option<String>, ()> {
    raw.map(|raw| serde_json::from_str::<Text>(raw.get()).map(|t| t.0.into_owned()))
        .transpose()
        .map_err(|_| ())
}

/// Verifies `token` and returns its user, or why not. `keys`: this isolate's JWKS cache.
pub async fn verify_token(
    token: &str,
    config: &JwtConfig,
    keys: &RefCell<KeySet>,
    crypto: &impl TokenCrypto,
    now_ms: u64,
    log: &dyn Log,
) -> Result<User, AuthFailure> {
    let decoded = decode(token)?;
    let parsed = read_token(&decoded)?;
    let jwk;
    let key = match &config.keys {
        JwtKeys::Secret(secret) if parsed.alg == Alg::Hs256 => VerifyKey {
            id: "secret",
            alg: Alg::Hs256,
            material: KeyMaterial::Secret(secret),
        },
        JwtKeys::Jwks(url) if parsed.alg != Alg::Hs256 => {
            jwk = jwks_key(url, keys, crypto, &parsed, now_ms, log).await?;
            VerifyKey {
                id: &jwk.id,
                alg: jwk.alg,
                material: KeyMaterial::Jwk(&jwk.jwk),
            }
        }
        _ => return Err(TokenError::AlgNotAccepted.into()),
    };
    let verified = crypto
        .verify(&key, decoded.signed.as_bytes(), &decoded.signature)
        .await;
    match verified {
        Ok(true) => {}
        Ok(false) => return Err(TokenError::BadSignature.into()),
        Err(why) => {
            let line = KeyUnusable {
                level: Level::Error,
                event: "jwt_key_unusable",
                alg: key.alg.as_str(),
                error: cut(&why, 200),
            };
            write(log, Level::Error, &line);
            return Err(AuthFailure::Unavailable);
        }
    }
    Ok(check_claims(&parsed.claims, config, now_ms / 1000)?)
}

#[derive(Serialize)]
struct KeyUnusable<'a> {
    level: Level,
    event: &'static str,
    alg: &'static str,
    error: &'a str,
}

/// The registered claims, then the user's name and tasks. `now_s`: the router's clock.
pub fn check_claims(claims: &Members, config: &JwtConfig, now_s: u64) -> Result<User, TokenError> {
    let claim = |name: &str, must| TokenError::Claim(name.to_string(), must);
    let number = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(raw) if Kind::of(raw) == Kind::Number => serde_json::from_str::<f64>(raw.get())
            .map(Some)
            .map_err(|_| claim(name, "must be a number of seconds")),
        Some(_) => Err(claim(name, "must be a number of seconds")),
    };
    let now = now_s as f64;
    let leeway = LEEWAY_S as f64;
    match number("exp")? {
        None => return Err(claim("exp", "is required")),
        Some(exp) if now > exp + leeway => return Err(TokenError::Expired),
        Some(_) => {}
    }
    if number("nbf")?.is_some_and(|nbf| nbf > now + leeway) {
        return Err(TokenError::NotYetValid);
    }
    let issuer = string(claims.get("iss")).map_err(|_| TokenError::WrongIssuer)?;
    if issuer.as_deref() != Some(config.issuer.as_str()) {
        return Err(TokenError::WrongIssuer);
    }
    if !config.audiences.is_empty() {
        let audiences = strings(claims.get("aud"), true).ok_or(TokenError::WrongAudience)?;
        if !audiences.iter().any(|a| config.audiences.contains(a)) {
            return Err(TokenError::WrongAudience);
        }
    }
    let name_claim = config.client_claim.as_str();
    let must_name = "must name the user: a non-empty string or a number (`JWT_CLIENT_CLAIM`)";
    let name = match claims.get(name_claim) {
        Some(raw) if Kind::of(raw) == Kind::Number => raw.get().to_string(),
        raw => string(raw)
            .ok()
            .flatten()
            .ok_or(claim(name_claim, must_name))?,
    };
    if name.is_empty() {
        return Err(claim(name_claim, must_name));
    }
    let tasks = match &config.tasks_claim {
        None => None,
        Some(tasks_claim) => match claims.get(tasks_claim) {
            None => Some(Vec::new()),
            raw => Some(strings(raw, false).ok_or(claim(
                tasks_claim,
                "must be a list of task names (`JWT_TASKS_CLAIM`)",
            ))?),
        },
    };
    Ok(User {
        name: cut(&name, 128).to_string(),
        tasks,
    })
}

/// An array of strings (or, with `one`, a single string too).
fn strings(raw: Option<&RawValue>, one: bool) -> Option<Vec<String>> {
    let raw = raw?;
    match Kind::of(raw) {
        Kind::String if one => string(Some(raw)).ok().flatten().map(|s| vec![s]),
        Kind::List => {
            let items: Vec<Text> = serde_json::from_str(raw.get()).ok()?;
            Some(items.into_iter().map(|t| t.0.into_owned()).collect())
        }
        _ => None,
    }
}

/// One usable public key from the JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: Option<String>,
    pub alg: Alg,
    /// The key's members only (`kty`, `n`, `e` / `crv`, `x`, `y`), as JSON for `importKey`.
    pub jwk: String,
    /// `{generation}:{index}`: changes whenever the set is fetched again.
    pub id: String,
}

/// This isolate's copy of the provider's JWKS.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<PublicKey>,
    /// How many fetches have succeeded (0: no key set yet).
    generation: u64,
    expires_ms: u64,
    last_try_ms: Option<u64>,
}

enum Found {
    Key(PublicKey),
    Mismatch(Alg),
    NoKid,
    Missing,
}

impl KeySet {
    fn fresh(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }

    fn may_fetch(&self, now_ms: u64) -> bool {
        let wait = match self.generation {
            0 => JWKS_RETRY_MS,
            _ => JWKS_REFETCH_MS,
        };
        self.last_try_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= wait)
    }

    fn find(&self, kid: Option<&str>, alg: Alg) -> Found {
        let key = match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let mut same_alg = self.keys.iter().filter(|k| k.alg == alg);
                match (same_alg.next(), same_alg.next()) {
                    (Some(key), None) => Some(key),
                    (Some(_), Some(_)) => return Found::NoKid,
                    (None, _) => None,
                }
            }
        };
        match key {
            Some(key) if key.alg == alg => Found::Key(key.clone()),
            Some(key) => Found::Mismatch(key.alg),
            None => Found::Missing,
        }
    }

    /// Takes what a fetch gave: a new set, or (on failure) the note not to retry at once.
    fn learn(
        &mut self,
        fetched: Result<(Vec<PublicKey>, u64), String>,
        now_ms: u64,
    ) -> Result<(), String> {
        self.last_try_ms = Some(now_ms);
        let (keys, max_age_s) = fetched?;
        self.generation += 1;
        let generation = self.generation;
        self.keys = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| PublicKey {
                id: format!("{generation}:{i}"),
                ..key
            })
            .collect();
        self.expires_ms = now_ms + max_age_s * 1000;
        Ok(())
    }
}

/// The JWKS key for a token: from the cached set while it is fresh; fetched first when there is
/// none or it expired, and once more (at most once a minute) for a `kid` it does not have.
async fn jwks_key(
    url: &str,
    keys: &RefCell<KeySet>,
    crypto: &impl TokenCrypto,
    token: &Read<'_>,
    now_ms: u64,
    log: &dyn Log,
) -> Result<PublicKey, AuthFailure> {
    let due = {
        let set = keys.borrow();
        !set.fresh(now_ms) && set.may_fetch(now_ms)
    };
    if due {
        refresh(url, keys, crypto, now_ms, log).await;
    }
    let find = || {
        let set = keys.borrow();
        match set.generation {
            0 => Err(AuthFailure::Unavailable),
            _ => Ok(set.find(token.kid.as_deref(), token.alg)),
        }
    };
    let mut found = find()?;
    // A `kid` the set lacks: the provider may have rotated its keys since.
    if matches!(found, Found::Missing) && !due && keys.borrow().may_fetch(now_ms) {
        refresh(url, keys, crypto, now_ms, log).await;
        found = find()?;
    }
    match found {
        Found::Key(key) => Ok(key),
        Found::Mismatch(alg) => Err(TokenError::KeyMismatch(alg).into()),
        Found::NoKid => Err(TokenError::NoKid.into()),
        Found::Missing => Err(TokenError::UnknownKid.into()),
    }
}

async fn refresh(
    url: &str,
    keys: &RefCell<KeySet>,
    crypto: &impl TokenCrypto,
    now_ms: u64,
    log: &dyn Log,
) {
    let fetched = crypto.fetch_jwks(url).await.and_then(|answer| {
        if answer.status != 200 {
            return Err(format!("the JWKS endpoint answered {}", answer.status));
        }
        let keys = parse_jwks(&answer.body)?;
        Ok((keys, max_age_s(answer.cache_control.as_deref())))
    });
    let mut set = keys.borrow_mut();
    if let Err(why) = set.learn(fetched, now_ms) {
        let line = JwksFailed {
            level: Level::Warn,
            event: "jwks_fetch_failed",
            error: cut(&why, 200),
            cached_keys: set.keys.len(),
        };
        write(log, Level::Warn, &line);
    }
}

#[derive(Serialize)]
struct JwksFailed<'a> {
    level: Level,
    event: &'static str,
    error: &'a str,
    /// Keys still used from the last good fetch (0: callers get 503 until a fetch succeeds).
    cached_keys: usize,
}

/// `Cache-Control: max-age`, bounded to [`JWKS_MIN_AGE_S`]..=[`JWKS_MAX_AGE_S`]; the lower
/// bound without one.
pub fn max_age_s(cache_control: Option<&str>) -> u64 {
    let age = cache_control
        .into_iter()
        .flat_map(|v| v.split(','))
        .find_map(|d| {
            let (name, value) = d.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        });
    age.unwrap_or(0).clamp(JWKS_MIN_AGE_S, JWKS_MAX_AGE_S)
}

/// The signing keys of a JWKS document this router can use: RSA keys for RS256, P-256 keys for
/// ES256. Keys for other uses or algorithms are skipped; a set without any usable key is an error.
pub fn parse_jwks(body: &[u8]) -> Result<Vec<PublicKey>, String> {
    #[derive(Serialize)]
    struct Public<'a> {
        kty: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        n: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        e: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        crv: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        x: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        y: Option<&'a str>,
    }
    if body.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "the JWKS is larger than {} KiB",
            MAX_JWKS_BYTES / 1024
        ));
    }
    #[derive(Deserialize)]
    struct Jwks<'a> {
        #[serde(borrow)]
        keys: Vec<Members<'a>>,
    }
    let jwks: Jwks =
        read(body).ok_or_else(|| "the JWKS is not a JSON object with a `keys` list".to_string())?;
    let mut usable = Vec::new();
    for key in &jwks.keys {
        let text = |name| string(key.get(name)).ok().flatten();
        let (kty, alg, usage) = (text("kty"), text("alg"), text("use"));
        if usage.as_deref().is_some_and(|u| u != "sig") {
            continue;
        }
        let (n, e, crv, x, y) = (text("n"), text("e"), text("crv"), text("x"), text("y"));
        let (key_alg, public) = match kty.as_deref() {
            Some("RSA") if n.is_some() && e.is_some() => (
                Alg::Rs256,
                Public {
                    kty: "RSA",
                    n: n.as_deref(),
                    e: e.as_deref(),
                    crv: None,
                    x: None,
                    y: None,
                },
            ),
            Some("EC") if crv.as_deref() == Some("P-256") && x.is_some() && y.is_some() => (
                Alg::Es256,
                Public {
                    kty: "EC",
                    n: None,
                    e: None,
                    crv: Some("P-256"),
                    x: x.as_deref(),
                    y: y.as_deref(),
                },
            ),
            _ => continue,
        };
        if alg.is_some_and(|a| Alg::parse(&a) != Some(key_alg)) {
            continue;
        }
        usable.push(PublicKey {
            kid: text("kid"),
            alg: key_alg,
            jwk: serde_json::to_string(&public).map_err(|e| e.to_string())?,
            id: String::new(),
        });
    }
    match usable.is_empty() {
        true => Err("the JWKS has no RS256 (RSA) or ES256 (P-256) signing key".into()),
        false => Ok(usable),
    }
}
