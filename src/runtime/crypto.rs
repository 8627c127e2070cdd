//! `WebCrypto`: the `TokenVerification` seam on the Workers runtime. Signatures are checked by
//! `crypto.subtle` (which `worker` does not wrap: hence the small binding below), keys are
//! imported once per isolate and reused; the JWKS is fetched with a timeout.

use std::cell::RefCell;
use std::collections::HashMap;

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::js_sys::{self, futures::JsFuture, Array, Uint8Array};
use worker::{web_sys, AbortSignal, Fetch, Request};

use super::upstream::whole_body;
use crate::http::jwt::{Alg, FetchedJwks, KeyMaterial, TokenVerification, VerifyKey};

/// How long the JWKS endpoint may take, head and body.
const JWKS_TIMEOUT_MS: f64 = 5_000.0;
/// Imported keys kept per isolate; past this the cache starts over (a refetched JWKS gives its
/// keys new ids, so old ones would only pile up).
const MAX_CACHED_KEYS: usize = 32;

#[wasm_bindgen]
extern "C" {
    type SubtleCrypto;
    #[wasm_bindgen(thread_local_v2, js_namespace = crypto, js_name = subtle)]
    static SUBTLE: SubtleCrypto;
    #[wasm_bindgen(method, catch, js_name = importKey)]
    fn import_key(
        this: &SubtleCrypto,
        format: &str,
        key_data: &JsValue,
        algorithm: &JsValue,
        extractable: bool,
        usages: &Array,
    ) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn digest(
        this: &SubtleCrypto,
        algorithm: &str,
        data: &Uint8Array,
    ) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn verify(
        this: &SubtleCrypto,
        algorithm: &JsValue,
        key: &JsValue,
        signature: &Uint8Array,
        data: &Uint8Array,
    ) -> Result<js_sys::Promise, JsValue>;
}

thread_local! {
    /// `CryptoKey`s by `VerifyKey::id`.
    static KEYS: RefCell<HashMap<String, JsValue>> = RefCell::default();
}

pub struct WebCrypto;

/// WebCrypto's names: the parameters to import a key with, and to verify with.
fn algorithm(alg: Alg) -> (&'static str, &'static str) {
    match alg {
        Alg::Rs256 => (
            r#"{"name":"RSASSA-PKCS1-v1_5","hash":"SHA-256"}"#,
            r#"{"name":"RSASSA-PKCS1-v1_5"}"#,
        ),
        Alg::Es256 => (
            r#"{"name":"ECDSA","namedCurve":"P-256"}"#,
            r#"{"name":"ECDSA","hash":"SHA-256"}"#,
        ),
        Alg::Hs256 => (r#"{"name":"HMAC","hash":"SHA-256"}"#, r#"{"name":"HMAC"}"#),
    }
}

fn js_error(e: JsValue) -> String {
    worker::Error::from(e).to_string()
}

async fn import(key: &VerifyKey<'_>) -> Result<JsValue, String> {
    if let Some(imported) = KEYS.with(|keys| keys.borrow().get(key.id).cloned()) {
        return Ok(imported);
    }
    let (format, data) = match key.material {
        KeyMaterial::Jwk(jwk) => ("jwk", js_sys::JSON::parse(jwk).map_err(js_error)?),
        KeyMaterial::Secret(secret) => ("raw", Uint8Array::from(secret).into()),
    };
    let params = js_sys::JSON::parse(algorithm(key.alg).0).map_err(js_error)?;
    let usages = Array::of1(&JsValue::from_str("verify"));
    let promise = SUBTLE
        .with(|subtle| subtle.import_key(format, &data, &params, false, &usages))
        .map_err(js_error)?;
    let imported = JsFuture::from(promise).await.map_err(js_error)?;
    KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.insert(key.id.to_string(), imported.clone());
    });
    Ok(imported)
}

impl TokenVerification for WebCrypto {
    async fn fetch_jwks(&self, url: &str) -> Result<FetchedJwks, String> {
        let signal = AbortSignal::from(web_sys::AbortSignal::timeout_with_f64(JWKS_TIMEOUT_MS));
        let fetched = async {
            // A `web_sys` request from the URL string: `worker::Url` would parse it in wasm,
            // with the IDNA tables (about 90 KiB of bundle) that parsing brings.
            let request = web_sys::Request::new_with_str(url)?;
            let response = Fetch::Request(Request::from(request))
                .send_with_signal(&signal)
                .await?;
            let cache_control = response.headers().get("cache-control")?;
            let body = whole_body(&response).await?;
            Ok::<_, worker::Error>(FetchedJwks {
                status: response.status_code(),
                cache_control,
                body,
            })
        };
        fetched.await.map_err(|e| match signal.aborted() {
            true => "the JWKS endpoint did not answer in time".to_string(),
            false => e.to_string(),
        })
    }

    async fn verify(
        &self,
        key: &VerifyKey<'_>,
        signed: &[u8],
        signature: &[u8],
    ) -> Result<bool, String> {
        let imported = import(key).await?;
        let params = js_sys::JSON::parse(algorithm(key.alg).1).map_err(js_error)?;
        let checked = SUBTLE.with(|subtle| {
            subtle.verify(
                &params,
                &imported,
                &Uint8Array::from(signature),
                &Uint8Array::from(signed),
            )
        });
        // A signature WebCrypto cannot even read (a wrong length) is just a bad signature: only
        // a key that cannot be imported is the router's problem.
        let Ok(promise) = checked else {
            return Ok(false);
        };
        Ok(JsFuture::from(promise)
            .await
            .is_ok_and(|valid| valid.as_bool() == Some(true)))
    }
}

/// SHA-256 of `data`, in hex (the response cache's keys).
pub async fn sha256_hex(data: &[u8]) -> Result<String, String> {
    let promise = SUBTLE
        .with(|subtle| subtle.digest("SHA-256", &Uint8Array::from(data)))
        .map_err(js_error)?;
    let digest = JsFuture::from(promise).await.map_err(js_error)?;
    let bytes = Uint8Array::new(&digest).to_vec();
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
