//! Native tests of end users' JWTs (issue 16): configuration, the algorithm/key table, the JWKS
//! cache with a fake clock, the claim checks, and what the API answers. Signatures here come from
//! a fake `TokenVerification` (a token is "signed" by naming its key and the bytes it covers); real
//! RS256 / ES256 / HS256 signatures checked by WebCrypto are `tests/e2e_jwt.rs`'s.
//! Run: `cargo test --test jwt`.

mod support;

use std::cell::{Cell, RefCell};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use support::fixtures::bindings_of;
use support::scripted::*;
use task_router::http::jwt::{
    max_age_s, parse_jwks, Alg, FetchedJwks, KeyMaterial, KeySet, TokenVerification, VerifyKey,
    JWKS_REFETCH_MS, JWKS_RETRY_MS,
};
use task_router::http::limit::{RateLimiter, Unlimited};
use task_router::http::HttpRequest;

const ISSUER: &str = "https://login.example.com/";
const AUDIENCE: &str = "task-router";
const SECRET: &str = "a-shared-hs256-secret-of-32-bytes-or-more";
/// The fake clock's start (`ScriptedProvider`), in seconds.
const NOW_S: u64 = 1_700_000_000;

/// Groq's stand-in, its fake clock at `NOW_S`: `m1` and `m2` answer.
fn provider() -> ScriptedProvider {
    let provider =
        ScriptedProvider::new()
            .on("m1", completion("m1"), 0)
            .on("m2", completion("m2"), 0);
    provider.clock.set(NOW_S * 1000);
    provider
}

/// Keeps the key of every rate-limit check.
#[derive(Default)]
struct RecordingLimiter {
    keys: RefCell<Vec<String>>,
}

impl RateLimiter for RecordingLimiter {
    async fn allow(&self, key: &str) -> bool {
        self.keys.borrow_mut().push(key.to_string());
        true
    }
}

