#!/usr/bin/env python3
"""The router against the thinnest pass-through Worker, both under `wrangler dev` (workerd), both
calling the canned upstream `benches/upstream.py` on 127.0.0.1.

Run from anywhere (the whole run takes about 12 minutes on 2 cores; `--quick` about 4):

    python3 benches/bench.py            # or: python3 benches/bench.py --quick

It builds the router (`sh scripts/build.sh`) and the pass-through fixture (`benches/passthrough`),
reads both bundles' sizes from `wrangler deploy --dry-run`, starts the upstream and one
`wrangler dev` per Worker on free 127.0.0.1 ports, checks every scenario answers as it should,
warms up, then runs `wrk -t1 -c16 --latency` over every scenario in turn, round after round, so
router scenarios are interleaved with their baselines; the order is shuffled every round (with a
fixed seed), so no scenario always follows the same one. It also times N sequential requests
for five scenarios (pass-through, task and chat routes, small and streamed) on one keep-alive connection (first body byte and whole answer, unloaded), and reads
from /proc the CPU time per request of the Worker's own workerd, of wrangler's proxy workerd and
node process, of the upstream and of wrk. Before the loaded rounds, with one request at a time,
it measures each Worker's own CPU per request from its threads' schedstat (blocks of sequential
requests, interleaved): the Worker's cost free of the contention for the cores that the loaded
runs share. The report gives the router ÷ baseline ratios twice: of the medians over rounds,
and as the median of each round's ratio (a router run against its baseline's run in the same
round, which a drift of the machine between rounds moves together). The Markdown report goes
to stdout and to `benches/results.md`; progress goes to stderr.

Every round runs on freshly started dev servers (`--same-servers` keeps one set): two workerd
processes running identical code differ by a few percent in throughput, so one set of processes
would bias every round the same way.

`wrangler dev` always attaches its DevTools inspector, which under load costs more CPU than the
Worker itself (four inspector events per outbound fetch and one per `console.log`, each forwarded
to node and written to wrangler's debug log). `--no-inspector` starts the same dev server through
wrangler's API without it (`benches/dev_server.mjs`); `--direct` loads the Worker's own workerd
socket, skipping wrangler's ProxyWorker. The core's own CPU cost is `cargo bench --bench core`.

The router runs as configured in `wrangler.toml` (`LOG_LEVEL=info`: one JSON line per request,
with its tokens and cost), against a pass-through that also writes one JSON line per request:
the floor for any proxy that can be audited. Besides, on small requests: the router at
`LOG_LEVEL=warn` (no line for a request that succeeds) and without the `CLIENT_RATE_LIMITER`
binding. Under `wrangler dev` every `console` line costs wrangler's node process more CPU than the
whole routing does (it prints the line and appends it to its debug log file), a cost production
does not have; the variants show what the line and the limiter each cost.

`--compare DIR` also runs the router of another checkout (say `git worktree add /tmp/prev HEAD~1`,
with `node_modules` linked in) on the small and 1 MiB chat scenarios, so a change is measured
against the code before it in the same run.

`--profile DIR` runs each scenario once under V8's sampling profiler instead (through the
inspector, on a build that keeps wasm function names) and writes `.cpuprofile` files plus a
summary of self and inclusive time per function (`benches/profile_worker.mjs`).

`--streams` measures long streams instead (a few minutes):

    python3 benches/bench.py --streams [--profile DIR] [--no-inspector] [--stream-experiments]

1,000 SSE chunks 1 ms apart from the upstream (`long1000-a`, a 1,000-token answer), one stream at
a time, through `benches/streams/native.mjs` (a JavaScript Worker returning `upstream.body`
untouched: the runtime pipes it natively), `benches/streams/rwloop.mjs` (a JavaScript `read()` /
`write()` loop) and the router (each `STREAM_RELAY` mode, or `--relays`); each writes one log line
per request, as the router does. Blocks of sequential streams per Worker (`--stream-blocks`,
`--stream-requests`), Workers interleaved in an order shuffled every block, fresh dev servers
every block; every answer is checked whole. It reports each Worker's own workerd CPU per HTTP
chunk (its threads' schedstat) and, per block, its ratio to the native pipe's in the same block.
With `--profile DIR`, each Worker's streams run under the V8 profiler instead, and the report
gives JavaScript, wasm and runtime-call self time per chunk. `--stream-experiments` adds the
JavaScript relays tried on the way (`benches/streams/experiments`); `--compare DIR` adds the
router of another checkout in each mode.

Every process it starts runs in its own process group and is stopped (TERM, then KILL) on exit,
on failure and on Ctrl-C. Only 127.0.0.1 is used. Needs Python 3.11+ (stdlib only), node/npm,
the Rust toolchain and `wrk` (installed with apt-get when missing and running as root).
"""

import argparse
import collections
import datetime
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Round r runs the scenarios in the order `random.Random(ROUND_ORDER_SEED + r)` shuffles them to.
# Chosen, not drawn: with it, in the default 5 rounds of all scenarios, neither `tasks-small` nor `chat-small` runs
# right after `pt-small` (`lean-small` does once), because the run right after the small
# pass-through measured a few percent slow, for a reason not found (see the round loop).
ROUND_ORDER_SEED = 6
BENCHES = ROOT / "benches"
FIXTURE = BENCHES / "passthrough"
WRANGLER = ROOT / "node_modules" / ".bin" / "wrangler"
STARTUP_TIMEOUT_S = 120
TERM_GRACE_S = 3.0

PROVIDER_KEY = "gsk_bench_provider_key"
CLIENT_KEY = "ck_bench_client_key"
MODEL_REGISTRY = '{"fast":["ok-a"],"gonefirst":["gone-a","ok-a"],"long":["long-a"],"long1k":["long1000-a"]}'
MAX_REQUEST_BYTES = 4 << 20
# The router's `MAX_INFLIGHT_BYTES` (8 MiB by default) raised out of wrk's way, as its rate limit
# is: 16 connections of 1 MiB bodies would otherwise be half shed with 503, and the bench measures
# what an answered request costs.
MAX_INFLIGHT_BYTES = 64 << 20
# `router-budget`'s `BUDGETS`: a client scope and the global one, with limits no run reaches.
BENCH_BUDGETS = '{"client":{"usd_per_day":1000000,"tokens_per_day":1000000000000},"global":{"usd_per_month":1000000}}'
BIG_BODY_BYTES = 1 << 20
# Content chunks in the upstream's `long-` streams (`LONG_EVENTS` in benches/upstream.py); with
# the role, final and `[DONE]` events, each stream is LONG_CHUNKS + 3 HTTP chunks.
LONG_CHUNKS = 100
# The rate limit of the repository's `wrangler.toml`: raised out of wrk's way for the routers
# that keep the limiter (RAISED_LIMIT), and the whole table, which the "lean" router goes without.
RATE_LIMIT_LINE = "simple = { limit = 600, period = 60 }"
RAISED_LIMIT = [(RATE_LIMIT_LINE, RATE_LIMIT_LINE.replace("600", "1000000000"))]
RATE_LIMIT_TABLE = f"""[[ratelimits]]
name = "CLIENT_RATE_LIMITER"
namespace_id = "1001"
{RATE_LIMIT_LINE}
"""

# Like tests/e2e_support/worker.rs: no metrics, no banner, no `Request.cf` fetch from the internet,
# no `.env` / process environment leaking into bindings.
WRANGLER_ENV = {
    "WRANGLER_SEND_METRICS": "false",
    "CI": "true",
    "WRANGLER_HIDE_BANNER": "true",
    "CLOUDFLARE_CF_FETCH_ENABLED": "false",
    "CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV": "false",
    "CLOUDFLARE_INCLUDE_PROCESS_ENV": "false",
    # wrangler >= 4.118 records every request and console line for its local dashboard by
    # default: work production does not do, which would weigh on every Worker measured.
    "X_LOCAL_OBSERVABILITY": "false",
    "FORCE_COLOR": "0",
    "NO_COLOR": "1",
}

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
local cache_control = os.getenv("BENCH_CACHE_CONTROL")
if cache_control ~= nil and cache_control ~= "" then
  wrk.headers["Cache-Control"] = cache_control
end
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes


