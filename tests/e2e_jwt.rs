//! End-to-end tests of end users' JWTs (issue 16) on the real Worker under `wrangler dev`: what
//! only workerd shows. Signatures checked by its WebCrypto (RS256, ES256; HS256 with a shared
//! secret), with tokens minted here from the test keys in `tests/fixtures/jwt`; the JWKS fetched
//! for real from the fake Groq on 127.0.0.1 (which also plays the sign-in provider), and a 503
//! while it cannot be; the `[[ratelimits]]` binding per user and per client; Cloudflare Access's
//! header; the OpenAI SDK with a token as its key; no token, signature or secret in an answer or
//! in the Worker's output. The rules (each claim, the algorithm table, the JWKS cache and its
//! once-a-minute refetch and 5 s retry) are `tests/jwt.rs`'s, with a fake clock.
//!
//! Run: `cargo test --test e2e_jwt` (needs what `tests/e2e.rs` needs).

mod e2e_support;

use e2e_support::fake_groq::JWKS_PATH;
use e2e_support::fixtures::*;
use e2e_support::http;
use e2e_support::process::{self, python, run_with_timeout};
use e2e_support::worker::{manifest_dir, Extras};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ISSUER: &str = "https://login.example.test/";
const AUDIENCE: &str = "task-router-e2e";
const SECRET: &str = "hs256-shared-secret-for-the-e2e-tests-0123456789";
/// What each user, and each client, may call in a minute (the `[[ratelimits]]` table, replaced).
const LIMIT: usize = 5;
const REGISTRY: &str = r#"{"fast":["ok-jwtfast"],"deep":["ok-jwtdeep"],"limit":["ok-jwtlimit"]}"#;

fn fixture(name: &str) -> String {
    let path = manifest_dir().join("tests/fixtures/jwt").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn jwk(name: &str) -> Value {
    serde_json::from_str(&fixture(&format!("{name}.jwk.json"))).expect("a JWK fixture")
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Valid claims for `sub`, with `extra` merged in.
fn claims(sub: &str, extra: Value) -> Value {
    let mut claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now_s(),
                            "exp": now_s() + 600, "tasks": ["fast", "limit"]});
    for (name, value) in extra.as_object().expect("an object of claims") {
        claims[name] = value.clone();
    }
    claims
}

/// A token for `sub` signed with fixture key `key` (`rsa-a`, `rsa-b`, `ec-a`), its `kid` `kid`.
fn signed_as(key: &str, kid: &str, sub: &str) -> String {
    let pem = fixture(&format!("{key}.pem"));
    let (alg, encoding) = match key {
        "ec-a" => (Algorithm::ES256, EncodingKey::from_ec_pem(pem.as_bytes())),
        _ => (Algorithm::RS256, EncodingKey::from_rsa_pem(pem.as_bytes())),
    };
    let header = Header {
        kid: Some(kid.to_string()),
        ..Header::new(alg)
    };
    let encoding = encoding.expect("a fixture key");
    encode(&header, &claims(sub, json!({})), &encoding).expect("a token")
}

fn signed(key: &str, sub: &str) -> String {
    signed_as(key, key, sub)
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    let header = Header::new(Algorithm::HS256);
    encode(&header, claims, &EncodingKey::from_secret(secret)).expect("a token")
}

/// `token` with its signature replaced by `bytes`.
fn forged(token: &str, bytes: &[u8]) -> String {
    use base64::Engine;
    let (signed, _) = token.rsplit_once('.').expect("three parts");
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!("{signed}.{signature}")
}

/// A Worker verifying tokens with `jwt` vars, the JWKS at the fake answering `status`.
fn start(jwt: &[(&str, &str)], jwks: u16, extras: Extras<'_>) -> Stack {
    let mut vars = vec![("MODEL_REGISTRY", REGISTRY), ("JWT_ISSUER", ISSUER)];
    vars.extend_from_slice(jwt);
    let stack = Stack::start(&vars, extras);
    let keys = match jwks {
        200 => json!({"keys": [jwk("rsa-a"), jwk("ec-a")]}),
        _ => json!({"error": "down"}),
    };
    stack.fake.set_jwks(jwks, Some("public, max-age=600"), keys);
    stack
}

