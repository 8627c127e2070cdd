//! End users' JWTs (`JWT_*`): a token is decoded, its `alg` matched to the configured keys, its
//! key found (in the provider's JWKS, fetched and cached per isolate, or the HS256 secret), its
//! signature checked through [`TokenVerification`] (the runtime's WebCrypto: no cryptography here),
//! and only then its claims. Refusals say which check failed, never the token.

use std::cell::RefCell;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::bindings::{Bindings, HttpUrl, Reader};
use crate::http::auth::AuthError;
use crate::json::{cut, named, read, JsonKind, Members, Text};
use crate::routing::log::{write, Level, Log};

/// How end users' JWTs are verified (`JWT_*` bindings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub keys: JwtKeys,
    /// `JWT_ISSUER`: the exact `iss` accepted.
    pub issuer: String,
    /// `JWT_AUDIENCE`: an `aud` must be one of these; empty with `JWT_ALLOW_ANY_AUDIENCE`.
    pub audiences: Vec<String>,
    /// `JWT_CLIENT_CLAIM`: the claim naming the user (default `sub`).
    pub client_claim: String,
    /// `JWT_TASKS_CLAIM`: the claim listing the tasks a user may call, if set.
    pub tasks_claim: Option<String>,
}

/// Where the keys that sign users' tokens come from.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKeys {
    /// `JWT_JWKS_URL`: the provider's RS256 / ES256 public keys.
    Jwks(String),
    /// `JWT_SECRET`: a shared HS256 key.
    Secret(Vec<u8>),
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKeys::Jwks(url) => f.debug_tuple("Jwks").field(url).finish(),
            JwtKeys::Secret(_) => f.write_str("Secret(..)"),
        }
    }
}

/// The shortest `JWT_SECRET` accepted: HS256's key should be as long as its hash.
pub const JWT_SECRET_MIN_BYTES: usize = 32;

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

named! {
    /// The signature algorithms accepted, each for one kind of key.
    pub enum Alg {
        /// RSASSA-PKCS1-v1_5 with SHA-256, an RSA key from the JWKS.
        Rs256 = "RS256",
        /// ECDSA on P-256 with SHA-256, an EC key from the JWKS.
        Es256 = "ES256",
        /// HMAC with SHA-256, the shared `JWT_SECRET`.
        Hs256 = "HS256",
    }
}

impl Alg {
    fn parse(name: &str) -> Option<Alg> {
        [Alg::Rs256, Alg::Es256, Alg::Hs256]
            .into_iter()
            .find(|alg| alg.as_str() == name)
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

/// What verifying users' tokens needs from the runtime: the JWKS fetched, signatures checked
/// (WebCrypto in the Worker).
#[allow(async_fn_in_trait)]
pub trait TokenVerification {
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

impl TokenVerification for NoTokens {
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

/// A verified user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The `JWT_CLIENT_CLAIM` value.
    pub name: String,
    /// The `JWT_TASKS_CLAIM` list, when that binding is set (a token without it may call none).
    pub tasks: Option<Vec<String>>,
}

/// A token's three dot-separated parts: header, payload, signature.
fn parts(token: &str) -> Option<[&str; 3]> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(signature), None) => Some([header, payload, signature]),
        _ => None,
    }
}

/// Three base64url parts (the signature may be empty, as in an `alg: none` token): a JWT, not a
/// client key.
pub fn looks_like_jwt(token: &str) -> bool {
    let base64url = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    parts(token).is_some_and(|[header, payload, _]| {
        !header.is_empty()
            && !payload.is_empty()
            && token.bytes().all(|c| c == b'.' || base64url(c))
    })
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
    let [header, payload, signature] =
        parts(token).ok_or(malformed("not three base64url parts"))?;
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
    tokens: &impl TokenVerification,
    now_ms: u64,
    log: &dyn Log,
) -> Result<User, AuthError> {
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
            jwk = jwks_key(url, keys, tokens, &parsed, now_ms, log).await?;
            VerifyKey {
                id: &jwk.id,
                alg: jwk.alg,
                material: KeyMaterial::Jwk(&jwk.jwk),
            }
        }
        _ => return Err(TokenError::AlgNotAccepted.into()),
    };
    let verified = tokens
        .verify(&key, decoded.signed.as_bytes(), &decoded.signature)
        .await;
    match verified {
        Ok(true) => {}
        Ok(false) => return Err(TokenError::BadSignature.into()),
        Err(why) => {
            let line = KeyUnusable {
                alg: key.alg.as_str(),
                error: cut(&why, 200),
            };
            write(log, Level::Error, "jwt_key_unusable", &line);
            return Err(AuthError::Unavailable);
        }
    }
    Ok(check_claims(&parsed.claims, config, now_ms / 1000)?)
}

#[derive(Serialize)]
struct KeyUnusable<'a> {
    alg: &'static str,
    error: &'a str,
}

