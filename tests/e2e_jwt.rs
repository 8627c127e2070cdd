//! End-to-end tests of end users' JWTs (issue 16) against the real Worker under `wrangler dev`:
//! signatures checked by workerd's WebCrypto, the JWKS fetched from a fake sign-in provider on
//! 127.0.0.1 (served by `e2e_support::fake_groq` at `/.well-known/jwks.json`), and tokens minted here
//! with the test keys in `tests/fixtures/jwt` (RS256, ES256; HS256 with a shared secret).
//!
//! Covered: accepted tokens; each refusal (`alg: none`, HS256 signed with the RSA public key, a
//! bad signature, an unknown `kid`, `exp`, `nbf`, `iss`, `aud`, size, malformed parts); key
//! rotation; the JWKS down with and without cached keys; per-user rate limits; `JWT_TASKS_CLAIM`;
//! `Cf-Access-Jwt-Assertion`; the OpenAI SDK with a JWT as its `api_key`; a browser's preflight
//! then a JWT call; and no token, signature or secret in any answer or log line.
//!
//! Run: `cargo test --test e2e_jwt`. Two tests wait out the JWKS refetch interval (61 s).

mod e2e_support;

use e2e_support::fake_groq::{FakeGroq, JWKS_PATH};
use e2e_support::http;
use e2e_support::process::{self, python, run_with_timeout};
use e2e_support::worker::{manifest_dir, Extras, Worker};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const GROQ_KEY: &str = "gsk_e2e_jwt_fake_groq_key_77aa";
const ISSUER: &str = "https://login.example.test/";
const AUDIENCE: &str = "task-router-e2e";
const SECRET: &str = "hs256-shared-secret-for-the-e2e-tests-0123456789";
const ORIGIN: &str = "https://app.example.test";
/// Users may call 5 requests a minute each (the `[[ratelimits]]` table, replaced).
const USER_LIMIT: usize = 5;
/// `JWKS_REFETCH_MS` and a margin.
const REFETCH_WAIT: Duration = Duration::from_secs(61);

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
        .expect("the clock is past 1970")
        .as_secs()
}

/// Valid claims for `sub`, with `extra` merged in (`null` removes a claim).
fn claims(sub: &str, extra: Value) -> Value {
    let mut claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now_s(), "exp": now_s() + 600,
        "tasks": ["fast"],
    });
    for (name, value) in extra.as_object().expect("an object of claims") {
        match value {
            Value::Null => claims.as_object_mut().map(|c| c.remove(name)),
            value => claims
                .as_object_mut()
                .map(|c| c.insert(name.clone(), value.clone())),
        };
    }
    claims
}

/// A token signed with fixture key `key` (`rsa-a`, `rsa-b`, `ec-a`), its `kid` the key's name.
fn signed(key: &str, claims: &Value) -> String {
    let (alg, encoding) = match key {
        "ec-a" => (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(fixture("ec-a.pem").as_bytes()),
        ),
        _ => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(fixture(&format!("{key}.pem")).as_bytes()),
        ),
    };
    let header = Header {
        kid: Some(key.to_string()),
        ..Header::new(alg)
    };
    encode(&header, claims, &encoding.expect("a fixture key")).expect("a signed token")
}

fn hs256(secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let header = Header {
        kid: kid.map(str::to_string),
        ..Header::new(Algorithm::HS256)
    };
    encode(&header, claims, &EncodingKey::from_secret(secret)).expect("an HS256 token")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn registry() -> String {
    json!({"fast": ["ok-jwtfast"], "deep": ["ok-jwtdeep"]}).to_string()
}

/// A Worker verifying tokens from `fake`'s JWKS, plus `extra` vars.
fn start_jwks_worker(fake: &FakeGroq, extra: &[(&str, &str)], extras: Extras<'_>) -> Worker {
    let jwks_url = format!("{}{JWKS_PATH}", fake.base_url());
    let (base, registry) = (fake.base_url(), registry());
    let mut vars = vec![
        ("GROQ_BASE_URL", base.as_str()),
        ("GROQ_API_KEY", GROQ_KEY),
        ("MODEL_REGISTRY", registry.as_str()),
        ("JWT_JWKS_URL", jwks_url.as_str()),
        ("JWT_ISSUER", ISSUER),
        ("JWT_AUDIENCE", AUDIENCE),
    ];
    vars.extend_from_slice(extra);
    Worker::start_with(&vars, extras)
}

fn ask(worker: &Worker, path: &str, headers: &[(&str, &str)]) -> http::Response {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let body = match path {
        "/v1/chat/completions" => {
            json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]})
        }
        _ => json!({"messages": [{"role": "user", "content": "hi"}]}),
    };
    http::send(
        worker.port(),
        "POST",
        path,
        &all,
        body.to_string().as_bytes(),
    )
}