fn config_errors(pairs: &[(&'static str, &str)]) -> Vec<task_router::bindings::ConfigFinding> {
    load(pairs).err().unwrap_or_default()
}

fn rsa(kid: &str, n: &str) -> Value {
    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"})
}
fn ec(kid: &str, x: &str) -> Value {
    json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": x, "y": "yy"})
}

/// What the fake JWKS endpoint answers: status, `cache-control`, body; or a failed fetch.
type JwksReply = Result<(u16, Option<String>, Value), String>;

/// The fake provider's JWKS endpoint and the fake signature check.
struct FakeCrypto {
    jwks: RefCell<JwksReply>,
    fetches: Cell<usize>,
}

impl FakeCrypto {
    fn serving(keys: Value, cache_control: Option<&str>) -> FakeCrypto {
        FakeCrypto {
            jwks: RefCell::new(Ok((
                200,
                cache_control.map(str::to_string),
                json!({ "keys": keys }),
            ))),
            fetches: Cell::new(0),
        }
    }
}

/// What the fake accepts as `material`'s signature of `signed`.
fn fake_signature(material: &str, signed: &str) -> Vec<u8> {
    format!("signed by {material} over {signed}").into_bytes()
}

impl TokenVerification for FakeCrypto {
    async fn fetch_jwks(&self, _url: &str) -> Result<FetchedJwks, String> {
        self.fetches.set(self.fetches.get() + 1);
        let (status, cache_control, body) = self.jwks.borrow().clone()?;
        Ok(FetchedJwks {
            status,
            cache_control,
            body: body.to_string().into_bytes(),
        })
    }

    async fn verify(
        &self,
        key: &VerifyKey<'_>,
        signed: &[u8],
        signature: &[u8],
    ) -> Result<bool, String> {
        let material = match key.material {
            KeyMaterial::Jwk(jwk) => jwk.to_string(),
            KeyMaterial::Secret(secret) => String::from_utf8_lossy(secret).into_owned(),
        };
        Ok(signature == fake_signature(&material, std::str::from_utf8(signed).unwrap()))
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with `header` and `claims`, signed by the JWKS key `jwk` (as `parse_jwks` reads it)
/// or by the secret.
fn token(header: Value, claims: Value, signer: &str) -> String {
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    format!("{signed}.{}", b64(&fake_signature(signer, &signed)))
}

/// The JSON `parse_jwks` keeps of a key: what a fake signature names.
fn material(key: &Value) -> String {
    parse_jwks(json!({ "keys": [key] }).to_string().as_bytes()).unwrap()[0]
        .jwk
        .clone()
}

fn claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "exp": NOW_S + 600, "iat": NOW_S})
}

fn with(extra: Value) -> Value {
    let mut c = claims();
    for (k, v) in extra.as_object().unwrap() {
        match v {
            Value::Null => c.as_object_mut().unwrap().remove(k),
            v => c.as_object_mut().unwrap().insert(k.clone(), v.clone()),
        };
    }
    c
}

fn jwks_bindings(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let jwks = "https://login.example.com/.well-known/jwks.json";
    let mut b = vec![
        ("MODEL_REGISTRY", r#"{"fast":["m1"],"deep":["m2"]}"#),
        ("GROQ_API_KEY", "gsk_jwt_tests"),
        ("JWT_JWKS_URL", jwks),
        ("JWT_ISSUER", ISSUER),
        ("JWT_AUDIENCE", "other-api, task-router"),
    ];
    b.extend_from_slice(extra);
    b
}

/// What requests go through: bindings, the fake crypto and JWKS cache, Groq's stand-in, the
/// rate limiter.
struct Api<'a, L>(
    Vec<(&'static str, &'static str)>,
    &'a FakeCrypto,
    &'a RefCell<KeySet>,
    &'a ScriptedProvider,
    &'a L,
);

impl<L: RateLimiter> Api<'_, L> {
    /// One request to `path` (`GET` for `/v1/routes` and `/v1/models`) with `authorization`
    /// and Cloudflare Access's `access_jwt`.
    fn call(&self, path: &str, authorization: Option<&str>, access_jwt: Option<&str>) -> Exchange {
        let &Api(ref bindings, crypto, jwks, provider, limiter) = self;
        let body = json!({"messages": [{"role": "user", "content": "hi"}]}).to_string();
        let (method, body) = match path {
            "/v1/routes" | "/v1/models" => ("GET", ""),
            _ => ("POST", body.as_str()),
        };
        let req = HttpRequest::new(method, path, body.as_bytes());
        let (req, tokens) = (HttpRequest { access_jwt, ..req }, Tokens { crypto, jwks });
        let req = HttpRequest {
            authorization,
            ..req
        };
        let (config, health, sink) = (load(bindings), RefCell::default(), SinkBuffer::default());
        exchange_with(&config, provider, limiter, &health, tokens, req, sink)
    }
}

/// A plain call to `/v1/tasks/fast` with the JWKS bindings and, when given, a bearer token.
fn fast(
    (crypto, jwks): (&FakeCrypto, &RefCell<KeySet>),
    provider: &ScriptedProvider,
    bearer: Option<&str>,
) -> Exchange {
    let auth = bearer.map(|bearer| format!("Bearer {bearer}"));
    let api = Api(jwks_bindings(&[]), crypto, jwks, provider, &Unlimited);
    api.call("/v1/tasks/fast", auth.as_deref(), None)
}

