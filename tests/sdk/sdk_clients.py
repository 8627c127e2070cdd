#!/usr/bin/env python3
"""Drives a running task-router with the official OpenAI and Groq Python SDKs, exactly as a user
would: `openai.OpenAI(base_url=f"{base}/v1")` and `groq.Groq(base_url=base)`, with `model` naming
a task.

Usage: python3 tests/sdk/sdk_clients.py http://127.0.0.1:PORT CLIENT_KEY

The router must sit in front of the fake Groq of `tests/e2e_support/fake_groq.rs` with the tasks
below in its `MODEL_REGISTRY` (`tests/e2e.rs` sets that up and runs this script). Prints one line per
check and exits 1 at the first failure, naming what was expected and what came back.
Needs `pip install -r tests/sdk/requirements.txt`.
"""

import json
import sys
import traceback

try:
    import groq
    import openai
    import pydantic  # an `openai` dependency: `parse` reads answers into its models
except ImportError as error:  # the Rust test checks this first; this is for direct runs
    sys.exit(f"FAIL cannot import the SDKs ({error}); run `pip install -r tests/sdk/requirements.txt`")

# Keep in step with `TASKS` in tests/e2e.rs.
TASK = "py-chat"  # ["gone-py", "ok-py"]: the first model is gone, the second answers
MODEL = "ok-py"
DROP_TASK = "py-drop"  # ["streamdrop-py", "ok-pydrop"]: the stream breaks after its first chunk
ERROR_TASK = "py-error"  # ["streamerror-py", "ok-pyerr"]: Groq sends `event: error` mid-stream
TOOLS_TASK = "py-tools"  # ["notools-py", "ok-pytools"]: the first refuses tools as Groq does
SCHEMA_TASK = "py-schema"  # ["noschema-py", "ok-pyschema"]: the first refuses `json_schema`
UNKNOWN_TASK = "no-such-task"
CHAIN_MODELS = {"gone-py", "ok-py", "streamdrop-py", "ok-pydrop", "streamerror-py", "ok-pyerr"}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]

# What the fake Groq answers: its text and its usage (see `completion` / `usage` in fake_groq.rs).
CONTENT = f"hello from {MODEL}"
PROMPT_TOKENS, COMPLETION_TOKENS, TOTAL_TOKENS = 55, 12, 67
MESSAGES = [{"role": "user", "content": "Say hello."}]
# Codes the router puts in the error event when Groq's stream stops without an error of its own.
BROKEN_STREAM_CODES = {"stream_incomplete", "stream_interrupted"}


class CheckFailed(Exception):
    pass


class Answer(pydantic.BaseModel):
    answer: str


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def expect_eq(seen, expected, what):
    expect(seen == expected, f"{what}: expected {expected!r}, got {seen!r}")


def check(name, run):
    """Runs one check; prints `ok` and its detail, or `FAIL` and exits 1."""
    try:
        detail = run()
    except CheckFailed as failure:
        print(f"FAIL {name}: {failure}", flush=True)
        sys.exit(1)
    except Exception:  # an SDK exception nobody expected is a failure of this check too
        print(f"FAIL {name}: unexpected exception\n{traceback.format_exc()}", flush=True)
        sys.exit(1)
    print(f"ok   {name}" + (f": {detail}" if detail else ""), flush=True)


def error_body(error):
    """The `{"message","type","code",...}` object an SDK error carries, whichever SDK raised it."""
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    expect(isinstance(body, dict), f"{type(error).__name__} carries no error object: {body!r}")
    return body


