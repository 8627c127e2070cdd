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
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("could not spawn {command:?}: {error}"));
    // Drained on their own threads so a full pipe cannot stall the child.
    let drain = |source: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut source) = source {
                let _ = source.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
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
    Ran {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// `python3` for the SDK script: no proxy may stand between it and 127.0.0.1, and no `.pyc` is
/// written into the tree.
pub fn python() -> Command {
    let mut command = Command::new("python3");
    for proxy in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(proxy);
    }
    command
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(manifest_dir());
    command
}

/// Panics, saying how to install them, unless `python3` imports the official OpenAI and Groq
/// SDKs; notes a version other than the one `tests/sdk/requirements.txt` pins.
pub fn require_python_sdks() {
    let import = run_with_timeout(
        python().args([
            "-c",
            "import openai, groq; print('openai', openai.__version__, 'groq', groq.__version__)",
        ]),
        Duration::from_secs(60),
    );
    assert!(
        import.succeeded(),
        "the official Python SDKs are not importable by `python3`; run \
         `pip install -r tests/sdk/requirements.txt`\n{}",
        import.output()
    );
    let pinned = "openai 3.57.0 groq 1.7.0";
    if import.stdout.trim() != pinned {
        eprintln!(
            "tests: found {:?}, tests/sdk/requirements.txt pins {pinned:?}",
            import.stdout.trim()
        );
    }
}
