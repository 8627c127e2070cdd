#!/usr/bin/env python3
"""A canned, fast Groq-shaped upstream on 127.0.0.1 for `benches/bench.py`.

`POST /openai/v1/chat/completions` answers at once, without sleeping or parsing the JSON:
- a model id starting `gone-`: Groq's 404 `model_not_found` body;
- a body with `"stream": true`: a Groq-shaped SSE stream (role chunk, 3 content chunks, final
  chunk with `x_groq.usage`, `data: [DONE]`), each event one HTTP chunk, all in one write;
  for a model id starting `long-`, 100 content chunks written one by one, 1 ms apart, as a
  model generating tokens would (so the Worker gets each as a separate chunk); `longN-` (say
  `long1000-a`), N content chunks the same way;
- otherwise: a Groq-shaped `chat.completion`.
`GET /_stats` returns how many chat calls each model got and how many connections were opened,
so the bench can check that the router skips a model it learned is gone, and see whether workerd
reuses its upstream connections.

HTTP/1.1 with keep-alive, `Content-Length` or chunked request bodies of any size, as many
concurrent connections as the OS allows. Python stdlib only (an `asyncio.Protocol`, which costs
less per request than asyncio streams).

Run: `python3 benches/upstream.py --port 0` prints `READY <port>` once it listens.
"""

import argparse
import asyncio
import json
import re
import signal
import sys
import time

CHAT_PATHS = (b"/openai/v1/chat/completions", b"/v1/chat/completions")
MODEL_RE = re.compile(rb'"model"\s*:\s*"([^"\\]{0,256})"')
STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
# Groq sends these on every answer, errors too.
RATE_HEADERS = (
    b"x-ratelimit-limit-requests: 14400\r\n"
    b"x-ratelimit-limit-tokens: 6000\r\n"
    b"x-ratelimit-remaining-requests: 14399\r\n"
    b"x-ratelimit-remaining-tokens: 5940\r\n"
    b"x-ratelimit-reset-requests: 6s\r\n"
    b"x-ratelimit-reset-tokens: 600ms\r\n"
)
REASONS = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found", 405: b"Method Not Allowed"}
MAX_HEAD = 64 * 1024

calls_by_model: dict = {}
counter = 0
connections = 0


def find_model(body: bytes) -> str:
    # The first `"model"` key; callers put it first, so this rarely scans far.
    at = body.find(b'"model"')
    if at < 0:
        return ""
    m = MODEL_RE.match(body, at)
    return m.group(1).decode("utf-8", "replace") if m else ""


def wants_stream(body: bytes) -> bool:
    at = body.find(b'"stream"')
    while at >= 0:
        if STREAM_RE.match(body, at):
            return True
        at = body.find(b'"stream"', at + 1)
    return False


def completion(model: str, n: int) -> bytes:
    return json.dumps(
        {
            "id": f"chatcmpl-bench-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi! How can I help you today?"},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "queue_time": 0.0121,
                "prompt_tokens": 44,
                "prompt_time": 0.0021,
                "completion_tokens": 10,
                "completion_time": 0.0083,
                "total_tokens": 54,
                "total_time": 0.0104,
            },
            "system_fingerprint": "fp_bench",
            "x_groq": {"id": f"req_bench_{n}"},
            "service_tier": "on_demand",
        },
        separators=(",", ":"),
    ).encode()


LONG_EVENTS = 100
LONG_GAP_S = 0.001
# `long<N>-`: N content chunks (the stream bench's 1,000-chunk answers); bounded, so a typo in a
# model id cannot make the upstream write for hours.
LONG_RE = re.compile(r"long(\d{1,5})?-")