fn bearer(worker: &Worker, path: &str, token: &str) -> http::Response {
    let authorization = format!("Bearer {token}");
    ask(worker, path, &[("authorization", &authorization)])
}

/// Checks that nothing secret reached an answer or the Worker's output.
fn assert_never_shown(worker: &Worker, answers: &[String], secrets: &[&str]) {
    let logs = worker.logs();
    for secret in secrets.iter().filter(|s| s.len() >= 16) {
        assert!(
            !logs.contains(secret),
            "the Worker's output holds a token part or secret"
        );
        for answer in answers {
            assert!(
                !answer.contains(secret),
                "an answer holds a token part or secret: {answer}"
            );
        }
    }
}

/// The three parts of a token, as `assert_never_shown` looks for them.
fn parts(token: &str) -> Vec<&str> {
    token.split('.').filter(|p| p.len() >= 16).collect()
}

#[test]
fn users_tokens_are_verified_refused_limited_and_never_shown() {
    let fake = FakeGroq::start(GROQ_KEY);
    fake.set_jwks(
        200,
        Some("public, max-age=600"),
        json!({"keys": [jwk("rsa-a"), jwk("ec-a")]}),
    );
    let extras = Extras {
        replace: &[(
            "simple = { limit = 600, period = 60 }",
            "simple = { limit = 5, period = 60 }",
        )],
        ..Extras::default()
    };
    let worker = start_jwks_worker(
        &fake,
        &[("JWT_TASKS_CLAIM", "tasks"), ("ALLOWED_ORIGINS", ORIGIN)],
        extras,
    );
    let mut answers = Vec::new();
    let mut shown: Vec<String> = Vec::new();

    // Accepted: RS256 and ES256, on the task route and the SDK route; the user names the line.
    let rs = signed("rsa-a", &claims("user-rs", json!({})));
    let es = signed("ec-a", &claims("user-es", json!({})));
    for (token, path) in [(&rs, "/v1/tasks/fast"), (&es, "/v1/chat/completions")] {
        let answer = bearer(&worker, path, token);
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        answers.push(answer.text());
    }
    let line = worker
        .wait_for_log_json(Duration::from_secs(10), |l| {
            l["event"] == "request" && l["client"] == "user-es"
        })
        .unwrap_or_else(|| panic!("no request line for user-es:\n{}", worker.logs()));
    assert_eq!(line["status"], 200);
    assert_eq!(fake.jwks_fetches(), 1, "one JWKS fetch for both keys");
    shown.extend([rs.clone(), es.clone()]);

    // Refused, each saying which check failed.
    let rsa_public = fixture("rsa-a.pub.pem");
    let mut forged = rs
        .rsplit_once('.')
        .map(|(signed, _)| signed)
        .unwrap_or_default()
        .to_string();
    forged.push('.');
    forged.push_str(&b64(&[7u8; 256]));
    let header_none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims("user-none", json!({})).to_string().as_bytes());
    let refusals = [
        (format!("{header_none}.{payload}."), "`alg: none`"),
        (
            hs256(
                rsa_public.as_bytes(),
                Some("rsa-a"),
                &claims("user-confused", json!({})),
            ),
            "`alg` is not accepted",
        ),
        (forged, "signature does not verify"),
        (
            signed("rsa-b", &claims("user-kid", json!({}))),
            "no key in the JWKS has its `kid`",
        ),
        (
            signed("rsa-a", &claims("user-exp", json!({"exp": now_s() - 120}))),
            "expired",
        ),
        (
            signed("rsa-a", &claims("user-nbf", json!({"nbf": now_s() + 600}))),
            "not valid yet",
        ),
        (
            signed(
                "rsa-a",
                &claims("user-iss", json!({"iss": "https://evil.example.test/"})),
            ),
            "`iss`",
        ),
        (
            signed("rsa-a", &claims("user-aud", json!({"aud": "another-api"}))),
            "`aud`",
        ),
        (
            signed(
                "rsa-a",
                &claims("user-big", json!({"pad": "x".repeat(9000)})),
            ),
            "larger than 8 KiB",
        ),
        (
            format!("{}.{payload}.{}", b64(b"{not json"), b64(b"sig")),
            "header is not a JSON object",
        ),
        // Base64url's alphabet, but no base64url: a lone character cannot encode a byte.
        (
            format!("{}.{payload}.A", b64(br#"{"alg":"RS256"}"#)),
            "not base64url",
        ),
    ];
    for (token, says) in &refusals {
        let answer = bearer(&worker, "/v1/tasks/fast", token);
        assert_eq!(answer.status, 401, "{says}: {}", answer.text());
        let error = &answer.json()["error"];
        assert_eq!(error["code"], "invalid_token", "{says}");
        assert!(
            error["message"].as_str().unwrap_or_default().contains(says),
            "{says}: {error}"
        );
        assert_eq!(
            answer.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\"")
        );
        answers.push(answer.text());
        shown.push(token.clone());
    }
    // The unknown `kid` came within a minute of the first fetch: refused without another.
    assert_eq!(fake.jwks_fetches(), 1);
    // Not three base64url parts: a client key, and there are none.
    let answer = bearer(&worker, "/v1/tasks/fast", "not.a.jwt!");
    assert_eq!(answer.json()["error"]["code"], "invalid_api_key");
    let routed: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| c.path != JWKS_PATH)
        .collect();
    assert_eq!(routed.len(), 2, "refused requests never reach Groq");

    // `JWT_TASKS_CLAIM`: a task the token does not list is 403.
    let answer = bearer(&worker, "/v1/tasks/deep", &rs);
    assert_eq!(
        (answer.status, answer.json()["error"]["code"].clone()),
        (403, json!("task_not_allowed"))
    );

    // Cloudflare Access's header, without `Authorization`; `/v1/routes` takes a JWT as a key.
    let access = signed("rsa-a", &claims("user-access", json!({})));
    let answer = ask(
        &worker,
        "/v1/tasks/fast",
        &[("cf-access-jwt-assertion", &access)],
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let routes = http::get(worker.port(), "/v1/routes", Some(&access));
    assert_eq!(routes.status, 200, "{}", routes.text());
    shown.push(access);

    // Per user: one user's limit spent, another's untouched.
    let greedy = signed("rsa-a", &claims("user-greedy", json!({})));
    let statuses: Vec<u16> = (0..=USER_LIMIT)
        .map(|_| bearer(&worker, "/v1/tasks/fast", &greedy).status)
        .collect();
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let modest = signed("rsa-a", &claims("user-modest", json!({})));
    assert_eq!(bearer(&worker, "/v1/tasks/fast", &modest).status, 200);
    shown.extend([greedy, modest]);

    // A browser: the preflight (no credentials), then the call with the user's token.
    let preflight = http::send(
        worker.port(),
        "OPTIONS",
        "/v1/chat/completions",
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ],
        b"",
    );
    assert_eq!(preflight.status, 204, "{}", preflight.text());
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(ORIGIN)
    );
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default();
    assert!(allowed.contains("authorization"), "{allowed}");
    let browser = signed("ec-a", &claims("user-browser", json!({})));
    let authorization = format!("Bearer {browser}");
    let answer = ask(
        &worker,
        "/v1/chat/completions",
        &[("origin", ORIGIN), ("authorization", &authorization)],
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("access-control-allow-origin"), Some(ORIGIN));
    shown.push(browser);

    // The OpenAI SDK, the token as its `api_key`.
    process::require_python_sdks();
    let sdk_token = signed("rsa-a", &claims("user-sdk", json!({})));
    let script = "import sys, openai\n\
        client = openai.OpenAI(base_url=sys.argv[1] + '/v1', api_key=sys.argv[2], max_retries=0)\n\
        reply = client.chat.completions.create(model='fast', messages=[{'role': 'user', 'content': 'hi'}])\n\
        print(reply.model)\n\
        try:\n    openai.OpenAI(base_url=sys.argv[1] + '/v1', api_key=sys.argv[2][:-4] + 'AAAA', max_retries=0).models.list()\n\
        except openai.AuthenticationError as e:\n    print('refused', e.status_code)\n";
    let ran = run_with_timeout(
        python().args(["-c", script, &worker.base_url(), &sdk_token]),
        Duration::from_secs(60),
    );
    assert!(ran.succeeded(), "{}", ran.output());
    assert_eq!(
        ran.stdout.trim(),
        "ok-jwtfast\nrefused 401",
        "{}",
        ran.output()
    );
    shown.push(sdk_token);

    let secrets: Vec<&str> = shown.iter().flat_map(|t| parts(t)).collect();
    assert_never_shown(&worker, &answers, &secrets);
}

