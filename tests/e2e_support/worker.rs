//! Runs the real Worker under `wrangler dev` (workerd) for end-to-end tests: builds the bundle
//! when it is older than its sources, starts one `wrangler dev` per [`Worker`] on free ports with
//! `--var` overrides, captures everything it prints, and kills its whole process group on drop.
//!
//! Every `Worker` has a watchdog: a `sh` in a process group of its own that waits on a pipe only
//! the test process holds, and kills the Worker's group when it closes. So a Worker kept in a
//! `static` (never dropped), shared by a file's tests, is stopped when the test process ends,
//! however it ends.
//!
//! Needs `node`/`npm` and the Rust toolchain; the first build installs `wasm-bindgen-cli` and
//! `worker-build` from crates.io (see `scripts/build.sh`) and can take several minutes.
use super::http;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// How long `wrangler dev` may take to answer its first request.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `Drop` waits after `SIGTERM` before `SIGKILL`, and after `SIGKILL`.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// Passed before the caller's vars so a developer's `.dev.vars` cannot change what a test sees;
/// a caller's value for the same key replaces these.
pub const BASELINE_VARS: &[(&str, &str)] = &[
    ("FORCE_MODEL", ""),
    ("ALLOW_UNAUTHENTICATED", "false"),
    ("ROUTER_API_KEYS", ""),
    ("ATTEMPT_TIMEOUT_MS", "15000"),
];

pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn wrangler_bin() -> PathBuf {
    manifest_dir().join("node_modules/.bin/wrangler")
}

/// `PATH` with `node_modules/.bin` first, as npm scripts have it: where the machine's Node is
/// older than wrangler needs, `scripts/node.sh` links a Node 22 there.
pub fn node_path() -> std::ffi::OsString {
    let bin = manifest_dir().join("node_modules/.bin");
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&rest)))
        .expect("PATH entries hold no separator")
}

/// Builds the Worker bundle (`sh scripts/build.sh`, after `npm ci` when wrangler is missing)
/// unless it is newer than everything it is built from; once per test process. Panics with the
/// build output if that fails.
pub fn ensure_built() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let dir = manifest_dir();
        if !wrangler_bin().exists() {
            run(Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(dir))?;
        }
        // A `node_modules` installed before `scripts/node.sh` existed may lack the Node wrangler needs.
        run(Command::new("sh").arg("scripts/node.sh").current_dir(dir))?;
        // `build.sh` runs wasm-bindgen and wasm-opt every time (9 s here), even with nothing to
        // rebuild; each test binary used to pay that.
        if bundle_is_fresh() {
            return Ok(());
        }
        // A `TASK_ROUTER_PREBUILT` inherited from the shell would make `build.sh` a no-op and
        // leave the tests running a stale bundle.
        let mut build = Command::new("sh");
        run(build
            .arg("scripts/build.sh")
            .current_dir(dir)
            .env_remove("TASK_ROUTER_PREBUILT"))
    });
    if let Err(output) = result {
        panic!("building the Worker failed:\n{output}");
    }
}

/// Whether `build/index_bg.wasm` is newer than every file it is built from: `src/`, the manifest,
/// the lock file and the build script.
fn bundle_is_fresh() -> bool {
    fn newest(path: &Path) -> Option<SystemTime> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_dir() {
            return meta.modified().ok();
        }
        std::fs::read_dir(path)
            .ok()?
            .map(|entry| newest(&entry.ok()?.path()))
            .try_fold(meta.modified().ok()?, |max, time| Some(max.max(time?)))
    }
    let dir = manifest_dir();
    let built = std::fs::metadata(dir.join("build/index_bg.wasm")).and_then(|m| m.modified());
    let sources = ["src", "Cargo.toml", "Cargo.lock", "scripts/build.sh"]
        .iter()
        .map(|input| newest(&dir.join(input)))
        .collect::<Option<Vec<_>>>();
    matches!((built, sources), (Ok(built), Some(sources)) if sources.iter().all(|s| *s < built))
}