def stream_events(model: str, n: int, words=("Hi!", " How can I", " help?")) -> list:
    created = int(time.time())
    base = {"id": f"chatcmpl-bench-{n}", "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_bench"}

    def event(choice: dict, **extra) -> bytes:
        chunk = dict(base, choices=[dict({"index": 0, "logprobs": None, "finish_reason": None}, **choice)], **extra)
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    events = [event({"delta": {"role": "assistant", "content": ""}}, x_groq={"id": f"req_bench_{n}"})]
    for word in words:
        events.append(event({"delta": {"content": word}}))
    usage = {"queue_time": 0.0121, "prompt_tokens": 44, "prompt_time": 0.0021, "completion_tokens": 5,
             "completion_time": 0.004, "total_tokens": 49, "total_time": 0.0061}
    events.append(event({"delta": {}, "finish_reason": "stop"}, x_groq={"id": f"req_bench_{n}", "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return events


def gone_body(model: str) -> bytes:
    return json.dumps(
        {
            "error": {
                "message": f"The model `{model}` does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "code": "model_not_found",
            }
        },
        separators=(",", ":"),
    ).encode()


def response(status: int, content_type: bytes, body: bytes, close: bool) -> bytes:
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%sx-request-id: req_bench\r\n%s\r\n"
        % (status, REASONS.get(status, b"Status"), content_type, len(body), RATE_HEADERS,
           b"connection: close\r\n" if close else b"")
    )
    return head + body


def stream_response(events: list, close: bool) -> bytes:
    return b"".join(stream_parts(events, close))


def stream_parts(events: list, close: bool) -> list:
    """The head, then each event as one HTTP chunk, then the last chunk."""
    parts = [
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n%sx-request-id: req_bench\r\n%s\r\n"
        % (RATE_HEADERS, b"connection: close\r\n" if close else b"")
    ]
    for e in events:
        parts.append(b"%x\r\n%s\r\n" % (len(e), e))
    parts.append(b"0\r\n\r\n")
    return parts


def answer(method: bytes, path: bytes, body: bytes, close: bool, api_key: bytes, auth: bytes) -> bytes:
    global counter
    path = path.split(b"?", 1)[0]
    if path == b"/_stats" and method == b"GET":
        stats = {"calls": calls_by_model, "connections": connections}
        return response(200, b"application/json", json.dumps(stats).encode(), close)
    if path not in CHAT_PATHS:
        return response(404, b"application/json", b'{"error":{"message":"Unknown request URL","type":"invalid_request_error","code":"unknown_url"}}', close)
    if method != b"POST":
        return response(405, b"application/json", b'{"error":{"message":"method not allowed"}}', close)
    if api_key and auth != b"Bearer " + api_key:
        return response(401, b"application/json", b'{"error":{"message":"Invalid API Key","type":"invalid_request_error","code":"invalid_api_key"}}', close)
    model = find_model(body)
    calls_by_model[model] = calls_by_model.get(model, 0) + 1
    counter += 1
    if model.startswith("gone-"):
        return response(404, b"application/json", gone_body(model), close)
    paced = LONG_RE.match(model)
    if wants_stream(body) and paced:
        # A list: written part by part, LONG_GAP_S apart (see `Http11.write_paced`).
        events = int(paced.group(1) or LONG_EVENTS)
        return stream_parts(stream_events(model, counter, words=[" tick"] * events), close)
    if wants_stream(body):
        return stream_response(stream_events(model, counter), close)
    return response(200, b"application/json", completion(model, counter), close)


class Http11(asyncio.Protocol):
    def __init__(self, api_key: bytes):
        self.api_key = api_key
        self.buf = bytearray()
        self.head = None  # (method, path, headers) once the head is read
        self.transport = None

    def connection_made(self, transport):
        global connections
        connections += 1
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        while self.transport is not None and not self.transport.is_closing():
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEAD:
                        self.transport.close()
                    return
                lines = bytes(self.buf[:end]).split(b"\r\n")
                del self.buf[: end + 4]
                try:
                    method, path, _version = lines[0].split(b" ", 2)
                except ValueError:
                    self.transport.close()
                    return
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                self.head = (method, path, headers)
            method, path, headers = self.head
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                body = self.take_chunked()
            else:
                body = self.take(int(headers.get(b"content-length", b"0") or 0))
            if body is None:
                return
            self.head = None
            close = headers.get(b"connection", b"").lower() == b"close"
            reply = answer(method, path, body, close, self.api_key, headers.get(b"authorization", b""))
            if isinstance(reply, list):
                self.write_paced(reply, close)
                continue
            self.transport.write(reply)
            if close:
                self.transport.close()

    def write_paced(self, parts: list, close: bool) -> None:
        """The head and first event now, each further part LONG_GAP_S after the one before."""
        transport, loop = self.transport, asyncio.get_running_loop()
        transport.write(parts[0] + parts[1])

        def write(i: int) -> None:
            if transport.is_closing():
                return
            transport.write(parts[i])
            if i + 1 < len(parts):
                loop.call_later(LONG_GAP_S, write, i + 1)
            elif close:
                transport.close()

        loop.call_later(LONG_GAP_S, write, 2)

    def take(self, length: int):
        if len(self.buf) < length:
            return None
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return body

    def take_chunked(self):
        # Parses the whole chunked body from the start each time data arrives: simple, and
        # callers that matter here (workerd's fetch) send a Content-Length anyway.
        pos, parts = 0, []
        while True:
            eol = self.buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(self.buf[pos:eol]).split(b";")[0], 16)
            start = eol + 2
            if size == 0:
                end = self.buf.find(b"\r\n\r\n", eol)
                if end < 0 and self.buf[start:start + 2] != b"\r\n":
                    return None
                cut = start + 2 if self.buf[start:start + 2] == b"\r\n" else end + 4
                del self.buf[:cut]
                return b"".join(parts)
            if len(self.buf) < start + size + 2:
                return None
            parts.append(bytes(self.buf[start:start + size]))
            pos = start + size + 2


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--api-key", default="", help="when set, other `Authorization` values get 401")
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Http11(args.api_key.encode()), args.host, args.port,
                                      backlog=4096, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