#[test]
fn hs256_tokens_verify_with_the_shared_secret_only() {
    let fake = FakeGroq::start(GROQ_KEY);
    let (base, registry) = (fake.base_url(), registry());
    let worker = Worker::start(&[
        ("GROQ_BASE_URL", base.as_str()),
        ("GROQ_API_KEY", GROQ_KEY),
        ("MODEL_REGISTRY", registry.as_str()),
        ("JWT_SECRET", SECRET),
        ("JWT_ISSUER", ISSUER),
        ("JWT_ALLOW_ANY_AUDIENCE", "true"),
        ("JWT_CLIENT_CLAIM", "email"),
    ]);
    let good = hs256(
        SECRET.as_bytes(),
        None,
        &claims("x", json!({"email": "ada@example.test", "aud": "anything"})),
    );
    let answer = bearer(&worker, "/v1/tasks/fast", &good);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let line = worker
        .wait_for_log_json(Duration::from_secs(10), |l| l["event"] == "request")
        .unwrap_or_else(|| panic!("no request line:\n{}", worker.logs()));
    assert_eq!(line["client"], "ada@example.test");

    let wrong_secret = hs256(
        b"another-secret-that-is-long-enough-0123456789",
        None,
        &claims("x", json!({"email": "e"})),
    );
    let rs = signed("rsa-a", &claims("x", json!({"email": "e"})));
    for (token, says) in [
        (&wrong_secret, "signature does not verify"),
        (&rs, "`alg` is not accepted"),
    ] {
        let answer = bearer(&worker, "/v1/tasks/fast", token);
        assert_eq!(answer.status, 401, "{}", answer.text());
        assert!(answer.text().contains(says), "{}", answer.text());
    }
    let mut secrets = parts(&good);
    secrets.push(SECRET);
    assert_never_shown(&worker, &[answer_text(&worker, &good)], &secrets);
}