fn run(command: &mut Command) -> Result<(), String> {
    let described = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("could not run {described}: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    let status = output.status;
    Err(format!(
        "{described} failed with {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    ))
}

/// A port the OS just handed out and released; good enough for tests on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}

/// The `--var` list: the baseline, then the caller's vars, each key once (the caller's wins).
fn merged_vars(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut merged: Vec<(String, String)> = BASELINE_VARS
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    for (key, value) in vars {
        // wrangler splits `KEY:VALUE` at the first `:`, so a key cannot contain one; a leading
        // `-` would read as a flag.
        assert!(
            !key.is_empty() && !key.contains(':') && !key.starts_with('-'),
            "var name {key:?} cannot be passed as `--var KEY:VALUE`"
        );
        match merged.iter_mut().find(|(existing, _)| existing == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => merged.push((key.to_string(), value.to_string())),
        }
    }
    merged
}

/// A `wrangler dev` running the built Worker on `127.0.0.1:port()`.
pub struct Worker {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
    /// A generated config (the project's plus extra TOML), removed on drop.
    config_file: Option<PathBuf>,
    /// This instance's own local state (`--persist-to`), removed on drop: instances started
    /// together on one shared `.wrangler/state` can fail to start on a locked SQLite database.
    state_dir: Option<PathBuf>,
    /// wrangler's debug log (`WRANGLER_LOG_PATH`), removed on drop.
    debug_log_dir: PathBuf,
    /// Kills the process group (and removes the files above) once the test process is gone.
    watchdog: Child,
}

/// What [`Worker::start_with`] adds to a plain start.
#[derive(Default)]
pub struct Extras<'a> {
    /// Appended to a copy of `wrangler.toml` (e.g. a `[[kv_namespaces]]` table).
    pub toml: Option<&'a str>,
    /// More `wrangler dev` arguments (e.g. `--test-scheduled`, `--persist-to DIR`).
    pub args: &'a [&'a str],
    /// Text replacements in the copy of `wrangler.toml` (e.g. a lower rate limit).
    pub replace: &'a [(&'a str, &'a str)],
}

impl<'a> Extras<'a> {
    /// `toml` appended to the copy of `wrangler.toml`.
    pub fn toml(toml: &'a str) -> Self {
        let (args, replace) = (&[][..], &[][..]);
        Extras {
            toml: Some(toml),
            args,
            replace,
        }
    }

    /// `replace` made in the copy of `wrangler.toml`.
    pub fn replace(replace: &'a [(&'a str, &'a str)]) -> Self {
        Extras {
            toml: None,
            args: &[],
            replace,
        }
    }
}

impl Worker {
    /// Builds if needed, starts `wrangler dev` with `vars` overriding `wrangler.toml`'s `[vars]`
    /// (on top of [`BASELINE_VARS`]) and `extras`, and waits until the router answers
    /// `GET /healthz` with any status; panics with the output if it does not in time.
    pub fn start_with(vars: &[(&str, &str)], extras: Extras<'_>) -> Worker {
        Worker::start_trying(vars, extras, None)
    }

    /// [`Worker::start_with`], trying `port` first (for the self-test of a port taken meanwhile).
    pub fn start_trying_port(port: u16, vars: &[(&str, &str)]) -> Worker {
        Worker::start_trying(vars, Extras::default(), Some(port))
    }

    fn start_trying(vars: &[(&str, &str)], extras: Extras<'_>, first: Option<u16>) -> Worker {
        ensure_built();
        const TRIES: usize = 3;
        for attempt in 1..=TRIES {
            let port = first.filter(|_| attempt == 1).unwrap_or_else(free_port);
            let mut worker = Worker::spawn(port, vars, &extras);
            match worker.wait_until_ready() {
                Ok(()) => return worker,
                // `free_port` released the port, and another server of a test running in
                // parallel took it before wrangler could: start again on other ports.
                Err(_) if attempt < TRIES && worker.logs().contains("Address already in use") => {
                    let port = worker.port;
                    eprintln!("wrangler dev: port {port} was taken before it listened; others now");
                }
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the last try returns or panics")
    }

    /// Starts `wrangler dev` on `port` (its inspector on a port just found free), without
    /// waiting for it.
    fn spawn(port: u16, vars: &[(&str, &str)], extras: &Extras<'_>) -> Worker {
        let inspector_port = loop {
            let candidate = free_port();
            if candidate != port {
                break candidate;
            }
        };
        let mut command = Command::new(wrangler_bin());
        command
            .args(["dev", "--ip", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--inspector-port")
            .arg(inspector_port.to_string())
            // `log`, wrangler's lowest level: every line the Worker writes, at any console level.
            .args(["--log-level", "log", "--show-interactive-dev-session=false"])
            .args(extras.args);
        let pid = std::process::id();
        let temp = |what: &str| std::env::temp_dir().join(format!("{what}-{pid}-{port}"));
        let state_dir = (!extras.args.contains(&"--persist-to")).then(|| {
            let dir = temp("task-router-e2e-state");
            command.arg("--persist-to").arg(&dir);
            dir
        });
        // Beside `wrangler.toml`, so its relative paths (`main`, the build script) still resolve.
        let generated = extras.toml.is_some() || !extras.replace.is_empty();
        let config_file = generated.then(|| {
            let extra = extras.toml.unwrap_or_default();
            let path = manifest_dir().join(format!(".e2e-wrangler-{port}.toml"));
            let mut base = std::fs::read_to_string(manifest_dir().join("wrangler.toml"))
                .expect("read wrangler.toml");
            for (from, to) in extras.replace {
                assert!(base.contains(from), "wrangler.toml has no {from:?}");
                base = base.replace(from, to);
            }
            std::fs::write(&path, format!("{base}\n{extra}\n"))
                .expect("write the generated wrangler config");
            path
        });
        if let Some(path) = &config_file {
            command.arg("--config").arg(path);
        }
        let debug_log_dir = temp("task-router-e2e-wrangler-logs");
        let _ = std::fs::remove_dir_all(&debug_log_dir);
        for (key, value) in merged_vars(vars) {
            // wrangler rejoins everything after the first `:`, so URLs and JSON survive, and
            // `KEY:` yields an empty string. Every `--var` reaches the Worker as a plain string.
            command.arg("--var").arg(format!("{key}:{value}"));
        }
        command
            .current_dir(manifest_dir())
            // `[build] command` (scripts/build.sh) must not rebuild under other instances.
            .env("TASK_ROUTER_PREBUILT", "1")
            .env("PATH", node_path())
            .env("WRANGLER_LOG_PATH", &debug_log_dir)
            // wrangler dev otherwise records every request and line for its local dashboard,
            // work production does not do.
            .env("X_LOCAL_OBSERVABILITY", "false")
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CI", "true")
            // No npm update check behind the banner, no fetch of `Request.cf` from
            // workers.cloudflare.com: the tests talk to 127.0.0.1 only.
            .env("WRANGLER_HIDE_BANNER", "true")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            // Without a `.dev.vars`, wrangler would read `.env` (and maybe the whole process
            // environment) into the Worker's bindings.
            .env("CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV", "false")
            .env("CLOUDFLARE_INCLUDE_PROCESS_ENV", "false")
            .env("FORCE_COLOR", "0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so `Drop` can take down wrangler and workerd together.
            .process_group(0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("could not spawn {command:?}: {error}"));
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(stdout) = child.stdout.take() {
            capture(stdout, Arc::clone(&log));
        }
        if let Some(stderr) = child.stderr.take() {
            capture(stderr, Arc::clone(&log));
        }
        let mut leftovers = vec![debug_log_dir.clone()];
        leftovers.extend(config_file.iter().chain(&state_dir).cloned());
        let watchdog = spawn_watchdog(child.id(), &leftovers);
        // Returned before waiting, so a panic while waiting still kills the process group.
        Worker {
            child,
            port,
            log,
            config_file,
            state_dir,
            debug_log_dir,
            watchdog,
        }
    }

    /// Waits until the router answers `GET /healthz` on `port`, with any status. An answer
    /// must be the router's (`{"status":…}`): another test's fake Groq on a port wrangler then
    /// fails to take would answer too.
    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let (port, output) = (self.port, self.logs());
                let early = format!("exited with {status} before answering on port {port}");
                return Err(format!("wrangler dev {early}; output:\n{output}"));
            }
            let wait = Duration::from_secs(10);
            let attempt = http::try_send(self.port, "GET", "/healthz", &[], b"", wait);
            if attempt.is_ok_and(|answer| answer.text().starts_with(r#"{"status":"#)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let (port, output) = (self.port, self.logs());
                let late = format!("did not answer GET /healthz on port {port} in time");
                return Err(format!("wrangler dev {late}; output:\n{output}"));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port of the Worker's own workerd socket, behind wrangler's proxy (which wrangler's
    /// debug log records as `userWorkerUrl`): what only a bare runtime shows, such as a caller
    /// who disconnects while the Worker waits (the proxy's hops do not pass that on).
    pub fn own_port(&self) -> u16 {
        let key = r#""userWorkerUrl":{"protocol":"http:","hostname":"127.0.0.1","port":""#;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = std::fs::read_dir(&self.debug_log_dir)
                .into_iter()
                .flatten()
                .flatten();
            let text: String = logs
                .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
                .collect();
            let port = text.rsplit(key).next().filter(|_| text.contains(key));
            if let Some(port) = port.and_then(|rest| rest.split('"').next()?.parse().ok()) {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no `userWorkerUrl` in wrangler's debug log in {}",
                self.debug_log_dir.display()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id of `wrangler` (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything wrangler and the Worker printed so far, stdout and stderr interleaved by line.
    pub fn logs(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every captured line holding a JSON object (the Worker logs one per line); wrangler may
    /// prefix or suffix the object, so each `{` is tried as its start.
    pub fn log_lines_json(&self) -> Vec<Value> {
        self.logs().lines().filter_map(json_object_in).collect()
    }

    /// Polls [`Worker::log_lines_json`] until a line matches `predicate` (logs can trail the
    /// response that caused them), or `timeout` passes.
    pub fn wait_for_log_json(
        &self,
        timeout: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.log_lines_json().into_iter().find(|line| f(line));
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` to the whole process group; `false` if no process is left in it.
    fn signal_group(&self, signal: &str) -> bool {
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }
}

/// A `sh` in its own process group that waits for EOF on its stdin, a pipe only this process
/// holds (std opens it close-on-exec, so no other child inherits it): when the test process ends
/// in any way, the pipe closes, and it stops `group` and removes `leftovers`.
fn spawn_watchdog(group: u32, leftovers: &[PathBuf]) -> Child {
    let script = r#"read -r _; kill -s TERM -- "-$1" 2>/dev/null; i=0
while [ $i -lt 30 ] && kill -s 0 -- "-$1" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
kill -s KILL -- "-$1" 2>/dev/null; shift; rm -rf -- "$@""#;
    Command::new("sh")
        .args(["-c", script, "e2e-watchdog", &group.to_string()])
        .args(leftovers)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn the watchdog sh")
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.signal_group("TERM");
        if !self.group_gone_within(TERM_GRACE) {
            self.signal_group("KILL");
            self.group_gone_within(TERM_GRACE);
        }
        let _ = self.child.wait();
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        if let Some(path) = &self.config_file {
            let _ = std::fs::remove_file(path);
        }
        if let Some(dir) = &self.state_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = std::fs::remove_dir_all(&self.debug_log_dir);
    }
}

impl Worker {
    /// Polls until no process of the group is left, reaping wrangler itself on the way (workerd,
    /// orphaned when wrangler exits first, is reaped by init). Once wrangler is reaped its pid
    /// stays reserved as the group id while any member lives, so `kill -0 -PID` probes safely.
    fn group_gone_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let _ = self.child.try_wait();
            if !self.signal_group("0") {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Appends each line `source` prints to `log`, on a detached thread that ends at EOF.
fn capture(source: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = strip_ansi(&String::from_utf8_lossy(&line));
                    let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                    log.push_str(text.trim_end_matches(['\r', '\n']));
                    log.push('\n');
                }
            }
        }
    });
}

/// `text` without ANSI CSI sequences: wrangler colours `console.warn`/`console.error` boxes
/// (esbuild's formatter, `color: true` hard-coded) whatever `NO_COLOR` says.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameter and intermediate bytes, then one final byte in `@`..=`~`.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The first JSON object starting at some `{` in `line`, trailing text ignored.
fn json_object_in(line: &str) -> Option<Value> {
    line.match_indices('{').find_map(|(start, _)| {
        serde_json::Deserializer::from_str(&line[start..])
            .into_iter::<Value>()
            .next()
            .and_then(Result::ok)
            .filter(Value::is_object)
    })
}
