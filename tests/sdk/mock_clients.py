#!/usr/bin/env python3
"""Drives a running task-router with `ALLOW_MOCK` on through the official OpenAI and Groq Python
SDKs, with `mock_response` / `mock_failures` in `extra_body`, as a frontend team's tests would: an
answer, a stream, a fallback, and a stream that breaks mid-way raising `APIError`.

Usage: python3 tests/sdk/mock_clients.py http://127.0.0.1:PORT CLIENT_KEY

`tests/e2e_mock.rs` starts the router (the registry of `wrangler.toml`, no `GROQ_API_KEY`) and runs
this script. Prints one line per check and exits 1 at the first failure.
Needs `pip install -r tests/sdk/requirements.txt`.
"""

import sys
import traceback

import groq
import openai

TASK = "fast"
FIRST, SECOND = "openai/gpt-oss-20b", "openai/gpt-oss-120b"  # `fast` in wrangler.toml
MESSAGES = [{"role": "user", "content": "Say hi"}]
TEXT = "Hi from the mock, in a few words"


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def check(name, run):
    try:
        print(f"ok   {name}: {run()}", flush=True)
    except Exception:
        print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
        sys.exit(1)


def main(base, key):
    clients = {
        "openai": openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0),
        "groq": groq.Groq(base_url=base, api_key=key, max_retries=0),
    }
    for sdk, client in clients.items():
        create = client.chat.completions.create
        create_raw = client.chat.completions.with_raw_response.create

        def answer():
            reply = create(model=TASK, messages=MESSAGES, extra_body={"mock_response": TEXT})
            expect(reply.model == FIRST, f"model {reply.model!r}")
            expect(reply.choices[0].message.content == TEXT, reply.choices[0].message.content)
            expect(reply.usage.completion_tokens == (len(TEXT) + 3) // 4, reply.usage)
            return reply.model

        def fallback():
            raw = create_raw(
                model=TASK, messages=MESSAGES, extra_body={"mock_failures": ["rate_limited"]}
            )
            reply = raw.parse()
            expect(reply.model == SECOND, f"model {reply.model!r}")
            attempts = raw.headers.get("x-attempts")
            expect(attempts == f"{FIRST}=rate_limited(429), {SECOND}=ok(200)", attempts)
            return attempts

        def stream():
            chunks = create(model=TASK, messages=MESSAGES, stream=True, extra_body={"mock_response": TEXT})
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            expect(text == TEXT, text)
            return f"{len(text)} characters"

        def broken_stream():
            chunks = create(
                model=TASK, messages=MESSAGES, stream=True, extra_body={"mock_failures": ["stream_break"]}
            )
            seen = []
            try:
                for chunk in chunks:
                    seen.append(chunk.choices[0].delta.content or "")
            except (openai.APIError, groq.APIError) as error:
                expect("".join(seen) == "This ", seen)
                return f"{type(error).__name__} after {''.join(seen)!r}"
            raise AssertionError(f"the stream ended without an error: {seen}")

        def everything_fails():
            try:
                create(model=TASK, messages=MESSAGES, extra_body={"mock_failures": ["model_gone", "upstream_error"]})
            except (openai.APIStatusError, groq.APIStatusError) as error:
                expect(error.status_code == 502, error.status_code)
                # The OpenAI SDK's `body` is the `error` object; the Groq SDK's, the whole body.
                body = error.body.get("error", error.body) if isinstance(error.body, dict) else {}
                expect(body.get("code") == "all_models_failed", error.body)
                expect(len(body.get("attempts", [])) == 2, error.body)
                return body["code"]
            raise AssertionError("no error for a chain that failed")

        for name, run in [
            ("answer", answer),
            ("fallback", fallback),
            ("stream", stream),
            ("broken stream raises", broken_stream),
            ("every model fails", everything_fails),
        ]:
            check(f"{sdk}: {name}", run)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