/// The registered claims, then the user's name and tasks. `now_s`: the router's clock.
pub fn check_claims(claims: &Members, config: &JwtConfig, now_s: u64) -> Result<User, TokenError> {
    let claim = |name: &str, must| TokenError::Claim(name.to_string(), must);
    let number = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(raw) if JsonKind::of(raw) == JsonKind::Number => {
            serde_json::from_str::<f64>(raw.get())
                .map(Some)
                .map_err(|_| claim(name, "must be a number of seconds"))
        }
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
        Some(raw) if JsonKind::of(raw) == JsonKind::Number => raw.get().to_string(),
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
    match JsonKind::of(raw) {
        JsonKind::String if one => string(Some(raw)).ok().flatten().map(|s| vec![s]),
        JsonKind::List => {
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

enum KeyLookup {
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

    fn find(&self, kid: Option<&str>, alg: Alg) -> KeyLookup {
        let key = match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None => {
                let mut same_alg = self.keys.iter().filter(|k| k.alg == alg);
                match (same_alg.next(), same_alg.next()) {
                    (Some(key), None) => Some(key),
                    (Some(_), Some(_)) => return KeyLookup::NoKid,
                    (None, _) => None,
                }
            }
        };
        match key {
            Some(key) if key.alg == alg => KeyLookup::Key(key.clone()),
            Some(key) => KeyLookup::Mismatch(key.alg),
            None => KeyLookup::Missing,
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
    tokens: &impl TokenVerification,
    token: &Read<'_>,
    now_ms: u64,
    log: &dyn Log,
) -> Result<PublicKey, AuthError> {
    let due = {
        let set = keys.borrow();
        !set.fresh(now_ms) && set.may_fetch(now_ms)
    };
    if due {
        refresh(url, keys, tokens, now_ms, log).await;
    }
    let find = || {
        let set = keys.borrow();
        match set.generation {
            0 => Err(AuthError::Unavailable),
            _ => Ok(set.find(token.kid.as_deref(), token.alg)),
        }
    };
    let mut found = find()?;
    // A `kid` the set lacks: the provider may have rotated its keys since.
    if matches!(found, KeyLookup::Missing) && !due && keys.borrow().may_fetch(now_ms) {
        refresh(url, keys, tokens, now_ms, log).await;
        found = find()?;
    }
    match found {
        KeyLookup::Key(key) => Ok(key),
        KeyLookup::Mismatch(alg) => Err(TokenError::KeyMismatch(alg).into()),
        KeyLookup::NoKid => Err(TokenError::NoKid.into()),
        KeyLookup::Missing => Err(TokenError::UnknownKid.into()),
    }
}

async fn refresh(
    url: &str,
    keys: &RefCell<KeySet>,
    tokens: &impl TokenVerification,
    now_ms: u64,
    log: &dyn Log,
) {
    let fetched = tokens.fetch_jwks(url).await.and_then(|answer| {
        if answer.status != 200 {
            return Err(format!("the JWKS endpoint answered {}", answer.status));
        }
        let keys = parse_jwks(&answer.body)?;
        Ok((keys, max_age_s(answer.cache_control.as_deref())))
    });
    let mut set = keys.borrow_mut();
    if let Err(why) = set.learn(fetched, now_ms) {
        let line = JwksFailed {
            error: cut(&why, 200),
            cached_keys: set.keys.len(),
        };
        write(log, Level::Warn, "jwks_fetch_failed", &line);
    }
}

#[derive(Serialize)]
struct JwksFailed<'a> {
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
    #[derive(Deserialize)]
    struct Jwks<'a> {
        #[serde(borrow)]
        keys: Vec<Members<'a>>,
    }
    if body.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "the JWKS is larger than {} KiB",
            MAX_JWKS_BYTES / 1024
        ));
    }
    let jwks: Jwks =
        read(body).ok_or_else(|| "the JWKS is not a JSON object with a `keys` list".to_string())?;
    let usable: Vec<PublicKey> = jwks.keys.iter().filter_map(signing_key).collect();
    match usable.is_empty() {
        true => Err("the JWKS has no RS256 (RSA) or ES256 (P-256) signing key".into()),
        false => Ok(usable),
    }
}

