//! Runs child processes for end-to-end tests: to the end or killed at a deadline, with their
//! output kept; and `python3` set up for the official SDK scripts in `tests/sdk/`.
use super::worker::manifest_dir;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a finished (or killed) child process left.
pub struct Ran {
    /// `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    pub fn output(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// Runs `command` to the end, or kills it at `timeout`.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Ran {
    let piped = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = piped.spawn();
    let mut child = child.unwrap_or_else(|error| panic!("could not spawn {command:?}: {error}"));
    // Drained on threads of their own, so that a full pipe cannot stall the child.
    fn drain(mut source: impl Read + Send + 'static) -> thread::JoinHandle<String> {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = source.read_to_string(&mut text);
            text
        })
    }
    let stdout = drain(child.stdout.take().expect("piped"));
    let stderr = drain(child.stderr.take().expect("piped"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (stdout, stderr) = (stdout.join(), stderr.join());
    let (stdout, stderr) = (stdout.unwrap_or_default(), stderr.unwrap_or_default());
    Ran {
        status,
        stdout,
        stderr,
    }
}

/// `python3` for the SDK scripts: no proxy may stand between it and 127.0.0.1, and no `.pyc` is
/// written into the tree.
pub fn python() -> Command {
    let mut command = Command::new("python3");
    for proxy in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        command.env_remove(proxy).env_remove(proxy.to_lowercase());
    }
    command
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command.current_dir(manifest_dir());
    command
}

/// Panics, saying how to install them, unless `python3` imports the official OpenAI and Groq
/// SDKs; notes a version other than the one `tests/sdk/requirements.txt` pins.
pub fn require_python_sdks() {
    let versions =
        "import openai, groq; print('openai', openai.__version__, 'groq', groq.__version__)";
    let import = run_with_timeout(python().args(["-c", versions]), Duration::from_secs(60));
    let install = "run `pip install -r tests/sdk/requirements.txt`";
    let output = import.output();
    assert!(
        import.succeeded(),
        "`python3` cannot import the official SDKs; {install}\n{output}"
    );
    let (found, pinned) = (import.stdout.trim(), "openai 3.57.0 groq 1.7.0");
    if found != pinned {
        eprintln!("tests: found {found:?}, tests/sdk/requirements.txt pins {pinned:?}");
    }
}