fn answer_text(worker: &Worker, token: &str) -> String {
    bearer(worker, "/v1/tasks/fast", token).text()
}

#[test]
fn a_rotated_key_is_found_by_one_refetch_a_minute_after_the_last() {
    let fake = FakeGroq::start(GROQ_KEY);
    fake.set_jwks(200, Some("max-age=3600"), json!({"keys": [jwk("rsa-a")]}));
    let worker = start_jwks_worker(&fake, &[], Extras::default());
    let ask = |key: &str| {
        bearer(
            &worker,
            "/v1/tasks/fast",
            &signed(key, &claims("u", json!({}))),
        )
    };
    assert_eq!(ask("rsa-a").status, 200);
    // The provider starts signing with `rsa-b`, published next to `rsa-a`.
    fake.set_jwks(
        200,
        Some("max-age=3600"),
        json!({"keys": [jwk("rsa-a"), jwk("rsa-b")]}),
    );
    thread::sleep(REFETCH_WAIT);
    let answer = ask("rsa-b");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(fake.jwks_fetches(), 2);
    assert_eq!(ask("rsa-a").status, 200);
    assert_eq!(fake.jwks_fetches(), 2, "both keys cached now");
}

#[test]
fn with_the_jwks_down_cached_keys_still_verify_and_without_them_it_is_503() {
    let fake = FakeGroq::start(GROQ_KEY);
    fake.set_jwks(500, None, json!({"error": "down"}));
    let worker = start_jwks_worker(&fake, &[], Extras::default());
    let token = signed("rsa-a", &claims("u", json!({})));
    let answer = bearer(&worker, "/v1/tasks/fast", &token);
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "auth_unavailable");
    assert_eq!(answer.header("retry-after"), Some("5"));
    let warning = worker
        .wait_for_log_json(Duration::from_secs(10), |l| {
            l["event"] == "jwks_fetch_failed"
        })
        .unwrap_or_else(|| panic!("no jwks_fetch_failed line:\n{}", worker.logs()));
    assert_eq!(warning["cached_keys"], 0);

    // The provider is back: within 5 s the next request fetches the keys.
    fake.set_jwks(200, Some("max-age=600"), json!({"keys": [jwk("rsa-a")]}));
    thread::sleep(Duration::from_secs(6));
    assert_eq!(bearer(&worker, "/v1/tasks/fast", &token).status, 200);
    let fetched = fake.jwks_fetches();

    // Down again: the cached keys keep verifying, and a minute on, a token with a new `kid`
    // tries the JWKS once, fails, and is refused as unknown (401, not 503).
    fake.set_jwks(503, None, json!({"error": "down"}));
    assert_eq!(bearer(&worker, "/v1/tasks/fast", &token).status, 200);
    assert_eq!(fake.jwks_fetches(), fetched);
    thread::sleep(REFETCH_WAIT);
    let rotated = bearer(
        &worker,
        "/v1/tasks/fast",
        &signed("rsa-b", &claims("u", json!({}))),
    );
    assert_eq!(
        (rotated.status, rotated.json()["error"]["code"].clone()),
        (401, json!("invalid_token"))
    );
    assert_eq!(fake.jwks_fetches(), fetched + 1);
    assert_eq!(bearer(&worker, "/v1/tasks/fast", &token).status, 200);
}