/// The JWKS Worker: users' tokens from the fake's JWKS, `JWT_TASKS_CLAIM`, `LIMIT` a minute.
fn users() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let url = format!("{{groq}}{JWKS_PATH}");
        let jwt = [("JWT_JWKS_URL", url.as_str()), ("JWT_AUDIENCE", AUDIENCE)];
        let jwt = [jwt[0], jwt[1], ("JWT_TASKS_CLAIM", "tasks")];
        let limit = "simple = { limit = 600, period = 60 }";
        let limit = [(limit, "simple = { limit = 5, period = 60 }")];
        let stack = start(&jwt, 200, Extras::replace(&limit));
        // The first request fetches the JWKS: before tests run in parallel, so it is one fetch.
        let first = bearer(&stack, "fast", &signed("rsa-a", "user-first"));
        assert_eq!(first.status, 200, "{}", first.text());
        stack
    })
}

/// `POST /v1/tasks/{task}` with `token` as the bearer.
fn bearer(stack: &Stack, task: &str, token: &str) -> http::Response {
    let body = chat_body("e2e-jwt");
    stack.post(&format!("/v1/tasks/{task}"), Some(token), "", &body)
}

/// Neither an answer nor the Worker's output holds a part of `tokens`, or `secrets`.
fn assert_never_shown(
    stack: &Stack,
    answers: &[http::Response],
    tokens: &[String],
    secrets: &[&str],
) {
    let parts = tokens
        .iter()
        .flat_map(|t| t.split('.'))
        .filter(|p| p.len() >= 16);
    let all: Vec<&str> = parts.chain(secrets.iter().copied()).collect();
    for answer in answers {
        assert_answer_holds_none_of(answer, &all);
    }
    stack.assert_output_holds_none_of(&all);
}

#[test]
fn users_tokens_are_verified_by_webcrypto_and_never_shown() {
    let stack = users();
    let mut answers = Vec::new();
    // RS256 and ES256, on the task route and the SDK route; the user names the request line.
    let (rs, es) = (signed("rsa-a", "user-rs"), signed("ec-a", "user-es"));
    answers.push(bearer(stack, "fast", &rs));
    let body = json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]});
    answers.push(stack.post("/v1/chat/completions", Some(&es), "e2e-jwt-es", &body));
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(stack.request_line("e2e-jwt-es")["client"], "user-es");
    // One JWKS fetch for both keys, at the first token.
    assert_eq!(stack.fake.jwks_fetches(), 1);

    // Signatures WebCrypto does not verify: made up, or made with another key than the `kid`'s.
    let mut tokens = vec![rs.clone(), es.clone()];
    let other_key = signed_as("rsa-b", "rsa-a", "user-b");
    for token in [forged(&rs, &[7; 256]), other_key, forged(&es, &[7; 64])] {
        let answer = bearer(stack, "fast", &token);
        assert_eq!(answer.status, 401, "{}", answer.text());
        let error = &answer.json()["error"];
        assert_eq!(error["code"], "invalid_token");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains("signature does not verify"), "{error}");
        let challenge = answer.header("www-authenticate");
        assert_eq!(challenge, Some("Bearer error=\"invalid_token\""));
        answers.push(answer);
        tokens.push(token);
    }
    // Refused requests never reach Groq.
    assert_eq!(stack.fake.calls_to("ok-jwtfast"), 3);

    // Cloudflare Access's header, without `Authorization`.
    let access = signed("rsa-a", "user-access");
    let headers = [
        ("content-type", "application/json"),
        ("cf-access-jwt-assertion", &access),
    ];
    let body = chat_body("e2e-jwt-access").to_string();
    let (port, body) = (stack.port(), body.as_bytes());
    let answer = http::send(port, "POST", "/v1/tasks/fast", &headers, body);
    assert_eq!(answer.status, 200, "{}", answer.text());
    answers.push(answer);
    tokens.push(access);

    // The OpenAI SDK, the token as its `api_key`.
    process::require_python_sdks();
    let sdk_token = signed("rsa-a", "user-sdk");
    let script = "import sys, openai\n\
        client = openai.OpenAI(base_url=sys.argv[1] + '/v1', api_key=sys.argv[2], max_retries=0)\n\
        reply = client.chat.completions.create(model='fast', messages=[{'role': 'user', 'content': 'hi'}])\n\
        print(reply.model)\n\
        try:\n    openai.OpenAI(base_url=sys.argv[1] + '/v1', api_key=sys.argv[2][:-4] + 'AAAA', max_retries=0).models.list()\n\
        except openai.AuthenticationError as e:\n    print('refused', e.status_code)\n";
    let base = stack.worker.base_url();
    let mut command = python();
    command.args(["-c", script, &base, &sdk_token]);
    let ran = run_with_timeout(&mut command, Duration::from_secs(60));
    let (stdout, output) = (ran.stdout.trim(), ran.output());
    assert!(
        ran.succeeded() && stdout == "ok-jwtfast\nrefused 401",
        "{output}"
    );
    tokens.push(sdk_token);
    assert_never_shown(stack, &answers, &tokens, &[]);
}