/// [`fast`] with a bearer token: its status and error code.
fn status(crypto: &FakeCrypto, jwks: &RefCell<KeySet>, bearer: &str) -> (u16, String) {
    let ex = fast((crypto, jwks), &provider(), Some(bearer));
    let code = ex.json()["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (ex.response.status, code)
}

/// `BINDING=VALUE, … → BINDING`: half a JWT configuration, and the binding it is refused by.
const HALF_CONFIGURATIONS: &[&str] = &[
    "JWT_JWKS_URL=https://idp.example/jwks, JWT_AUDIENCE=a → JWT_ISSUER",
    "JWT_SECRET=too-short-secret, JWT_ISSUER=i, JWT_AUDIENCE=a → JWT_SECRET",
    "JWT_SECRET=a-shared-hs256-secret-of-32-bytes-or-more, JWT_JWKS_URL=https://idp.example/jwks, JWT_ISSUER=i → JWT_SECRET",
    "JWT_JWKS_URL=https://idp.example/jwks, JWT_ISSUER=i → JWT_AUDIENCE",
    "JWT_ISSUER=i → JWT_ISSUER",
    "JWT_TASKS_CLAIM=tasks → JWT_TASKS_CLAIM",
    "JWT_JWKS_URL=http://idp.example/jwks, JWT_ISSUER=i, JWT_AUDIENCE=a → JWT_JWKS_URL",
    "JWT_JWKS_URL=https://user:pw@idp.example/jwks, JWT_ISSUER=i, JWT_AUDIENCE=a → JWT_JWKS_URL",
    "JWT_SECRET=a-shared-hs256-secret-of-32-bytes-or-more, JWT_ISSUER=i, JWT_ALLOW_ANY_AUDIENCE=yes → JWT_ALLOW_ANY_AUDIENCE",
];

#[test]
fn half_a_configuration_is_invalid_and_names_the_binding() {
    let base = [
        ("MODEL_REGISTRY", r#"{"fast":["m1"]}"#),
        ("GROQ_API_KEY", "gsk_x"),
    ];
    let with = |given| [&base[..], &bindings_of(given)].concat();
    for case in HALF_CONFIGURATIONS {
        let (given, binding) = case.split_once(" → ").expect("BINDINGS → BINDING");
        let errors = config_errors(&with(given));
        let found = errors
            .iter()
            .any(|e| e.binding == binding && e.code == "config_invalid");
        assert!(found, "{case}: {errors:?}");
        for e in &errors {
            let shown = e.message.contains("too-short-secret") || e.message.contains(SECRET);
            assert!(!shown, "{e:?}");
        }
    }
    for given in [
        "JWT_SECRET=a-shared-hs256-secret-of-32-bytes-or-more, JWT_ISSUER=i, JWT_ALLOW_ANY_AUDIENCE=true",
        "JWT_JWKS_URL=http://127.0.0.1:8788/jwks, JWT_ISSUER=i, JWT_AUDIENCE=a",
        "JWT_JWKS_URL=https://team.cloudflareaccess.com/cdn-cgi/access/certs, JWT_ISSUER=i, JWT_AUDIENCE=a",
    ] {
        let errors = config_errors(&with(given));
        assert!(errors.is_empty(), "{given}: {errors:?}");
    }
}

/// Which `alg` goes with which key: the table in the README, and the classic confusions refused.
#[test]
fn algorithms_and_keys_match_or_the_token_is_refused() {
    let (rsa_a, ec_a) = (rsa("rsa-a", "nnnn"), ec("ec-a", "xxxx"));
    let crypto = FakeCrypto::serving(json!([rsa_a, ec_a]), None);
    let jwks = RefCell::default();
    let rs = |kid: &str| json!({"alg": "RS256", "kid": kid, "typ": "JWT"});
    let ok = token(rs("rsa-a"), claims(), &material(&rsa_a));
    assert_eq!(status(&crypto, &jwks, &ok), (200, String::new()));
    let es = token(
        json!({"alg": "ES256", "kid": "ec-a"}),
        claims(),
        &material(&ec_a),
    );
    assert_eq!(status(&crypto, &jwks, &es).0, 200);

    // `HEADER.PAYLOAD.SIGNATURE`, each part encoded as it is.
    let raw = |h: &[u8], p: &[u8], s: &[u8]| format!("{}.{}.{}", b64(h), b64(p), b64(s));
    let signed = |header: Value, key: &Value| token(header, claims(), &material(key));
    let payload = claims().to_string();
    let pad = with(json!({"pad": "x".repeat(8 * 1024)}));
    let [hs256, rs512] = ["HS256", "RS512"].map(|alg| json!({"alg": alg, "kid": "rsa-a"}));
    let crit = signed(
        json!({"alg": "RS256", "kid": "rsa-a", "crit": ["b64"]}),
        &rsa_a,
    );
    let unsigned = raw(br#"{"alg":"none"}"#, payload.as_bytes(), b"");
    let bad_payload = raw(br#"{"alg":"RS256"}"#, b"not json", b"s");
    let twice = raw(br#"{"alg":"RS256","alg":"none"}"#, b"{}", b"s");
    let large = token(rs("rsa-a"), pad, &material(&rsa_a));
    let refused = [
        (unsigned, "`alg: none`"),
        // HS256 "signed" with the RSA key's public material: never with JWKS keys.
        (signed(hs256, &rsa_a), "`alg` is not accepted"),
        (signed(rs512, &rsa_a), "`alg` is not accepted"),
        // RS256 claimed, but the `kid` names the EC key.
        (signed(rs("ec-a"), &ec_a), "which is for ES256"),
        (signed(rs("rsa-a"), &ec_a), "signature does not verify"),
        (crit, "`crit`"),
        ("a.b.c".to_string(), "not base64url"),
        (raw(b"[1]", b"{}", b"s"), "header is not a JSON object"),
        (bad_payload, "payload is not a JSON object"),
        // A header member sent twice.
        (twice, "header is not a JSON object"),
        (large, "larger than 8 KiB"),
    ];
    for (bearer, says) in refused {
        let provider = provider();
        let ex = fast((&crypto, &jwks), &provider, Some(&bearer));
        assert_eq!(ex.response.status, 401, "{says}: {}", ex.text);
        let error = &ex.json()["error"];
        assert_eq!(error["code"], "invalid_token", "{says}");
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{says}: {error}"
        );
        let expected = Some("Bearer error=\"invalid_token\"");
        assert_eq!(ex.response.header("www-authenticate"), expected);
        // The token is not echoed.
        assert!(!ex.text.contains(&bearer[..bearer.len().min(40)]));
        assert!(provider.calls.borrow().is_empty());
    }

    // Without a `kid`: the one key for the `alg`, and only if there is just one.
    let no_kid = token(json!({"alg": "ES256"}), claims(), &material(&ec_a));
    assert_eq!(status(&crypto, &jwks, &no_kid).0, 200);
    let two_ec = FakeCrypto::serving(json!([ec_a, ec("ec-b", "zzzz")]), None);
    let (status_, _) = status(&two_ec, &RefCell::default(), &no_kid);
    assert_eq!(status_, 401);

    // With `JWT_SECRET`, HS256 only.
    let secret = [
        ("JWT_SECRET", SECRET),
        ("JWT_ISSUER", ISSUER),
        ("JWT_ALLOW_ANY_AUDIENCE", "true"),
    ];
    let bindings = jwks_bindings(&[])
        .into_iter()
        .filter(|(k, _)| !k.starts_with("JWT_"));
    let bindings: Vec<_> = bindings.chain(secret).collect();
    for (alg, signer, want) in [
        ("HS256", SECRET, 200),
        ("RS256", SECRET, 401),
        ("HS256", "another secret of enough length!!", 401),
    ] {
        let (provider, jwks) = (provider(), RefCell::default());
        let api = Api(bindings.clone(), &crypto, &jwks, &provider, &Unlimited);
        let auth = format!("Bearer {}", token(json!({"alg": alg}), claims(), signer));
        let ex = api.call("/v1/tasks/fast", Some(&auth), None);
        assert_eq!(ex.response.status, want, "{alg} {signer}: {}", ex.text);
    }
}

#[test]
fn claims_are_checked_against_the_clock_issuer_and_audience() {
    let key = rsa("rsa-a", "nnnn");
    let crypto = FakeCrypto::serving(json!([key]), None);
    let jwks = RefCell::default();
    let header = json!({"alg": "RS256", "kid": "rsa-a"});
    let cases = [
        (json!({"exp": NOW_S - 61}), "expired"),
        (json!({"exp": null}), "`exp` claim is required"),
        (json!({"exp": "soon"}), "`exp` claim must be a number"),
        (json!({"nbf": NOW_S + 61}), "not valid yet"),
        (json!({"iss": "https://evil.example/"}), "`iss`"),
        (json!({"iss": null}), "`iss`"),
        (json!({"aud": "someone-else"}), "`aud`"),
        (json!({"aud": ["a", "b"]}), "`aud`"),
        (json!({"aud": null}), "`aud`"),
        (json!({"sub": null}), "`sub` claim must name the user"),
        (json!({"sub": ""}), "`sub` claim must name the user"),
        (json!({"sub": {"id": 1}}), "`sub` claim must name the user"),
    ];
    for (extra, says) in cases {
        let bearer = token(header.clone(), with(extra.clone()), &material(&key));
        let ex = fast((&crypto, &jwks), &provider(), Some(&bearer));
        assert_eq!(ex.response.status, 401, "{extra}");
        let message = ex.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(says), "{extra}: {message}");
    }
    for extra in [
        json!({"exp": NOW_S - 59}),
        json!({"nbf": NOW_S + 59}),
        json!({"aud": ["other-api"]}),
        json!({"aud": ["x", "task-router"]}),
        json!({"sub": 12345}),
    ] {
        let bearer = token(header.clone(), with(extra.clone()), &material(&key));
        assert_eq!(status(&crypto, &jwks, &bearer).0, 200, "{extra}");
    }
}

#[test]
fn the_user_names_the_request_keys_the_limit_and_tasks_claim_narrows_the_tasks() {
    let key = rsa("rsa-a", "nnnn");
    let crypto = FakeCrypto::serving(json!([key]), None);
    let jwks = RefCell::default();
    let bindings = jwks_bindings(&[
        ("JWT_CLIENT_CLAIM", "email"),
        ("JWT_TASKS_CLAIM", "https://example.com/tasks"),
        ("ROUTER_API_KEYS", "web:k-web-0123456"),
    ]);
    let header = json!({"alg": "RS256", "kid": "rsa-a"});
    let sign = |extra: Value| token(header.clone(), with(extra), &material(&key));
    let (limiter, provider) = (RecordingLimiter::default(), provider());
    let api = Api(bindings, &crypto, &jwks, &provider, &limiter);
    let ask = |path: &str, authorization: Option<&str>, access_jwt: Option<&str>| {
        api.call(path, authorization, access_jwt)
    };
    let user = sign(json!({"email": "ada@example.com", "https://example.com/tasks": ["fast"]}));
    let ex = ask("/v1/tasks/fast", Some(&format!("Bearer {user}")), None);
    assert_eq!(ex.response.status, 200, "{}", ex.text);
    let line = &ex.log.last().unwrap().1;
    assert_eq!(line["client"], "ada@example.com");
    let expected = Some("user:ada@example.com");
    assert_eq!(limiter.keys.borrow().last().map(String::as_str), expected);

    let ex = ask("/v1/tasks/deep", Some(&format!("Bearer {user}")), None);
    assert_eq!(ex.response.status, 403, "{}", ex.text);
    assert_eq!(ex.json()["error"]["code"], "task_not_allowed");
    let models = ask("/v1/models", Some(&format!("Bearer {user}")), None);
    assert_eq!(
        models.json()["data"].as_array().map(Vec::len),
        Some(1),
        "{}",
        models.text
    );

    // No tasks claim: no task. A key client next to JWT users keeps working, as `client:`.
    let none = sign(json!({"email": "bob@example.com"}));
    let ex = ask("/v1/tasks/fast", Some(&format!("Bearer {none}")), None);
    assert_eq!(ex.response.status, 403);
    let ex = ask("/v1/tasks/fast", Some("Bearer k-web-0123456"), None);
    assert_eq!(ex.response.status, 200, "{}", ex.text);
    let expected = Some("client:web");
    assert_eq!(limiter.keys.borrow().last().map(String::as_str), expected);

    // Cloudflare Access's header, when no `Authorization` is sent; `/v1/routes` takes a JWT too.
    let ex = ask("/v1/routes", None, Some(&user));
    assert_eq!(ex.response.status, 200, "{}", ex.text);
}

#[test]
fn a_non_jwt_bearer_is_a_client_key_and_never_lets_anyone_in() {
    let crypto = FakeCrypto::serving(json!([rsa("rsa-a", "nnnn")]), None);
    let jwks = RefCell::default();
    // JWT configured, no client keys, unauthenticated access off.
    let expected = (401, "invalid_api_key".into());
    assert_eq!(status(&crypto, &jwks, "not-a-jwt"), expected);
    let ex = fast((&crypto, &jwks), &provider(), None);
    assert_eq!(ex.response.status, 401);
    assert!(ex.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("sign-in provider's token"));
    assert_eq!(crypto.fetches.get(), 0, "no token, no JWKS fetch");
}

#[test]
fn a_client_key_with_two_dots_is_that_client_even_with_jwts_configured() {
    let crypto = FakeCrypto::serving(json!([rsa("rsa-a", "nnnn")]), None);
    let jwks = RefCell::default();
    let bindings = jwks_bindings(&[("ROUTER_API_KEYS", "web:sk.live.abc123")]);
    let send = |bearer: &str| {
        let auth = format!("Bearer {bearer}");
        let provider = provider();
        let api = Api(bindings.clone(), &crypto, &jwks, &provider, &Unlimited);
        let ex = api.call("/v1/tasks/fast", Some(&auth), None);
        let line = ex.log.iter().find(|(_, l)| l["event"] == "request");
        (ex.response.status, line.map(|(_, l)| l["client"].clone()))
    };
    assert_eq!(send("sk.live.abc123"), (200, Some(json!("web"))));
    // A client key is no token to verify.
    assert_eq!(crypto.fetches.get(), 0);
    // Shaped like a token but no key: verified as one, and refused.
    assert_eq!(send("sk.live.abc124").0, 401);
}

#[test]
fn the_jwks_is_cached_for_its_max_age_and_refetched_for_an_unknown_kid_once_a_minute() {
    assert_eq!(max_age_s(None), 300);
    assert_eq!(
        max_age_s(Some("public, max-age=3600, must-revalidate")),
        3600
    );
    assert_eq!(max_age_s(Some("max-age=10")), 300);
    assert_eq!(max_age_s(Some("max-age=9999999")), 86_400);

    let (a, b) = (rsa("rsa-a", "aaaa"), rsa("rsa-b", "bbbb"));
    let crypto = FakeCrypto::serving(json!([a]), Some("max-age=3600"));
    let jwks = RefCell::default();
    let header = |kid: &str| json!({"alg": "RS256", "kid": kid});
    let provider = provider();
    let send = |bearer: String| {
        fast((&crypto, &jwks), &provider, Some(&bearer))
            .response
            .status
    };
    let signed_a = || {
        token(
            header("rsa-a"),
            with(json!({"exp": provider.clock.get() / 1000 + 600})),
            &material(&a),
        )
    };
    let signed_b = || {
        token(
            header("rsa-b"),
            with(json!({"exp": provider.clock.get() / 1000 + 600})),
            &material(&b),
        )
    };
    assert_eq!((send(signed_a()), send(signed_a())), (200, 200));
    assert_eq!(crypto.fetches.get(), 1, "one fetch while the set is fresh");

    // The provider rotates: `rsa-b` is unknown. Within a minute of the last fetch it stays so;
    // after it, one refetch finds it.
    *crypto.jwks.borrow_mut() = Ok((200, Some("max-age=3600".into()), json!({"keys": [a, b]})));
    assert_eq!(send(signed_b()), 401);
    assert_eq!(crypto.fetches.get(), 1);
    provider.clock.set(provider.clock.get() + JWKS_REFETCH_MS);
    assert_eq!(send(signed_b()), 200);
    assert_eq!(crypto.fetches.get(), 2);
    // A kid nobody has: one refetch, then none for a minute.
    let stranger = || token(header("rsa-x"), claims(), &material(&a));
    provider.clock.set(provider.clock.get() + JWKS_REFETCH_MS);
    assert_eq!((send(stranger()), send(stranger())), (401, 401));
    // At most one refetch a minute for unknown kids.
    assert_eq!(crypto.fetches.get(), 3);

    // Expired and the provider is down: the cached keys still verify.
    *crypto.jwks.borrow_mut() = Err("connection refused".into());
    provider.clock.set(provider.clock.get() + 3_601_000);
    assert_eq!(send(signed_a()), 200);
    assert_eq!(crypto.fetches.get(), 4);
}

#[test]
fn without_any_key_set_a_token_gets_503_and_the_jwks_is_retried_every_5_s() {
    let crypto = FakeCrypto::serving(json!([]), None);
    *crypto.jwks.borrow_mut() = Ok((503, None, json!({"error": "down"})));
    let jwks = RefCell::default();
    let bearer = token(
        json!({"alg": "RS256", "kid": "rsa-a"}),
        claims(),
        "whatever",
    );
    let provider = provider();
    let ex = fast((&crypto, &jwks), &provider, Some(&bearer));
    assert_eq!(ex.response.status, 503, "{}", ex.text);
    assert_eq!(ex.json()["error"]["code"], "auth_unavailable");
    assert_eq!(ex.response.header("retry-after"), Some("5"));
    let warn = ex
        .log
        .iter()
        .find(|(_, l)| l["event"] == "jwks_fetch_failed")
        .expect("a warning");
    assert_eq!(warn.1["cached_keys"], 0);
    // Retried at most every 5 s meanwhile: the first request 5 s on finds the provider back.
    let key = rsa("rsa-a", "nnnn");
    *crypto.jwks.borrow_mut() = Ok((200, Some("max-age=600".into()), json!({"keys": [key]})));
    let signed = |kid: &str| {
        token(
            json!({"alg": "RS256", "kid": kid}),
            claims(),
            &material(&key),
        )
    };
    let send = |bearer: &str| {
        fast((&crypto, &jwks), &provider, Some(bearer))
            .response
            .status
    };
    provider.clock.set(provider.clock.get() + JWKS_RETRY_MS - 1);
    assert_eq!((send(&signed("rsa-a")), crypto.fetches.get()), (503, 1));
    provider.clock.set(provider.clock.get() + 1);
    assert_eq!((send(&signed("rsa-a")), crypto.fetches.get()), (200, 2));

    // Down again: the cached keys go on verifying, and a minute on, a token with a new `kid`
    // tries the JWKS once and is refused as unknown (401, not 503).
    *crypto.jwks.borrow_mut() = Ok((503, None, json!({"error": "down"})));
    assert_eq!((send(&signed("rsa-a")), crypto.fetches.get()), (200, 2));
    provider.clock.set(provider.clock.get() + JWKS_REFETCH_MS);
    let rotated = fast((&crypto, &jwks), &provider, Some(&signed("rsa-b")));
    assert_eq!(
        (rotated.response.status, &rotated.json()["error"]["code"]),
        (401, &json!("invalid_token"))
    );
    assert_eq!(crypto.fetches.get(), 3);
    assert_eq!((send(&signed("rsa-a")), crypto.fetches.get()), (200, 3));
}

#[test]
fn only_usable_signing_keys_are_kept_from_a_jwks() {
    let keys = parse_jwks(
        json!({"keys": [
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "n", "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "n", "e": "AQAB"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "x", "y": "y"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "x"},
            {"kty": "RSA", "kid": "good", "n": "n", "e": "AQAB", "x5c": ["..."]},
            {"kty": "EC", "kid": "good-ec", "crv": "P-256", "x": "x", "y": "y", "alg": "ES256"}
        ]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let kept: Vec<(Option<&str>, Alg)> = keys.iter().map(|k| (k.kid.as_deref(), k.alg)).collect();
    let expected = [(Some("good"), Alg::Rs256), (Some("good-ec"), Alg::Es256)];
    assert_eq!(kept, expected);
    assert_eq!(keys[0].jwk, r#"{"kty":"RSA","n":"n","e":"AQAB"}"#);
    assert!(parse_jwks(br#"{"keys":[]}"#).is_err());
    assert!(parse_jwks(b"<html>").is_err());
}