class Processes:
    """Every child, each in its own process group, stopped together."""

    def __init__(self) -> None:
        self.children: list = []

    def start(self, args, **kwargs) -> subprocess.Popen:
        child = subprocess.Popen(args, process_group=0, stdin=subprocess.DEVNULL, **kwargs)
        self.children.append(child)
        return child

    @staticmethod
    def group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def stop(self, child: subprocess.Popen) -> None:
        pgid = child.pid  # process_group=0: the child leads its own group
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + TERM_GRACE_S
            while time.monotonic() < deadline:
                child.poll()
                if not self.group_alive(pgid):
                    break
                time.sleep(0.05)
            else:
                continue
            break
        try:
            child.wait(timeout=TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            self.stop(child)


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_checked(args, cwd: Path, env=None, what: str = "") -> str:
    """Runs a build step to its end in a process group of its own, so an interrupt stops cargo,
    wasm-bindgen and wasm-opt under it too, not only the shell that started them."""
    log(f"$ {' '.join(shlex.quote(str(a)) for a in args)}  (in {cwd})")
    procs = Processes()
    child = procs.start(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = child.communicate()
    finally:
        procs.stop_all()
    if child.returncode != 0:
        sys.stderr.write(out)
        raise SystemExit(f"bench: {what or args[0]} failed with exit code {child.returncode}")
    return out


def free_port(taken: set) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


# ---------------------------------------------------------------------------------------------
# Tools, builds, bundle sizes


def ensure_tools() -> None:
    if shutil.which("wrk") is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise SystemExit("bench: `wrk` is missing; install it (Debian: apt-get install -y wrk)")
        log("bench: installing wrk with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run_checked(["apt-get", "update", "-qq"], ROOT, env, "apt-get update")
        run_checked(["apt-get", "install", "-y", "-qq", "wrk"], ROOT, env, "apt-get install wrk")
    if not WRANGLER.exists():
        run_checked(["npm", "ci", "--no-audit", "--no-fund"], ROOT, None, "npm ci")


def wrangler_env(prebuilt: bool) -> dict:
    # `node_modules/.bin` first, as npm scripts have it: where the machine's Node is older than
    # wrangler needs, scripts/node.sh links a Node 22 there.
    path = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    env = dict(os.environ, **WRANGLER_ENV, PATH=path)
    env.pop("TASK_ROUTER_PREBUILT", None)
    if prebuilt:
        env["TASK_ROUTER_PREBUILT"] = "1"
    return env


def keep_names_env(env: dict) -> dict:
    """worker-build keeps the wasm name section (`wasm-opt --debuginfo`) unless the release profile
    strips it: unstripped, a V8 profile names Rust functions."""
    return dict(env, CARGO_PROFILE_RELEASE_STRIP="false")


def dry_run_size(cwd: Path, outdir: Path, prebuilt: bool, keep_names: bool = False) -> tuple:
    """Runs `wrangler deploy --dry-run` (which runs the `[build] command`) and reads its
    `Total Upload: X KiB / gzip: Y KiB` line."""
    env = dict(wrangler_env(prebuilt), WRANGLER_LOG_PATH=str(outdir.parent / "dry-run-wrangler-logs"))
    if keep_names:
        env = keep_names_env(env)
    out = run_checked([str(WRANGLER), "deploy", "--dry-run", "--outdir", str(outdir)], cwd, env,
                      f"wrangler deploy --dry-run in {cwd}")
    m = re.search(r"Total Upload:\s*([\d.]+ \w+)\s*/\s*gzip:\s*([\d.]+ \w+)", out)
    if not m:
        raise SystemExit(f"bench: no `Total Upload` line in the dry run of {cwd}:\n{out}")
    return m.group(1), m.group(2)


def build_all(tmp: Path, skip_build: bool, keep_names: bool = False) -> dict:
    if not skip_build:
        # `TASK_ROUTER_PREBUILT` would turn the build into a no-op and bench a stale bundle.
        env = wrangler_env(prebuilt=False)
        if keep_names:
            env = keep_names_env(env)
        run_checked(["sh", "scripts/build.sh"], ROOT, env, "scripts/build.sh")
    sizes = {"router": dry_run_size(ROOT, tmp / "dry-router", prebuilt=True)}
    # The fixture's `[build] command` builds it (after build.sh installed the tools it reuses).
    sizes["passthrough"] = dry_run_size(FIXTURE, tmp / "dry-passthrough", prebuilt=skip_build,
                                        keep_names=keep_names)
    return sizes


# ---------------------------------------------------------------------------------------------
# Workers under `wrangler dev`


def dev_config(source: Path, tmp: Path, name: str, replacements: list) -> Path:
    """A copy of `source` for `wrangler dev` in `tmp`: absolute `main`, no `[build]` (the bench
    has built already), plus `replacements`; `.wrangler/` state lands in `tmp`, not the tree."""
    text = source.read_text()
    main = re.search(r'^main = "([^"]+)"$', text, re.M)
    if not main:
        raise SystemExit(f"bench: no `main = \"...\"` line in {source}")
    text = text.replace(main.group(0), f'main = "{(source.parent / main.group(1)).resolve()}"')
    text, n = re.subn(r"(?ms)^\[build\]\n.*?(?=^\[\[?[\w.]+\]\]?[ \t]*$|\Z)", "", text)
    if n != 1:
        raise SystemExit(f"bench: expected one `[build]` table in {source}")
    for old, new in replacements:
        if old not in text:
            raise SystemExit(f"bench: {source} has no {old!r} to replace")
        text = text.replace(old, new)
    folder = tmp / name
    folder.mkdir()
    path = folder / "wrangler.toml"
    path.write_text(text)
    return path


@dataclass
class Worker:
    name: str
    port: int  # wrangler dev's public port (its ProxyWorker)
    child: subprocess.Popen
    log_path: Path
    debug_log_dir: Path  # WRANGLER_LOG_PATH: wrangler's debug log, kept out of ~/.config
    target_port: int = 0  # the port the bench loads: `port`, or with --direct the Worker's own socket
    inspector_port: int = 0  # wrangler dev's DevTools inspector (0: started without one)

    def logs_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_worker(procs: Processes, name: str, config: Path, vars_: dict, ports: set, tmp: Path,
                 inspector: bool = True) -> Worker:
    """`wrangler dev` for `config`; with `inspector=False`, the same dev server started through
    wrangler's API without its DevTools inspector (`benches/dev_server.mjs`)."""
    port, inspector_port = free_port(ports), free_port(ports)
    if inspector:
        args = [str(WRANGLER), "dev", "--config", str(config), "--ip", "127.0.0.1", "--port", str(port),
                "--inspector-port", str(inspector_port), "--log-level", "log",
                "--show-interactive-dev-session=false"]
    else:
        args = ["node", str(BENCHES / "dev_server.mjs"), "--config", str(config), "--port", str(port)]
    for key, value in vars_.items():
        args += ["--var", f"{key}:{value}"]
    log_path = tmp / f"{name}.log"
    debug_log_dir = tmp / f"{name}-wrangler-logs"
    # Emptied first: `--direct` reads this instance's port from it, not an earlier round's.
    shutil.rmtree(debug_log_dir, ignore_errors=True)
    env = dict(wrangler_env(prebuilt=True), WRANGLER_LOG_PATH=str(debug_log_dir))
    # Appended: with fresh servers every round, each round's output follows the last.
    out = open(log_path, "ab")
    child = procs.start(args, cwd=config.parent, env=env, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return Worker(name, port, child, log_path, debug_log_dir, target_port=port,
                  inspector_port=inspector_port if inspector else 0)


def start_all(procs: Processes, specs: list, ports: set, tmp: Path, args) -> dict:
    """Starts a dev server per spec, waits until each answers, and picks the port to load."""
    workers = {}
    for name, config, vars_, _ in specs:
        workers[name] = start_worker(procs, name, config, vars_, ports, tmp, inspector=not args.no_inspector)
    for name, _, _, ready_path in specs:
        wait_ready(workers[name], ready_path)
    if args.direct:
        for w in workers.values():
            w.target_port = user_worker_port(w)
    return workers


def stop_all(procs: Processes, workers: dict) -> None:
    for w in workers.values():
        procs.stop(w.child)


def teach_gone(workers: dict, gone: "Scenario") -> None:
    """The first gone-first request teaches the router that `gone-a` is gone."""
    first = send(workers[gone.worker].target_port, gone)
    if first.status != 200 or "gone-a=model_gone(404)" not in first.headers.get("x-attempts", ""):
        raise SystemExit(f"bench: the first gone-first request did not meet `gone-a`: "
                         f"{first.status} {first.headers.get('x-attempts')!r}")


def user_worker_port(worker: Worker) -> int:
    """The Worker's own workerd socket, behind wrangler's ProxyWorker: wrangler's debug log
    records it as `userWorkerUrl` once the Worker is loaded."""
    deadline = time.monotonic() + 30
    pattern = re.compile(r'"userWorkerUrl":\{"protocol":"http:","hostname":"127\.0\.0\.1","port":"(\d+)"')
    while time.monotonic() < deadline:
        found = []
        for path in sorted(worker.debug_log_dir.glob("*.log")):
            found += pattern.findall(path.read_text(errors="replace"))
        if found:
            return int(found[-1])
        time.sleep(0.2)
    raise SystemExit(f"bench: no `userWorkerUrl` in wrangler's debug log for {worker.name} (--direct)")


def wait_ready(worker: Worker, path: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if worker.child.poll() is not None:
            raise SystemExit(f"bench: wrangler dev ({worker.name}) exited with {worker.child.returncode}:\n"
                             f"{worker.logs_tail()}")
        try:
            with HttpConnection(worker.port, timeout=10) as conn:
                conn.request("GET", path, {}, b"")
            return
        except (OSError, HttpError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {worker.name} did not answer on port {worker.port} within "
                             f"{STARTUP_TIMEOUT_S} s:\n{worker.logs_tail()}")
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# A small HTTP/1.1 client that reports when the first body byte arrived


class HttpError(Exception):
    pass


@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes
    first_byte_s: float  # request sent → first body byte
    total_s: float  # request sent → whole answer
    half_s: float = 0.0  # request sent → half the bytes received (head included)


class HttpConnection:
    def __init__(self, port: int, timeout: float = 30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = port
        self.buf = b""
        self.arrivals: list = []  # (time, bytes received so far) of each `recv`
        self.received = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()

    def _recv(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise HttpError("connection closed")
        self.buf += data
        self.received += len(data)
        self.arrivals.append((time.perf_counter(), self.received))

    def request(self, method: str, path: str, headers: dict, body: bytes) -> Answer:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
        for k, v in headers.items():
            head += f"{k}: {v}\r\n"
        if body or method == "POST":
            head += f"Content-Length: {len(body)}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + body)
        sent = time.perf_counter()
        self.arrivals, self.received = [], len(self.buf)
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        end = self.buf.index(b"\r\n\r\n")
        lines = self.buf[:end].decode("latin-1").split("\r\n")
        self.buf = self.buf[end + 4:]
        status = int(lines[0].split(" ", 2)[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        chunked = "chunked" in hdrs.get("transfer-encoding", "").lower()
        length = None if chunked else int(hdrs.get("content-length", "0"))
        if method == "HEAD" or length == 0:
            now = time.perf_counter()
            return Answer(status, hdrs, b"", now - sent, now - sent)
        while not self.buf:
            self._recv()
        first = time.perf_counter()
        if chunked:
            parts = []
            while True:
                while b"\r\n" not in self.buf:
                    self._recv()
                eol = self.buf.index(b"\r\n")
                size = int(self.buf[:eol].split(b";")[0], 16)
                while len(self.buf) < eol + 2 + size + 2:
                    self._recv()
                parts.append(self.buf[eol + 2:eol + 2 + size])
                self.buf = self.buf[eol + 2 + size + 2:]
                if size == 0:
                    break
            data = b"".join(parts)
        else:
            while len(self.buf) < length:
                self._recv()
            data, self.buf = self.buf[:length], self.buf[length:]
        half = next((at for at, n in self.arrivals if n >= self.received / 2), sent)
        return Answer(status, hdrs, data, first - sent, time.perf_counter() - sent, half - sent)


# ---------------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Scenario:
    key: str
    label: str
    worker: str  # "passthrough" | "router"
    path: str
    body_file: Path
    auth: str
    stream: bool = False
    expect_model_header: bool = False
    expect_gone_skipped: bool = False
    model: str = "ok-a"  # the model that answers (checked against `x-model-used`)
    cache_control: str = ""  # the request's `Cache-Control` (the cache scenarios)
    expect_cache: str = ""  # the `x-cache-status` it must answer with
    runs: list = field(default_factory=list)

    def headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Authorization": self.auth}
        if self.cache_control:
            headers["Cache-Control"] = self.cache_control
        return headers


def write_bodies(tmp: Path) -> dict:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hi in one word."},
    ]

    def body(model, stream=False, content_bytes=0) -> bytes:
        msgs = messages
        if content_bytes:
            msgs = [{"role": "user", "content": ""}]
        # `model` first, as a caller would write it; the upstream finds it without parsing.
        fields = ([f'"model":"{model}"'] if model else []) + [
            '"messages":' + compact(msgs), '"max_completion_tokens":64', '"temperature":0.2']
        if stream:
            fields.append('"stream":true')
        text = "{" + ",".join(fields) + "}"
        if content_bytes:
            pad = content_bytes - len(text)
            lorem = "The quick brown fox jumps over the lazy dog. " * (pad // 45 + 1)
            text = text.replace('"content":""', '"content":"' + lorem[:pad] + '"', 1)
        return text.encode()

    bodies = {
        # "ok-a" and "fast" have the same length, so pass-through and router bodies match in size.
        "pt-small": body("ok-a"),
        "tasks-small": body(None),
        "chat-small": body("fast"),
        "pt-stream": body("ok-a", stream=True),
        "chat-stream": body("fast", stream=True),
        "pt-long": body("long-a", stream=True),
        "chat-long": body("long", stream=True),
        "pt-big": body("ok-a", content_bytes=BIG_BODY_BYTES),
        "chat-big": body("fast", content_bytes=BIG_BODY_BYTES),
    }
    assert len(bodies["pt-big"]) == len(bodies["chat-big"]) == BIG_BODY_BYTES
    paths = {}
    for name, data in bodies.items():
        paths[name] = tmp / f"{name}.json"
        paths[name].write_bytes(data)
    return paths


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def scenarios(bodies: dict, compare: bool = False) -> list:
    pt, rt = f"Bearer {PROVIDER_KEY}", f"Bearer {CLIENT_KEY}"
    earlier = [
        Scenario("prev-small", "earlier router (`--compare`) `/v1/chat/completions`, small", "router-prev",
                 "/v1/chat/completions", bodies["chat-small"], rt, expect_model_header=True),
        Scenario("prev-big", "earlier router (`--compare`) `/v1/chat/completions`, 1 MiB body", "router-prev",
                 "/v1/chat/completions", bodies["chat-big"], rt, expect_model_header=True),
    ] if compare else []
    return [
        Scenario("pt-small", "pass-through, small", "passthrough", "/", bodies["pt-small"], pt),
        Scenario("tasks-small", "router `/v1/tasks/fast`, small", "router", "/v1/tasks/fast",
                 bodies["tasks-small"], rt, expect_model_header=True),
        Scenario("chat-small", "router `/v1/chat/completions`, small", "router", "/v1/chat/completions",
                 bodies["chat-small"], rt, expect_model_header=True),
        Scenario("warn-small", "router `/v1/chat/completions`, small, `LOG_LEVEL=warn`", "router-warn",
                 "/v1/chat/completions", bodies["chat-small"], rt, expect_model_header=True),
        Scenario("lean-small", "router `/v1/chat/completions`, small, no rate limiter",
                 "router-lean", "/v1/chat/completions", bodies["chat-small"], rt, expect_model_header=True),
        Scenario("budget-small", "router `/v1/chat/completions`, small, `BUDGETS` (client + global)",
                 "router-budget", "/v1/chat/completions", bodies["chat-small"], rt, expect_model_header=True),
        Scenario("hit-small", "router `/v1/chat/completions`, small, `CACHE` hit", "router-cache",
                 "/v1/chat/completions", bodies["chat-small"], rt, expect_model_header=True, expect_cache="hit"),
        Scenario("miss-small", "router `/v1/chat/completions`, small, `CACHE` miss (`no-cache`: fetched, stored)",
                 "router-cache", "/v1/chat/completions", bodies["chat-small"], rt, expect_model_header=True,
                 cache_control="no-cache", expect_cache="miss"),
        Scenario("gone-small", "router `/v1/tasks/gonefirst` (first model gone, learned)", "router",
                 "/v1/tasks/gonefirst", bodies["tasks-small"], rt, expect_model_header=True,
                 expect_gone_skipped=True),
        Scenario("pt-stream", "pass-through, stream", "passthrough", "/", bodies["pt-stream"], pt, stream=True),
        Scenario("chat-stream", "router `/v1/chat/completions`, stream", "router", "/v1/chat/completions",
                 bodies["chat-stream"], rt, stream=True, expect_model_header=True),
        Scenario("pt-long", f"pass-through, stream of {LONG_CHUNKS} chunks 1 ms apart", "passthrough", "/",
                 bodies["pt-long"], pt, stream=True),
        Scenario("chat-long", f"router `/v1/chat/completions`, stream of {LONG_CHUNKS} chunks 1 ms apart",
                 "router", "/v1/chat/completions", bodies["chat-long"], rt, stream=True,
                 expect_model_header=True, model="long-a"),
        Scenario("pt-big", "pass-through, 1 MiB body", "passthrough", "/", bodies["pt-big"], pt),
        Scenario("chat-big", "router `/v1/chat/completions`, 1 MiB body", "router", "/v1/chat/completions",
                 bodies["chat-big"], rt, expect_model_header=True),
    ] + earlier


# Scenarios whose unloaded Worker CPU per request is measured → their baseline (None: a baseline).
UNLOADED_CPU = {
    "pt-small": None, "tasks-small": "pt-small", "chat-small": "pt-small", "warn-small": "pt-small",
    "lean-small": "pt-small", "budget-small": "pt-small", "hit-small": "pt-small", "miss-small": "pt-small",
    "gone-small": "pt-small", "pt-stream": None, "chat-stream": "pt-stream",
    "pt-big": None, "chat-big": "pt-big", "prev-small": "pt-small", "prev-big": "pt-big",
}

# (router scenario, baseline scenario, what the issue asks of the ratio)
COMPARISONS = [
    ("tasks-small", "pt-small", "p50 ≤ 1.05×, req/s ≥ 0.95×"),
    ("chat-small", "pt-small", "p50 ≤ 1.05×, req/s ≥ 0.95×"),
    ("warn-small", "pt-small", "(no line for a success; the pass-through still writes one)"),
    ("lean-small", "pt-small", "(without the rate limiter)"),
    ("chat-small", "warn-small", "(what the request's log line costs)"),
    ("lean-small", "chat-small", "(what the rate limiter binding saves)"),
    ("budget-small", "chat-small", "(what budgets cost: two scopes, each reserved and settled)"),
    ("hit-small", "miss-small", "a hit costs less Worker CPU than a miss"),
    ("hit-small", "pt-small", "(a hit against the pass-through, which calls the upstream)"),
    ("miss-small", "chat-small", "(what a miss adds: the key's digest, the lookup, the store)"),
    ("chat-stream", "pt-stream", "first byte within 1 ms (see below)"),
    ("chat-long", "pt-long", "(report: Worker CPU per relayed chunk below)"),
    ("gone-small", "tasks-small", "p50 ≤ 1.05× the healthy path"),
    ("chat-big", "pt-big", "(report)"),
    ("chat-small", "prev-small", "(this build against the `--compare` one)"),
    ("chat-big", "prev-big", "(this build against the `--compare` one)"),
]


def check(s: Scenario, answer: Answer) -> None:
    problems = []
    if answer.status != 200:
        problems.append(f"status {answer.status}")
    if s.stream:
        if not answer.headers.get("content-type", "").startswith("text/event-stream"):
            problems.append(f"content-type {answer.headers.get('content-type')!r}")
        if not answer.body.endswith(b"data: [DONE]\n\n"):
            problems.append("stream does not end with `data: [DONE]`")
    elif b'"content"' not in answer.body:
        problems.append("no `content` in the answer")
    if s.expect_model_header and answer.headers.get("x-model-used") != s.model:
        problems.append(f"x-model-used {answer.headers.get('x-model-used')!r}")
    if s.expect_cache and answer.headers.get("x-cache-status") != s.expect_cache:
        problems.append(f"x-cache-status {answer.headers.get('x-cache-status')!r}")
    if s.expect_gone_skipped and "gone-a=skipped" not in answer.headers.get("x-attempts", ""):
        problems.append(f"x-attempts {answer.headers.get('x-attempts')!r} (gone-a not skipped)")
    if problems:
        raise SystemExit(f"bench: {s.key} answered wrongly: {'; '.join(problems)}\n"
                         f"{answer.body[:600]!r}")


def send(port: int, s: Scenario, conn: HttpConnection = None) -> Answer:
    headers = s.headers()
    body = s.body_file.read_bytes()
    if conn is not None:
        return conn.request("POST", s.path, headers, body)
    with HttpConnection(port) as c:
        return c.request("POST", s.path, headers, body)


def upstream_stats(port: int) -> dict:
    with HttpConnection(port) as c:
        return json.loads(c.request("GET", "/_stats", {}, b"").body)


# ---------------------------------------------------------------------------------------------
# CPU accounting from /proc


CLK_TCK = os.sysconf("SC_CLK_TCK")
_cmdlines: dict = {}


def cmdline(pid: str) -> str:
    if pid not in _cmdlines:
        try:
            _cmdlines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""
    return _cmdlines[pid]


def proc_stats():
    """(pid, command name, the fields after it) of every process, from /proc/PID/stat."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        yield entry, stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()


def is_proxy(worker: Worker, pid: str) -> bool:
    """Whether the workerd `pid` is wrangler's proxy (it listens on the public port)."""
    return f"entry=127.0.0.1:{worker.port} " in cmdline(pid) + " "


@dataclass
class Snapshot:
    at: float
    by_role: dict  # role → CPU seconds so far
    busy: float  # CPU seconds the whole machine spent not idle
    children: float  # CPU seconds of reaped children (wrk)


def snapshot(workers: dict, upstream_pid: int) -> Snapshot:
    """CPU used so far by each role: per Worker its own workerd, wrangler's proxy workerd (the
    one listening on the public port) and wrangler's node; the upstream; and the whole machine."""
    groups = {w.child.pid: w for w in workers.values()}
    by_role: dict = {}
    for entry, comm, rest in proc_stats():
        pgid, used = int(rest[2]), (int(rest[11]) + int(rest[12])) / CLK_TCK
        if pgid == upstream_pid:
            role = "upstream"
        elif pgid in groups:
            w = groups[pgid]
            if comm == "workerd":
                role = f"{w.name}:{'proxy' if is_proxy(w, entry) else 'worker'}"
            else:
                role = f"{w.name}:node"
        else:
            continue
        by_role[role] = by_role.get(role, 0.0) + used
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(x) for x in fields[:8]]
    busy = (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Snapshot(time.monotonic(), by_role, busy, r.ru_utime + r.ru_stime)


def ours(s: Snapshot) -> float:
    return sum(s.by_role.values())


def settle(workers: dict, upstream_pid: int, limit_s: float = 30.0) -> float:
    """Waits until wrangler has worked off what the last run queued (it keeps printing logs and
    forwarding inspector events for seconds after the load stops), so no run pays for the one
    before."""
    started = time.monotonic()
    before = snapshot(workers, upstream_pid)
    while time.monotonic() - started < limit_s:
        time.sleep(0.3)
        now = snapshot(workers, upstream_pid)
        if (ours(now) - ours(before)) / (now.at - before.at) < 0.05:
            break
        before = now
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# wrk


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * UNITS[m.group(2)]


@dataclass
class Run:
    p50_ms: float
    p99_ms: float
    rps: float
    requests: int
    errors: int
    cpu_us: dict  # "worker" / "proxy" / "node" (of the Worker loaded), "upstream", "wrk" → µs per request
    other_cores: float  # CPU the machine spent outside the bench's processes, in cores
    upstream_conns: float  # connections workerd opened to the upstream per request


def run_wrk(procs: Processes, s: Scenario, workers: dict, upstream_pid: int, upstream_port: int,
            tmp: Path, seconds: float, connections: int) -> Run:
    worker = workers[s.worker]
    opened_before = upstream_stats(upstream_port)["connections"]
    script = tmp / "post.lua"
    if not script.exists():
        script.write_text(WRK_SCRIPT)
    env = dict(os.environ, BENCH_BODY=str(s.body_file), BENCH_AUTH=s.auth, BENCH_CACHE_CONTROL=s.cache_control)
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency", "-s",
            str(script), f"http://127.0.0.1:{worker.target_port}{s.path}"]
    before = snapshot(workers, upstream_pid)
    child = procs.start(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = child.communicate()
    procs.children.remove(child)
    after = snapshot(workers, upstream_pid)
    opened = upstream_stats(upstream_port)["connections"] - opened_before - 1  # minus the stats call
    if child.returncode != 0:
        raise SystemExit(f"bench: wrk failed for {s.key}:\n{out}")
    try:
        p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
        p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
        rps = float(re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M).group(1))
        requests = int(re.search(r"^\s+(\d+) requests in", out, re.M).group(1))
    except (AttributeError, ValueError):
        raise SystemExit(f"bench: could not read wrk's output for {s.key}:\n{out}")
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors += sum(int(x) for x in m.groups()) if m else 0

    def used(role: str) -> float:
        return after.by_role.get(role, 0.0) - before.by_role.get(role, 0.0)

    per_req = 1e6 / max(requests, 1)
    cpu = {kind: used(f"{worker.name}:{kind}") * per_req for kind in ("worker", "proxy", "node")}
    cpu["upstream"] = used("upstream") * per_req
    cpu["wrk"] = (after.children - before.children) * per_req
    wall = after.at - before.at
    other = (after.busy - before.busy) - (ours(after) - ours(before)) - (after.children - before.children)
    return Run(p50, p99, rps, requests, errors, cpu, max(other, 0.0) / wall, max(opened, 0) / max(requests, 1))


def profile_scenarios(procs: Processes, measured: list, workers: dict, upstream_pid: int,
                      upstream_port: int, tmp: Path, args) -> None:
    """One wrk run per scenario with the V8 sampling profiler attached to its Worker
    (`benches/profile_worker.mjs`); the summaries go to DIR/profile.md and stdout."""
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    sections = [f"# CPU profiles, `wrangler dev` with its inspector, `wrk -c{args.connections} "
                f"-d{args.duration}s` per scenario", ""]
    for s in measured:
        worker = workers[s.worker]
        path = out / f"{s.key}.cpuprofile"
        profiler = procs.start(["node", str(BENCHES / "profile_worker.mjs"), "--inspector", str(worker.inspector_port),
                                "--out", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = profiler.stdout.readline().strip()
        if ready != "PROFILING":
            raise SystemExit(f"bench: the profiler did not start for {s.key}: {ready}{profiler.stdout.read()}")
        run = run_wrk(procs, s, workers, upstream_pid, upstream_port, tmp, args.duration, args.connections)
        profiler.send_signal(signal.SIGTERM)
        summary, _ = profiler.communicate(timeout=120)
        procs.children.remove(profiler)
        log(f"bench: profiled {s.key}: {run.rps:.0f} req/s, {run.requests} requests → {path}")
        sections += [f"## {s.label}", "", f"{run.requests} requests, {run.rps:.0f} req/s; profile: `{path}`",
                     "", summary.strip(), ""]
    text = "\n".join(sections)
    print(text)
    (out / "profile.md").write_text(text)


# ---------------------------------------------------------------------------------------------
# Sequential probe: first byte and whole answer, unloaded


def probe(workers: dict, chosen: list, n: int) -> dict:
    conns = {s.key: HttpConnection(workers[s.worker].target_port) for s in chosen}
    samples = {s.key: ([], []) for s in chosen}
    try:
        for _ in range(n):
            for s in chosen:  # interleaved, so drift hits every scenario alike
                a = send(0, s, conns[s.key])
                check(s, a)
                samples[s.key][0].append(a.first_byte_s * 1e3)
                samples[s.key][1].append(a.total_s * 1e3)
    finally:
        for c in conns.values():
            c.sock.close()
    return samples


def worker_pids(worker: Worker) -> list:
    """The Worker's own workerd processes (not wrangler's proxy workerd, not node)."""
    return [pid for pid, comm, rest in proc_stats()
            if int(rest[2]) == worker.child.pid and comm == "workerd" and not is_proxy(worker, pid)]


def cpu_ns(pids: list) -> int:
    """Nanoseconds on CPU so far of every thread of `pids` (schedstat: exact, unlike the 10 ms
    ticks of /proc/PID/stat)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def unloaded_cpu(workers: dict, chosen: list, requests: int, blocks: int) -> dict:
    """Worker CPU per request with one request at a time: no contention for the two cores, so
    the figure is the Worker's own cost, not the machine's. Blocks of `requests` sequential
    requests per scenario, scenarios interleaved block by block; the median block per scenario."""
    pids = {name: worker_pids(w) for name, w in workers.items()}
    per_request = {s.key: [] for s in chosen}
    for _ in range(blocks):
        for s in chosen:
            body = s.body_file.read_bytes()
            headers = s.headers()
            # A connection per block: an idle keep-alive connection may be closed meanwhile.
            with HttpConnection(workers[s.worker].target_port) as conn:
                conn.request("POST", s.path, headers, body)
                before = cpu_ns(pids[s.worker])
                for _ in range(requests):
                    a = conn.request("POST", s.path, headers, body)
                    if a.status != 200:
                        raise SystemExit(f"bench: {s.key} answered {a.status} in the CPU probe")
                per_request[s.key].append((cpu_ns(pids[s.worker]) - before) / requests / 1e3)
    return {key: statistics.median(values) for key, values in per_request.items()}


def pct(values: list, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# ---------------------------------------------------------------------------------------------
# Report


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(args) -> str:
        try:
            out = subprocess.run(args, cwd=ROOT, env=wrangler_env(False), capture_output=True,
                                 text=True, timeout=30)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    commit = version(["git", "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "Cargo.lock", "wrangler.toml"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "commit": commit + (" (src modified)" if dirty else ""),
        "wrangler": version([str(WRANGLER), "--version"]),
        "workerd": version([str(ROOT / "node_modules" / ".bin" / "workerd"), "--version"]),
        "wrk": version(["wrk", "--version"]).split(" [")[0],
        "python": platform.python_version(),
    }


def fmt_ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}×" if b else "n/a"


def report(args, info: dict, all_scenarios: list, sizes: dict, samples: dict, n_probe: int,
           started: float, command: str, settled_s: float, unloaded: dict) -> str:
    by_key = {s.key: s for s in all_scenarios}

    def med(s: Scenario, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in s.runs)

    def cpu_med(s: Scenario, kind: str) -> float:
        return statistics.median(r.cpu_us[kind] for r in s.runs)

    lines = [
        "# task-router benchmark: router vs pass-through under `wrangler dev`",
        "",
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: `nproc` = {info['nproc']}, CPU {info['cpu']}, Linux {info['kernel']}",
        f"- versions: commit {info['commit']}, wrangler {info['wrangler']}, {info['workerd']}, "
        f"{info['wrk']}, Python {info['python']}",
        f"- command: `{command}`",
        f"- load: `wrk -t1 -c{args.connections} -d{args.duration}s --latency` per run, "
        f"{args.rounds} rounds, every scenario once per round in a shuffled order (seeded: "
        f"{ROUND_ORDER_SEED} + round), so each router run shares its round with its baseline's; "
        f"{args.warmup} s warm-up per scenario"
        + (f", and {args.rewarm} s of load on each scenario right before each of its measured runs"
           if args.rewarm else "") + "; medians over rounds; "
        + ("one set of dev servers for all rounds (`--same-servers`)" if args.same_servers else
           f"fresh dev servers (new workerd processes) for every round, each warmed up "
           f"{min(args.warmup, 1)} s per scenario "
           "and taught the gone model again"),
        f"- upstream: `benches/upstream.py` (canned, no delay) on 127.0.0.1; Workers: `wrangler dev` "
        f"on 127.0.0.1, log level `log`, router rate limiter raised to 10^9/min",
        "- dev server: " + ("wrangler's dev server **without its DevTools inspector** (`--no-inspector`, "
                            "`benches/dev_server.mjs` → `unstable_startWorker`)" if args.no_inspector
                            else "`wrangler dev` (CLI; it always attaches its DevTools inspector)"),
        "- loaded port: " + ("**the Worker's own workerd socket** (`--direct`: wrangler's ProxyWorker and "
                             "its request log skipped; its inspector still forwards events to node)"
                             if args.direct else "the dev server's public port (through wrangler's ProxyWorker)"),
        f"- between runs the bench waited {settled_s:.0f} s in all for the dev servers to go idle (wrangler "
        f"keeps working off queued log and inspector traffic after the load stops)",
        "",
        "## Under load (medians over rounds)",
        "",
        "CPU columns: CPU time per request (µs) of the Worker's own workerd process, of wrangler's "
        "proxy workerd and of wrangler's node process (the loaded Worker's `wrangler dev` only), of the "
        "upstream and of wrk; `other` is CPU the machine spent outside these processes during the run "
        "(other sessions, interrupts), in cores; `upstream conns/req`: new connections workerd opened to "
        "the upstream per request (0: it reused them).",
        "",
        "| scenario | p50 ms | p99 ms | req/s | req/s min–max | errors | Worker workerd | wrangler proxy workerd | wrangler node | upstream | wrk | other | upstream conns/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in (s for s in all_scenarios if s.runs):
        rps = [r.rps for r in s.runs]
        lines.append(
            f"| {s.label} | {fmt_ms(med(s, 'p50_ms'))} | {fmt_ms(med(s, 'p99_ms'))} | {med(s, 'rps'):.0f} | "
            f"{min(rps):.0f}–{max(rps):.0f} | {sum(r.errors for r in s.runs)} | "
            f"{cpu_med(s, 'worker'):.0f} | {cpu_med(s, 'proxy'):.0f} | {cpu_med(s, 'node'):.0f} | "
            f"{cpu_med(s, 'upstream'):.0f} | {cpu_med(s, 'wrk'):.0f} | {med(s, 'other_cores'):.2f} | "
            f"{med(s, 'upstream_conns'):.2f} |")
    lines += [
        "",
        "## Ratios (router / baseline, from the medians above)",
        "",
        "| comparison | p50 | p99 | req/s | Worker workerd CPU/req | wrangler (proxy + node) CPU/req | target |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    def compared(paired: bool = False):
        """The comparisons whose two scenarios both ran (`paired`: as many times)."""
        for a, b, target in COMPARISONS:
            sa, sb = by_key.get(a), by_key.get(b)
            if sa and sb and sa.runs and sb.runs and (not paired or len(sa.runs) == len(sb.runs)):
                yield sa, sb, target

    for sa, sb, target in compared():
        lines.append(
            f"| {sa.label} / {sb.label} | {ratio(med(sa, 'p50_ms'), med(sb, 'p50_ms'))} | "
            f"{ratio(med(sa, 'p99_ms'), med(sb, 'p99_ms'))} | {ratio(med(sa, 'rps'), med(sb, 'rps'))} | "
            f"{ratio(cpu_med(sa, 'worker'), cpu_med(sb, 'worker'))} | "
            f"{ratio(cpu_med(sa, 'proxy') + cpu_med(sa, 'node'), cpu_med(sb, 'proxy') + cpu_med(sb, 'node'))} | "
            f"{target} |")
    lines += [
        "",
        "## Paired ratios (each round's router run against its baseline's run in the same round)",
        "",
        "A round runs every scenario back to back, so a drift of the machine between rounds moves both "
        "runs of a pair; the median of the per-round ratios is free of it, the ratios of the medians above "
        "are not. Min–max shows the spread over rounds.",
        "",
        "| comparison | p50: median (min–max) | req/s: median (min–max) | target |",
        "|---|---:|---:|---|",
    ]
    for sa, sb, target in compared(paired=True):
        cells = []
        for attr in ("p50_ms", "rps"):
            ratios = [getattr(ra, attr) / getattr(rb, attr) for ra, rb in zip(sa.runs, sb.runs)
                      if getattr(rb, attr) > 0]
            cells.append(f"{statistics.median(ratios):.3f}× ({min(ratios):.3f}–{max(ratios):.3f})"
                         if ratios else "–")
        lines.append(f"| {sa.label} / {sb.label} | {cells[0]} | {cells[1]} | {target} |")
    long_r, long_p = by_key.get("chat-long"), by_key.get("pt-long")
    if long_r and long_p and long_r.runs and long_p.runs:
        per_chunk = (cpu_med(long_r, "worker") - cpu_med(long_p, "worker")) / (LONG_CHUNKS + 3)
        lines += ["", f"Relaying a stream chunk by chunk costs the router's Worker **{per_chunk:.1f} µs of CPU per "
                      f"chunk** more than the pass-through, which hands the upstream body to the runtime "
                      f"untouched (Worker workerd CPU per stream, router − pass-through, ÷ {LONG_CHUNKS + 3} chunks)."]
    lines += [
        "",
        f"## Unloaded, sequential ({n_probe} requests per scenario on one keep-alive connection, interleaved)",
        "",
        "Request sent → first body byte, and → whole answer, in ms.",
        "",
        "| scenario | first byte p50 | first byte p90 | whole p50 | whole p90 |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, (first, whole) in samples.items():
        lines.append(f"| {by_key[key].label} | {fmt_ms(statistics.median(first))} | {fmt_ms(pct(first, 0.9))} | "
                     f"{fmt_ms(statistics.median(whole))} | {fmt_ms(pct(whole, 0.9))} |")
    if "chat-stream" in samples and "pt-stream" in samples:
        diff50 = statistics.median(samples["chat-stream"][0]) - statistics.median(samples["pt-stream"][0])
        diff90 = pct(samples["chat-stream"][0], 0.9) - pct(samples["pt-stream"][0], 0.9)
        verdict = "met" if diff50 <= 1.0 else "NOT met"
        lines += ["", f"Time to first streamed byte, router − pass-through: **{diff50:+.3f} ms** at p50, "
                      f"{diff90:+.3f} ms at p90 (target: within 1 ms — {verdict} at p50)."]
    if unloaded:
        lines += [
            "",
            f"## Worker CPU per request, unloaded (median of {args.cpu_blocks} blocks of {args.cpu_requests} "
            f"sequential requests per scenario, interleaved)",
            "",
            "The Worker's own workerd threads' time on CPU (`/proc/PID/task/*/schedstat`) per request, with "
            "one request in flight: the cost of the Worker itself, free of the contention for two cores "
            "that the loaded runs above share with wrk, wrangler and the upstream.",
            "",
            "| scenario | Worker CPU µs/request | baseline | router − baseline | router ÷ baseline |",
            "|---|---:|---|---:|---:|",
        ]
        for key, value in unloaded.items():
            base = UNLOADED_CPU[key]
            if base is None or base not in unloaded:
                lines.append(f"| {by_key[key].label} | {value:.0f} | | | |")
            else:
                lines.append(f"| {by_key[key].label} | {value:.0f} | {by_key[base].label} | "
                             f"{value - unloaded[base]:+.0f} | {value / unloaded[base]:.3f}× |")
    lines += [
        "",
        "## Bundle size (`wrangler deploy --dry-run`)",
        "",
        "| Worker | total upload | gzip |",
        "|---|---:|---:|",
    ]
    for name, (total, gz) in sizes.items():
        lines.append(f"| {name} | {total} | {gz} |")
    lines += ["", f"Whole run: {time.monotonic() - started:.0f} s.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# `--streams`: long streams, one at a time, through JavaScript Workers and the router


# Content chunks in a `--streams` answer (the upstream's `long1000-a`), 1 ms apart: a 1,000-token
# answer. With the role, final and `[DONE]` events a stream is STREAM_CHUNKS + 3 HTTP chunks, the
# count every per-chunk figure divides by.
STREAM_CHUNKS = 1000
STREAM_HTTP_CHUNKS = STREAM_CHUNKS + 3
STREAMS_DIR = BENCHES / "streams"
# The Free plan's CPU limit per request.
FREE_PLAN_CPU_US = 10_000
# JavaScript Workers: the two baselines, and (`--stream-experiments`) the relays tried for issue 17.
JS_STREAM_WORKERS = [
    ("native", "JS Worker returning `upstream.body` untouched (native pipe)", "native.mjs"),
    ("rwloop", "JS Worker with a `read()` / `write()` loop", "rwloop.mjs"),
]
JS_STREAM_EXPERIMENTS = [
    ("js-transform", "JS `TransformStream`, synchronous scan per chunk", "experiments/transform.mjs"),
    ("js-pipe", "JS `pipeTo` into an `IdentityTransformStream` (`preventClose`), bytes unseen",
     "experiments/pipe.mjs"),
    ("js-tee", "JS `tee()`: one branch piped natively, the other read every 100 ms",
     "experiments/tee.mjs"),
    ("js-batch20", "JS `tee()` into a `DigestStream`, the other branch relayed every 20 ms",
     "experiments/batch.mjs", {"BATCH_MS": "20"}),
    ("js-batch50", "JS `tee()` into a `DigestStream`, the other branch relayed every 50 ms",
     "experiments/batch.mjs", {"BATCH_MS": "50"}),
    ("js-batchbuf", "JS `tee()` into `arrayBuffer()`, the other branch relayed every 50 ms",
     "experiments/batch.mjs", {"BATCH_MS": "50", "DRAIN": "buffer"}),
    ("js-batchz", "JS `tee()` into a `CompressionStream`'s `arrayBuffer()`, the other branch relayed every 50 ms",
     "experiments/batch.mjs", {"BATCH_MS": "50", "DRAIN": "deflate"}),
]
# The router's `STREAM_RELAY` modes, the default first; `--relays` picks some (`""`: the router as
# configured in wrangler.toml).
ROUTER_RELAYS = ["pipe", "filter"]


@dataclass
class StreamScenario:
    key: str
    label: str
    worker: str
    path: str
    auth: str
    body: bytes
    blocks: list = field(default_factory=list)  # per block: role → µs of CPU per chunk, "wall_ms"
    profile: dict = field(default_factory=dict)  # category → µs per chunk


def js_config(tmp: Path, name: str, module: Path) -> Path:
    """A `wrangler.toml` for a JavaScript Worker in `tmp`, at the router's compatibility date."""
    date = re.search(r'^compatibility_date = "([^"]+)"$', (ROOT / "wrangler.toml").read_text(), re.M)
    if not date:
        raise SystemExit("bench: no `compatibility_date` in wrangler.toml")
    folder = tmp / name
    folder.mkdir()
    path = folder / "wrangler.toml"
    path.write_text(f'name = "{name}"\nmain = "{module}"\ncompatibility_date = "{date.group(1)}"\n')
    return path


def stream_body(model: str) -> bytes:
    return ('{"model":"' + model + '","messages":[{"role":"user","content":"Count to 1000."}],'
            '"stream":true}').encode()


def stream_specs(tmp: Path, upstream_url: str, router_vars: dict, args) -> tuple:
    """(dev server specs, scenarios) for `--streams`."""
    specs, chosen = [], []
    js = JS_STREAM_WORKERS + (JS_STREAM_EXPERIMENTS if args.stream_experiments else [])
    for key, label, module, *extra in js:
        vars_ = dict({"UPSTREAM": upstream_url}, **(extra[0] if extra else {}))
        specs.append((key, js_config(tmp, key, STREAMS_DIR / module), vars_, "/"))
        chosen.append(StreamScenario(key, label, key, "/", f"Bearer {PROVIDER_KEY}",
                                     stream_body(f"long{STREAM_CHUNKS}-a")))
    routers = [("router", ROOT, "the router")]
    if args.compare:
        routers.append(("prev", Path(args.compare).resolve(), "the `--compare` router"))
    for (prefix, checkout, name), relay in ((r, relay) for r in routers for relay in args.relays):
        key = f"{prefix}-{relay}" if relay else prefix
        vars_ = dict(router_vars, STREAM_RELAY=relay) if relay else router_vars
        specs.append((key, dev_config(checkout / "wrangler.toml", tmp, key, RAISED_LIMIT), vars_, "/healthz"))
        default = " (the default)" if relay == ROUTER_RELAYS[0] and prefix == "router" else ""
        label = f"{name}, `STREAM_RELAY={relay}`{default}" if relay else f"{name} (as configured)"
        chosen.append(StreamScenario(key, label, key, "/v1/chat/completions", f"Bearer {CLIENT_KEY}",
                                     stream_body("long1k")))
    return specs, chosen


def check_stream(s: StreamScenario, answer: Answer) -> None:
    problems = []
    if answer.status != 200:
        problems.append(f"status {answer.status}")
    if not answer.body.endswith(b"data: [DONE]\n\n"):
        problems.append("the stream does not end with `data: [DONE]`")
    ticks = answer.body.count(b'"content":" tick"')
    if ticks != STREAM_CHUNKS:
        problems.append(f"{ticks} content chunks, not {STREAM_CHUNKS}")
    if problems:
        raise SystemExit(f"bench: {s.key} streamed wrongly: {'; '.join(problems)}\n{answer.body[-600:]!r}")


def role_pids(worker: Worker) -> dict:
    """The Worker's own workerd, wrangler's proxy workerd and wrangler's node, by pid."""
    roles = {"worker": [], "proxy": [], "node": []}
    for pid, comm, rest in proc_stats():
        if int(rest[2]) != worker.child.pid:
            continue
        role = "node" if comm != "workerd" else "proxy" if is_proxy(worker, pid) else "worker"
        roles[role].append(pid)
    return roles


def run_streams_block(workers: dict, s: StreamScenario, requests: int) -> dict:
    """`requests` streams one after another on one connection; each role's CPU per chunk."""
    worker = workers[s.worker]
    pids = role_pids(worker)
    headers = {"Content-Type": "application/json", "Authorization": s.auth}
    with HttpConnection(worker.target_port, timeout=60) as conn:
        before = {role: cpu_ns(p) for role, p in pids.items()}
        started = time.perf_counter()
        spreads = []
        for _ in range(requests):
            answer = conn.request("POST", s.path, headers, s.body)
            check_stream(s, answer)
            # Paced 1 ms apart, half the bytes arrive about half-way through a stream relayed as
            # it arrives; a relay that holds the answer back delivers them at the end (the dev
            # server's proxies sometimes do too, so this is reported, not checked).
            spreads.append((answer.half_s - answer.first_byte_s) / max(answer.total_s - answer.first_byte_s, 1e-9))
        wall = time.perf_counter() - started
        # What a Worker does after the last byte (its log line, reading past `[DONE]`).
        time.sleep(0.1)
        after = {role: cpu_ns(p) for role, p in pids.items()}
    chunks = requests * STREAM_HTTP_CHUNKS
    result = {role: (after[role] - before[role]) / 1e3 / chunks for role in pids}
    result["wall_ms"] = wall * 1e3 / requests
    result["half"] = statistics.median(spreads)
    return result


def profile_streams(procs: Processes, chosen: list, workers: dict, tmp: Path, args) -> None:
    """Each scenario's streams under the V8 sampling profiler; self time per chunk by category."""
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    for s in chosen:
        worker = workers[s.worker]
        path = out / f"streams-{s.key}.cpuprofile"
        profiler = procs.start(["node", str(BENCHES / "profile_worker.mjs"), "--inspector",
                                str(worker.inspector_port), "--out", str(path), "--interval-us",
                                str(args.profile_interval)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = profiler.stdout.readline().strip()
        if ready != "PROFILING":
            raise SystemExit(f"bench: the profiler did not start for {s.key}: {ready}{profiler.stdout.read()}")
        block = run_streams_block(workers, s, args.profile_streams)
        profiler.send_signal(signal.SIGTERM)
        summary, _ = profiler.communicate(timeout=120)
        procs.children.remove(profiler)
        found = re.search(r"^CATEGORIES (\{.*\})$", summary, re.M)
        if not found:
            raise SystemExit(f"bench: no category line in the profile of {s.key}:\n{summary}")
        samples = json.loads(found.group(1))
        chunks = args.profile_streams * STREAM_HTTP_CHUNKS
        s.profile = {k: v * args.profile_interval / chunks for k, v in samples.items()}
        s.profile["summary"] = summary
        s.profile["workerd"] = block["worker"]
        log(f"bench: profiled {s.key}: JS {s.profile['js']:.1f}, wasm {s.profile['wasm']:.1f}, runtime "
            f"{s.profile['runtime']:.1f}, GC {s.profile['gc']:.1f} µs/chunk → {path}")


def streams_report(args, info: dict, chosen: list, started: float, command: str) -> str:
    base = next((s for s in chosen if s.key == "native"), None)
    lines = [
        f"# task-router benchmark: streams of {STREAM_CHUNKS:,} chunks 1 ms apart, one at a time",
        "",
        f"- date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: `nproc` = {info['nproc']}, CPU {info['cpu']}, Linux {info['kernel']}",
        f"- versions: commit {info['commit']}, wrangler {info['wrangler']}, {info['workerd']}, "
        f"Python {info['python']}",
        f"- command: `{command}`",
        "- dev server: " + ("wrangler's dev server **without its DevTools inspector** (`--no-inspector`)"
                            if args.no_inspector else "`wrangler dev` (CLI, with its DevTools inspector)"),
        f"- each stream: {STREAM_CHUNKS} content events + role, final (usage) and `[DONE]` = "
        f"{STREAM_HTTP_CHUNKS} HTTP chunks from `benches/upstream.py`; every answer checked whole",
        "",
    ]
    if any(s.blocks for s in chosen):
        lines += [
            f"## Worker CPU per chunk ({args.stream_blocks} blocks of {args.stream_requests} sequential "
            "streams per Worker, Workers interleaved in a shuffled order per block"
            + ("" if args.same_servers else ", fresh dev servers every block") + ")",
            "",
            "workerd CPU: the Worker's own workerd threads (`/proc/PID/task/*/schedstat`) per HTTP chunk, "
            "runtime and dev-server work included; ÷ native: each block's figure over the native pipe's "
            "in the same block; wrangler: its proxy workerd and node per chunk.",
            "",
            "| Worker | workerd CPU µs/chunk: median (min–max) | ÷ native pipe: median (min–max) | "
            "wrangler µs/chunk | stream ms | half the bytes at |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for s in chosen:
            cpu = [b["worker"] for b in s.blocks]
            ratios = ([a["worker"] / b["worker"] for a, b in zip(s.blocks, base.blocks)]
                      if base and base.blocks and s is not base else [])
            cell = (f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})" if ratios
                    else "1" if s is base else "")
            wrangler = statistics.median(b["proxy"] + b["node"] for b in s.blocks)
            lines.append(f"| {s.label} | {statistics.median(cpu):.0f} ({min(cpu):.0f}–{max(cpu):.0f}) | {cell} | "
                         f"{wrangler:.0f} | {statistics.median(b['wall_ms'] for b in s.blocks):.0f} | "
                         f"{statistics.median(b['half'] for b in s.blocks):.0%} |")
    if any(s.profile for s in chosen):
        lines += [
            "",
            f"## V8 profile per chunk ({args.profile_streams} streams per Worker, sampled every "
            f"{args.profile_interval} µs)",
            "",
            "Self time by the sampled frame: JavaScript (the Worker's and wasm-bindgen's glue), wasm, "
            "runtime calls (functions the runtime provides, e.g. `read`, `write`, `enqueue`), garbage "
            "collection. Chunks in 10 ms: how many chunks 10 ms of CPU (the Free plan's limit) would "
            "relay at the JS + wasm + runtime figure.",
            "",
            "| Worker | JS + wasm + runtime µs/chunk | JS | wasm | runtime calls | GC | chunks in 10 ms |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for s in (s for s in chosen if s.profile):
            p = s.profile
            total = p["js"] + p["wasm"] + p["runtime"]
            fits = f"{FREE_PLAN_CPU_US / total:,.0f}" if total > 0 else "all"
            lines.append(f"| {s.label} | {total:.1f} | {p['js']:.1f} | {p['wasm']:.1f} | {p['runtime']:.1f} | "
                         f"{p['gc']:.1f} | {fits} |")
        for s in (s for s in chosen if s.profile):
            lines += ["", f"### {s.label}", "", s.profile["summary"].strip()]
    lines += ["", f"Whole run: {time.monotonic() - started:.0f} s.", ""]
    return "\n".join(lines)


def run_streams(procs: Processes, tmp: Path, args, started: float, command: str) -> int:
    if not args.skip_build:
        env = wrangler_env(prebuilt=False)
        for checkout in [ROOT] + ([Path(args.compare).resolve()] if args.compare else []):
            run_checked(["sh", "scripts/build.sh"], checkout, keep_names_env(env) if args.profile else env,
                        f"scripts/build.sh in {checkout}")
    upstream = procs.start([sys.executable, str(BENCHES / "upstream.py"), "--port", "0", "--api-key",
                            PROVIDER_KEY], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready = upstream.stdout.readline().split()
    if len(ready) != 2 or ready[0] != "READY":
        raise SystemExit(f"bench: the upstream did not start: {ready}")
    upstream_url = f"http://127.0.0.1:{ready[1]}"
    router_vars = {
        "GROQ_BASE_URL": upstream_url,
        "GROQ_API_KEY": PROVIDER_KEY,
        "ROUTER_API_KEYS": f"bench:{CLIENT_KEY}",
        "MODEL_REGISTRY": MODEL_REGISTRY,
        "FORCE_MODEL": "",
        "ALLOW_UNAUTHENTICATED": "false",
    }
    specs, chosen = stream_specs(tmp, upstream_url, router_vars, args)
    if args.only:
        keep = set(args.only.split(","))
        specs = [spec for spec in specs if spec[0] in keep]
        chosen = [s for s in chosen if s.key in keep]
    ports = {int(ready[1])}

    def fresh() -> dict:
        workers = start_all(procs, specs, ports, tmp, args)
        # Dev servers keep busy for a while after they answer; streams then arrive in bursts.
        settle(workers, upstream.pid)
        for s in chosen:  # checked, and warmed up
            for _ in range(2):
                with HttpConnection(workers[s.worker].target_port, timeout=60) as conn:
                    check_stream(s, conn.request("POST", s.path, {"Content-Type": "application/json",
                                                                   "Authorization": s.auth}, s.body))
        settle(workers, upstream.pid)
        return workers

    workers = fresh()
    log("bench: stream Workers ready: " + ", ".join(f"{n} :{w.target_port}" for n, w in workers.items()))
    if args.profile:
        profile_streams(procs, chosen, workers, tmp, args)
    else:
        for b in range(args.stream_blocks):
            if b > 0 and not args.same_servers:
                stop_all(procs, workers)
                workers = fresh()
            order = list(chosen)
            random.Random(ROUND_ORDER_SEED + b).shuffle(order)
            for s in order:
                block = run_streams_block(workers, s, args.stream_requests)
                s.blocks.append(block)
                log(f"[block {b + 1}/{args.stream_blocks}] {s.key:14} workerd {block['worker']:6.1f} µs/chunk  "
                    f"proxy {block['proxy']:6.1f}  node {block['node']:6.1f}  stream {block['wall_ms']:6.0f} ms  "
                    f"half the bytes at {block['half']:.0%}")
    text = streams_report(args, machine(), chosen, started, command)
    Path(args.out).write_text(text)
    print(text)
    log(f"bench: report written to {args.out}")
    return 0


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark the router against a pass-through Worker.")
    parser.add_argument("--quick", action="store_true", help="3 rounds × 3 s, 1 s warm-up, 100 probes, 3 CPU blocks (~4 min)")
    parser.add_argument("--rounds", type=int, help="rounds of every scenario (default 5)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 8)")
    parser.add_argument("--warmup", type=int, help="warm-up seconds per scenario (default 3)")
    parser.add_argument("--rewarm", type=int, default=1,
                        help="seconds of load on a scenario right before each of its measured runs (default 1; 0: none)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--probes", type=int, help="sequential requests per probed scenario (default 200)")
    parser.add_argument("--only", help="comma-separated scenario keys to run under wrk (default: all)")
    parser.add_argument("--direct", action="store_true",
                        help="load each Worker's own workerd socket instead of wrangler dev's public port")
    parser.add_argument("--no-inspector", action="store_true",
                        help="start the dev server through wrangler's API without its DevTools inspector "
                             "(benches/dev_server.mjs); `wrangler dev` always attaches one")
    parser.add_argument("--cpu-requests", type=int, default=300,
                        help="sequential requests per block in the unloaded CPU measure (default 300)")
    parser.add_argument("--cpu-blocks", type=int,
                        help="blocks per scenario in the unloaded CPU measure (default 5; 0 skips it)")
    parser.add_argument("--compare", metavar="DIR",
                        help="also run the router of another checkout (e.g. a `git worktree` of an earlier "
                             "commit, built there) on the small and 1 MiB chat scenarios, side by side")
    parser.add_argument("--same-servers", action="store_true",
                        help="keep one set of dev servers for all rounds (default: fresh ones every round)")
    parser.add_argument("--skip-build", action="store_true", help="use the bundles already built")
    parser.add_argument("--out", default=str(BENCHES / "results.md"), help="where to write the report too")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with wrangler's logs")
    parser.add_argument("--profile", metavar="DIR",
                        help="instead of the rounds, run each measured scenario once under the V8 sampling "
                             "profiler (through `wrangler dev`'s inspector, on a build that keeps wasm function "
                             "names) and write DIR/<scenario>.cpuprofile and DIR/profile.md")
    parser.add_argument("--streams", action="store_true",
                        help=f"instead of the rest: streams of {STREAM_CHUNKS:,} chunks 1 ms apart, one at a time, "
                             "through a native-pipe JS Worker, a read/write-loop JS Worker and the router; "
                             "Worker CPU per chunk (with --profile: V8 time per chunk)")
    parser.add_argument("--stream-blocks", type=int, default=5,
                        help="--streams: blocks per Worker (default 5)")
    parser.add_argument("--stream-requests", type=int, default=3,
                        help="--streams: sequential streams per block (default 3)")
    parser.add_argument("--stream-experiments", action="store_true",
                        help="--streams: also the experimental JS relays in benches/streams/experiments")
    parser.add_argument("--relays",
                        help="--streams: comma-separated `STREAM_RELAY` modes to run the router with, each "
                             "its own dev server; an empty item is the router as configured "
                             f"(default: {','.join(ROUTER_RELAYS)})")
    parser.add_argument("--profile-streams", type=int, default=5,
                        help="--streams --profile: streams per Worker under the profiler (default 5)")
    parser.add_argument("--profile-interval", type=int, default=100,
                        help="--streams --profile: sampling interval in µs (default 100)")
    args = parser.parse_args()
    args.relays = ROUTER_RELAYS if args.relays is None else args.relays.split(",")
    quick = args.quick
    args.rounds = args.rounds or (3 if quick else 5)
    args.cpu_blocks = (3 if quick else 5) if args.cpu_blocks is None else args.cpu_blocks
    args.duration = args.duration or (3 if quick else 8)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    args.probes = args.probes or (100 if quick else 200)
    if args.direct and args.no_inspector:
        parser.error("--direct finds the Worker's socket through the inspector's log; drop one of them")
    if args.profile and args.no_inspector:
        parser.error("--profile reads the CPU profile through the inspector; drop --no-inspector")
    if args.profile and args.skip_build and not args.streams:
        parser.error("--profile needs its own build (wasm names kept); drop --skip-build")
    if args.only and not args.streams:
        # Checked before anything is built or started: an unknown key would measure nothing.
        known = [s.key for s in scenarios(collections.defaultdict(bytes), compare=bool(args.compare))]
        unknown = sorted(set(args.only.split(",")) - set(known))
        if unknown:
            parser.error(f"--only: no scenario {', '.join(unknown)} (scenarios: {', '.join(known)})")
    command = " ".join(shlex.quote(a) for a in ["python3", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])

    started = time.monotonic()
    procs = Processes()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="task-router-bench-"))
    try:
        if args.streams:
            if not WRANGLER.exists():
                run_checked(["npm", "ci", "--no-audit", "--no-fund"], ROOT, None, "npm ci")
            return run_streams(procs, tmp, args, started, command)
        ensure_tools()
        sizes = build_all(tmp, args.skip_build, keep_names=bool(args.profile))
        compare = Path(args.compare).resolve() if args.compare else None
        if compare and not args.skip_build:
            env = wrangler_env(prebuilt=False)
            run_checked(["sh", "scripts/build.sh"], compare, keep_names_env(env) if args.profile else env,
                        f"scripts/build.sh in {compare}")
        log(f"bench: bundles built ({time.monotonic() - started:.0f} s): {sizes}")

        upstream = procs.start([sys.executable, str(BENCHES / "upstream.py"), "--port", "0", "--api-key",
                                PROVIDER_KEY], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = upstream.stdout.readline().split()
        if len(ready) != 2 or ready[0] != "READY":
            raise SystemExit(f"bench: the upstream did not start: {ready}")
        upstream_port = int(ready[1])
        upstream_url = f"http://127.0.0.1:{upstream_port}"

        ports = {upstream_port}
        router_cfg = dev_config(ROOT / "wrangler.toml", tmp, "router", RAISED_LIMIT)
        pt_cfg = dev_config(FIXTURE / "wrangler.toml", tmp, "passthrough", [])
        router_vars = {
            "GROQ_BASE_URL": upstream_url,
            "GROQ_API_KEY": PROVIDER_KEY,
            "ROUTER_API_KEYS": f"bench:{CLIENT_KEY}",
            "MODEL_REGISTRY": MODEL_REGISTRY,
            "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
            "MAX_INFLIGHT_BYTES": str(MAX_INFLIGHT_BYTES),
            "FORCE_MODEL": "",
            "ALLOW_UNAUTHENTICATED": "false",
        }
        # (name, config, vars, readiness path). Besides the router as configured (`LOG_LEVEL=info`):
        # the same router writing a line only for what went wrong (`LOG_LEVEL=warn`: what the line
        # costs), and without the `CLIENT_RATE_LIMITER` binding (what the limiter costs). The log
        # line is mostly paid by wrangler's node process, which production lacks.
        specs = [
            ("router", router_cfg, router_vars, "/healthz"),
            ("router-warn", dev_config(ROOT / "wrangler.toml", tmp, "router-warn", RAISED_LIMIT),
             dict(router_vars, LOG_LEVEL="warn"), "/healthz"),
            ("router-lean", dev_config(ROOT / "wrangler.toml", tmp, "router-lean", [(RATE_LIMIT_TABLE, "")]),
             router_vars, "/healthz"),
            # Budgets on (issue 25): every request reserves and settles in two Durable Objects,
            # its client's and the global one; limits no run reaches.
            ("router-budget", dev_config(ROOT / "wrangler.toml", tmp, "router-budget", RAISED_LIMIT),
             dict(router_vars, BUDGETS=BENCH_BUDGETS), "/healthz"),
            # The response cache (issue 26) on the task `fast`: the same small request is a hit,
            # or with `Cache-Control: no-cache` a miss that is fetched and stored.
            ("router-cache", dev_config(ROOT / "wrangler.toml", tmp, "router-cache", RAISED_LIMIT),
             dict(router_vars, CACHE='{"fast":3600}'), "/healthz"),
        ]
        if compare:
            specs.append(("router-prev", dev_config(compare / "wrangler.toml", tmp, "router-prev", RAISED_LIMIT),
                router_vars, "/healthz"))
        specs.append(("passthrough", pt_cfg, {"UPSTREAM": upstream_url}, "/"))
        workers = start_all(procs, specs, ports, tmp, args)
        log(f"bench: workers ready ({time.monotonic() - started:.0f} s): "
            + ", ".join(f"{name} :{w.target_port}" for name, w in workers.items())
            + f", upstream :{upstream_port}")

        bodies = write_bodies(tmp)
        all_scenarios = scenarios(bodies, compare=compare is not None)
        gone = next(s for s in all_scenarios if s.key == "gone-small")
        teach_gone(workers, gone)
        for s in all_scenarios:
            if s.expect_cache == "hit":
                # Its answer stored first (the store follows the answer, in `wait_until`).
                send(workers[s.worker].target_port, s)
                time.sleep(0.5)
            check(s, send(workers[s.worker].target_port, s))
        gone_calls = upstream_stats(upstream_port)["calls"].get("gone-a", 0)

        measured = all_scenarios
        if args.only:
            keep = set(args.only.split(","))
            measured = [s for s in all_scenarios if s.key in keep]
        for s in measured:
            log(f"bench: warm-up {s.key}")
            run_wrk(procs, s, workers, upstream.pid, upstream_port, tmp, args.warmup, args.connections)
        settled = settle(workers, upstream.pid)

        if args.profile:
            profile_scenarios(procs, measured, workers, upstream.pid, upstream_port, tmp, args)
            return 0

        probed_keys = ["pt-small", "tasks-small", "chat-small", "pt-stream", "chat-stream"]
        probed = [s for s in all_scenarios if s.key in probed_keys]
        log(f"bench: sequential probe, {args.probes} requests per scenario")
        samples = probe(workers, probed, args.probes)
        settled += settle(workers, upstream.pid)
        cpu_chosen = [s for s in measured if s.key in UNLOADED_CPU]
        log(f"bench: unloaded CPU, {args.cpu_blocks} blocks of {args.cpu_requests} sequential requests "
            f"per scenario")
        unloaded = unloaded_cpu(workers, cpu_chosen, args.cpu_requests, args.cpu_blocks) if args.cpu_blocks else {}
        settled += settle(workers, upstream.pid)

        for r in range(args.rounds):
            if r > 0 and not args.same_servers:
                # Fresh dev servers for every round: two processes running the same code differ
                # by a few percent (measured with `--compare` on identical builds), so one set of
                # processes for all rounds would bias every round the same way.
                stop_all(procs, workers)
                workers = start_all(procs, specs, ports, tmp, args)
                teach_gone(workers, gone)
                gone_calls = upstream_stats(upstream_port)["calls"].get("gone-a", 0)
                for s in measured:
                    run_wrk(procs, s, workers, upstream.pid, upstream_port, tmp, min(args.warmup, 1),
                            args.connections)
                settled += settle(workers, upstream.pid)
                log(f"[round {r + 1}/{args.rounds}] fresh dev servers: "
                    + ", ".join(f"{name} :{w.target_port}" for name, w in workers.items()))
            # A fresh order every round (seeded, so a run can be repeated): whichever router
            # scenario ran right after the small pass-through measured a few percent slower, in
            # a fixed order and in a rotated one alike, though its Worker CPU was no higher.
            order = list(measured)
            random.Random(ROUND_ORDER_SEED + r).shuffle(order)
            for s in order:
                if args.rewarm:
                    # The Worker behind this scenario may have sat idle through the runs before it.
                    run_wrk(procs, s, workers, upstream.pid, upstream_port, tmp, args.rewarm, args.connections)
                    settled += settle(workers, upstream.pid)
                run = run_wrk(procs, s, workers, upstream.pid, upstream_port, tmp, args.duration, args.connections)
                s.runs.append(run)
                for w in workers.values():
                    if w.child.poll() is not None:
                        raise SystemExit(f"bench: {w.name}'s dev server exited during the run:\n{w.logs_tail()}")
                waited = settle(workers, upstream.pid)
                settled += waited
                log(f"[round {r + 1}/{args.rounds}] {s.key:12} {run.rps:7.0f} req/s  p50 {run.p50_ms:7.3f} ms  "
                    f"p99 {run.p99_ms:7.3f} ms  µs/req: Worker {run.cpu_us['worker']:5.0f}  "
                    f"proxy {run.cpu_us['proxy']:5.0f}  node {run.cpu_us['node']:5.0f}  "
                    f"other {run.other_cores:.2f} cores  errors {run.errors}  (settled {waited:.1f} s)")
            if upstream_stats(upstream_port)["calls"].get("gone-a", 0) != gone_calls:
                raise SystemExit("bench: the router called `gone-a` again after learning it is gone")

        info = machine()
        text = report(args, info, all_scenarios, sizes, samples, args.probes, started, command, settled,
                      unloaded)
        print(text)
        Path(args.out).write_text(text)
        log(f"bench: report written to {args.out}")
        return 0
    except KeyboardInterrupt:
        log("bench: interrupted; stopping everything")
        return 130
    finally:
        procs.stop_all()
        if args.keep_logs:
            log(f"bench: logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