/// A JWK this router can verify with: an RSA key for RS256 or a P-256 key for ES256, for
/// signing (or for any use), its `alg` (if any) matching.
fn signing_key(key: &Members) -> Option<PublicKey> {
    /// The key's members WebCrypto's `importKey` needs, and no others.
    #[derive(Serialize, Default)]
    struct PublicMembers<'a> {
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
    let text = |name| string(key.get(name)).ok().flatten();
    if text("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let (n, e, crv, x, y) = (text("n"), text("e"), text("crv"), text("x"), text("y"));
    let (alg, public) = match text("kty").as_deref() {
        Some("RSA") if n.is_some() && e.is_some() => {
            let (n, e) = (n.as_deref(), e.as_deref());
            (
                Alg::Rs256,
                PublicMembers {
                    kty: "RSA",
                    n,
                    e,
                    ..PublicMembers::default()
                },
            )
        }
        Some("EC") if crv.as_deref() == Some("P-256") && x.is_some() && y.is_some() => {
            let (crv, x, y) = (Some("P-256"), x.as_deref(), y.as_deref());
            (
                Alg::Es256,
                PublicMembers {
                    kty: "EC",
                    crv,
                    x,
                    y,
                    ..PublicMembers::default()
                },
            )
        }
        _ => return None,
    };
    if text("alg").is_some_and(|a| Alg::parse(&a) != Some(alg)) {
        return None;
    }
    Some(PublicKey {
        kid: text("kid"),
        alg,
        jwk: serde_json::to_string(&public).ok()?,
        id: String::new(),
    })
}

impl JwtConfig {
    /// The `JWT_*` bindings: `None` when none of the key sources is set. Half a configuration is
    /// an error naming the binding, never an open door.
    pub fn read<B: Bindings>(r: &mut Reader<'_, B>) -> Option<JwtConfig> {
        let keys = JwtKeys::read(r);
        let issuer = r.text("JWT_ISSUER");
        let audience = r.text("JWT_AUDIENCE");
        let any_audience = r.flag("JWT_ALLOW_ANY_AUDIENCE");
        let client_claim = r.text("JWT_CLIENT_CLAIM");
        let tasks_claim = r.text("JWT_TASKS_CLAIM");
        // A key binding set but wrong was noted: nothing more to say about the others.
        let keys = keys.ok()?;
        let Some(keys) = keys else {
            let set = [
                ("JWT_ISSUER", issuer.is_some()),
                ("JWT_AUDIENCE", audience.is_some()),
                ("JWT_ALLOW_ANY_AUDIENCE", any_audience),
                ("JWT_CLIENT_CLAIM", client_claim.is_some()),
                ("JWT_TASKS_CLAIM", tasks_claim.is_some()),
            ];
            if let Some((binding, _)) = set.iter().find(|(_, set)| *set) {
                let half = format!("`{binding}` is set but neither `JWT_JWKS_URL` nor `JWT_SECRET` is: tokens cannot be verified without keys");
                r.ok(binding, Err(half), ());
            }
            return None;
        };
        let Some(issuer) = issuer else {
            let missing = "`JWT_ISSUER` is required with `JWT_JWKS_URL` or `JWT_SECRET`: the exact `iss` to accept";
            return r.ok("JWT_ISSUER", Err(missing.into()), None);
        };
        let audiences: Vec<String> = audience
            .iter()
            .flat_map(|a| a.split(','))
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if audiences.is_empty() && !any_audience {
            let missing = "`JWT_AUDIENCE` is required (the `aud` to accept, comma-separated), unless `JWT_ALLOW_ANY_AUDIENCE = \"true\"`";
            return r.ok("JWT_AUDIENCE", Err(missing.into()), None);
        }
        Some(JwtConfig {
            keys,
            issuer,
            audiences,
            client_claim: client_claim.unwrap_or_else(|| "sub".into()),
            tasks_claim,
        })
    }
}

impl JwtKeys {
    /// `JWT_JWKS_URL` or `JWT_SECRET`, `None` when neither is set; `Err` (the problem noted)
    /// when what is set is wrong.
    fn read<B: Bindings>(r: &mut Reader<'_, B>) -> Result<Option<JwtKeys>, ()> {
        match (r.text("JWT_JWKS_URL"), r.text("JWT_SECRET")) {
            (Some(_), Some(_)) => {
                let both =
                    "set `JWT_JWKS_URL` (RS256/ES256 keys) or `JWT_SECRET` (HS256), not both";
                r.ok("JWT_SECRET", Err(both.into()), Err(()))
            }
            (Some(url), None) => {
                let checked = parse_jwks_url(&url);
                Ok(Some(JwtKeys::Jwks(r.ok("JWT_JWKS_URL", checked, url))))
            }
            (None, Some(secret)) if secret.len() < JWT_SECRET_MIN_BYTES => {
                let short = format!("`JWT_SECRET` must be at least {JWT_SECRET_MIN_BYTES} bytes");
                r.ok("JWT_SECRET", Err(short), Err(()))
            }
            (None, Some(secret)) => Ok(Some(JwtKeys::Secret(secret.into_bytes()))),
            (None, None) => Ok(None),
        }
    }
}

/// `JWT_JWKS_URL`: https, or http to this machine only (a local test provider); keys fetched in
/// the clear could be swapped on the way.
fn parse_jwks_url(url: &str) -> Result<String, String> {
    match HttpUrl::parse(url) {
        Some(parsed) if parsed.https || parsed.is_loopback() => Ok(url.to_string()),
        _ => Err("`JWT_JWKS_URL` must be an https:// URL of your sign-in provider's JWKS (http:// only to 127.0.0.1 or localhost), without credentials".into()),
    }
}