def check_completion(completion):
    expect_eq(completion.model, MODEL, "completion.model (the model that answered)")
    expect_eq(completion.choices[0].message.content, CONTENT, "choices[0].message.content")
    expect_eq(completion.choices[0].finish_reason, "stop", "choices[0].finish_reason")
    usage = completion.usage
    expect(usage is not None, "completion.usage is missing")
    expect_eq(
        (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
        (PROMPT_TOKENS, COMPLETION_TOKENS, TOTAL_TOKENS),
        "usage (prompt, completion, total)",
    )
    return f"model {completion.model}, content {completion.choices[0].message.content!r}, usage {usage.total_tokens}"


def read_stream(stream):
    """Concatenated deltas, chunk count, models seen, last finish_reason, and every chunk."""
    content, chunks, models, finish_reason = "", [], set(), None
    for chunk in stream:
        chunks.append(chunk)
        models.add(chunk.model)
        for choice in chunk.choices:
            content += choice.delta.content or ""
            finish_reason = choice.finish_reason or finish_reason
    return content, chunks, models, finish_reason


def check_clean_stream(stream, final_usage):
    content, chunks, models, finish_reason = read_stream(stream)
    expect_eq(content, CONTENT, "concatenated deltas")
    expect_eq(models, {MODEL}, "chunk.model of every chunk")
    expect_eq(finish_reason, "stop", "last finish_reason")
    usage = final_usage(chunks)
    expect(usage is not None, "no final usage in the stream")
    expect_eq(
        (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
        (PROMPT_TOKENS, COMPLETION_TOKENS, TOTAL_TOKENS),
        "final usage (prompt, completion, total)",
    )
    return f"{len(chunks)} chunks, content {content!r}, usage {usage.total_tokens}, ended cleanly"


def check_broken_stream(sdk, stream, codes):
    """Iterating must raise the SDK's `APIError` carrying the router's error event, not end cleanly
    and not fail as a connection error (that would mean the body was cut, not told why)."""
    received = ""
    try:
        for chunk in stream:
            for choice in chunk.choices:
                received += choice.delta.content or ""
    except sdk.APIError as error:
        expect(
            not isinstance(error, sdk.APIConnectionError),
            f"raised {type(error).__name__} (the body was cut), not the router's error event",
        )
        body = error_body(error)
        expect(body.get("code") in codes, f"error code: expected one of {sorted(codes)}, got {body!r}")
        expect(isinstance(body.get("message"), str) and body["message"], f"error message missing: {body!r}")
        expect("org_" not in str(body), f"an organisation id leaked: {body!r}")
        expect_eq(received, "hello", "content received before the error")
        return f"{type(error).__name__} code={body['code']!r} after {received!r}"
    raise CheckFailed(f"the stream ended cleanly after {received!r}; expected an APIError during iteration")


def check_not_found(sdk, create):
    try:
        create()
    except sdk.NotFoundError as error:
        expect_eq(error.status_code, 404, "status")
        body = error_body(error)
        expect_eq(body.get("code"), "model_not_found", "error code")
        expect_eq(body.get("param"), "model", "error param")
        return f"{type(error).__name__} {body['code']}"
    raise CheckFailed(f"model={UNKNOWN_TASK!r} did not raise NotFoundError")


def check_tool_call(completion):
    """The model that takes tools answered with the fake's call of the first tool."""
    expect_eq(completion.model, "ok-pytools", "model")
    choice = completion.choices[0]
    expect_eq(choice.finish_reason, "tool_calls", "finish_reason")
    call = choice.message.tool_calls[0]
    expect_eq(call.function.name, "get_weather", "tool called")
    expect_eq(json.loads(call.function.arguments), {"city": "Paris"}, "arguments")


def check_parsed(completion):
    """`parse` sent a strict `json_schema`; the model that takes it answered JSON of that shape."""
    expect_eq(completion.model, "ok-pyschema", "model")
    expect_eq(completion.choices[0].message.parsed.answer, "hello from ok-pyschema", "parsed answer")


def check_models(models):
    # OpenAI's `list()` is a page, Groq's a plain response; both carry the list in `data`.
    ids = [m.id for m in models.list().data]
    expect({TASK, DROP_TASK, ERROR_TASK} <= set(ids), f"tasks missing from models.list(): {ids}")
    expect(not CHAIN_MODELS & set(ids), f"models.list() lists model ids, not tasks: {ids}")
    expect_eq(ids, sorted(ids), "models.list() order")
    one = models.retrieve(TASK)
    expect_eq(one.id, TASK, "models.retrieve(task).id")
    return f"{len(ids)} tasks"


def main():
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} http://127.0.0.1:PORT CLIENT_KEY")
    base, key = sys.argv[1].rstrip("/"), sys.argv[2]
    print(f"openai {openai.__version__}, groq {groq.__version__}, router {base}", flush=True)
    clients = [
        ("openai", openai, openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)),
        ("groq", groq, groq.Groq(base_url=base, api_key=key, max_retries=0, timeout=30)),
    ]
    for name, sdk, client in clients:
        create = client.chat.completions.create
        check(
            f"{name}: chat.completions.create(model={TASK!r})",
            lambda: check_completion(create(model=TASK, messages=MESSAGES)),
        )
        if name == "openai":
            # OpenAI's way to get usage in a stream: a last chunk with `choices: []`.
            stream_args = {"stream_options": {"include_usage": True}}
            final_usage = lambda chunks: next((c.usage for c in reversed(chunks) if c.usage), None)
        else:
            # Groq's own: `x_groq.usage` on the final chunk, no option needed.
            stream_args = {}
            final_usage = lambda chunks: next(
                (c.x_groq.usage for c in reversed(chunks) if c.x_groq and c.x_groq.usage), None
            )
        check(
            f"{name}: chat.completions.create(model={TASK!r}, stream=True)",
            lambda: check_clean_stream(
                create(model=TASK, messages=MESSAGES, stream=True, **stream_args), final_usage
            ),
        )
        check(
            f"{name}: tools through a model without tool calling",
            lambda: check_tool_call(create(model=TOOLS_TASK, messages=MESSAGES, tools=TOOLS)),
        )
        if name == "openai":
            check(
                "openai: chat.completions.parse(response_format=Answer) through a model without json_schema",
                lambda: check_parsed(
                    client.chat.completions.parse(model=SCHEMA_TASK, messages=MESSAGES, response_format=Answer)
                ),
            )
        check(f"{name}: models.list()", lambda: check_models(client.models))
        check(
            f"{name}: model={UNKNOWN_TASK!r} raises NotFoundError",
            lambda: check_not_found(sdk, lambda: create(model=UNKNOWN_TASK, messages=MESSAGES)),
        )
        check(
            f"{name}: stream dropped mid-way raises APIError",
            lambda: check_broken_stream(
                sdk, create(model=DROP_TASK, messages=MESSAGES, stream=True), BROKEN_STREAM_CODES
            ),
        )
        check(
            f"{name}: stream with a mid-way error event raises APIError",
            lambda: check_broken_stream(
                sdk, create(model=ERROR_TASK, messages=MESSAGES, stream=True), {"tool_use_failed"}
            ),
        )
    print("all SDK checks passed", flush=True)


if __name__ == "__main__":
    main()