/// The `[[ratelimits]]` binding keys users by their claim and clients by their name.
#[test]
fn the_rate_limiter_binding_counts_each_user_and_each_client_apart() {
    let stack = users();
    let (greedy, modest) = (
        signed("rsa-a", "user-greedy"),
        signed("ec-a", "user-modest"),
    );
    let limited = |token: &str| bearer(stack, "limit", token).status;
    let statuses: Vec<u16> = (0..=LIMIT).map(|_| limited(&greedy)).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    // Another user has a budget of their own.
    assert_eq!(bearer(stack, "limit", &modest).status, 200);

    let statuses: Vec<u16> = (0..LIMIT).map(|_| limited(CLIENT_KEY)).collect();
    assert_eq!(statuses, [200; LIMIT]);
    let refused = bearer(stack, "limit", CLIENT_KEY);
    let retry_after = refused.header("retry-after");
    assert_eq!((refused.status, retry_after), (429, Some("60")));
    assert_eq!(refused.json()["error"]["code"], "client_rate_limited");
    // Another client has its own budget.
    assert_eq!(bearer(stack, "limit", OTHER_KEY).status, 200);
    // Refused requests never reach Groq.
    assert_eq!(stack.fake.calls_to("ok-jwtlimit"), 2 * LIMIT + 2);
}

#[test]
fn with_the_jwks_unreachable_a_token_gets_503_and_a_warning() {
    let url = format!("{{groq}}{JWKS_PATH}");
    let jwt = [("JWT_JWKS_URL", url.as_str()), ("JWT_AUDIENCE", AUDIENCE)];
    let stack = start(&jwt, 500, Extras::default());
    let answer = bearer(&stack, "fast", &signed("rsa-a", "user-down"));
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "auth_unavailable");
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert_eq!(stack.fake.jwks_fetches(), 1);
    let warning = stack.log_line(|l| l["event"] == "jwks_fetch_failed");
    assert_eq!(warning["cached_keys"], 0);
}

#[test]
fn hs256_tokens_verify_with_the_shared_secret_only() {
    let jwt = [("JWT_SECRET", SECRET), ("JWT_ALLOW_ANY_AUDIENCE", "true")];
    let jwt = [jwt[0], jwt[1], ("JWT_CLIENT_CLAIM", "email")];
    let stack = start(&jwt, 404, Extras::default());
    let ada = claims("x", json!({"email": "ada@example.test", "aud": "anything"}));
    let good = hs256(SECRET.as_bytes(), &ada);
    let answer = bearer(&stack, "fast", &good);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let line = stack.log_line(|l| l["event"] == "request");
    assert_eq!(line["client"], "ada@example.test");

    let another = b"another-secret-that-is-long-enough-0123456789";
    let wrong = hs256(another, &claims("x", json!({"email": "e"})));
    let refused = bearer(&stack, "fast", &wrong);
    assert_eq!(refused.status, 401, "{}", refused.text());
    let text = refused.text();
    assert!(text.contains("signature does not verify"), "{text}");
    assert_never_shown(&stack, &[answer, refused], &[good, wrong], &[SECRET]);
}
