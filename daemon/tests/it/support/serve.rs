//! `remedy serve` as a child process (the real binary), and the operator commands run against it
//! as an operator would: who runs them and how their token reaches them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{token_yaml, write_private};

/// One run of `remedy serve --config <config>`, its output in a log file; killed if the test ends
/// (or panics) without stopping it.
#[derive(Debug)]
pub struct Serve {
    child: Option<Child>,
    log: PathBuf,
}

impl Serve {
    /// Starts it at `REMEDY_LOG=<level>`, in text or (`json`) JSON lines.
    pub fn start(config: &Path, log: PathBuf, level: &str, json: bool) -> Serve {
        let file = File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_remedy"));
        if json {
            command.args(["--log-format", "json"]);
        }
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("REMEDY_LOG", level)
            .env("NO_COLOR", "1")
            .env_remove("REMEDY_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("remedy serve starts");
        Serve { child: Some(child), log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the daemon was not stopped yet")
    }

    /// Panics (with the log) if the daemon exited by itself.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child().try_wait().expect("try_wait") {
            panic!("remedy serve exited by itself ({status}); its log:\n{}", self.log());
        }
    }

    /// Waits until its API listens on `port`.
    pub async fn wait_for_port(&mut self, port: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            self.assert_running();
            assert!(Instant::now() < deadline, "the API did not listen within {timeout:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the log has a line containing `text`.
    pub async fn wait_for_log(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            self.assert_running();
            assert!(Instant::now() < deadline, "no {text:?} in the log within {timeout:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill_9(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("wait")
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon was not stopped yet").id()
    }

    /// SIGSTOP: the process is frozen (no thread runs, its sockets stay open) until [`Serve::resume`].
    pub fn pause(&mut self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Serve::pause`].
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&mut self, signal: &str) {
        let pid = self.pid();
        let sent = Command::new("kill").args([signal, &pid.to_string()]).status().expect("kill runs");
        assert!(sent.success(), "kill {signal} {pid}");
    }

    /// SIGTERM, and wait (up to `timeout`) for it to exit.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.child().id();
        let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
        assert!(sent.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child().try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "remedy serve did not stop within {timeout:?} of SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Who runs an operator command, and how the token reaches it.
#[derive(Debug, Clone, Copy)]
pub enum Who {
    /// The operator's token in a file (`--token-file`).
    Operator,
    /// The operator's token in REMEDY_TOKEN.
    OperatorEnv,
    /// The reader's token in a file named by REMEDY_TOKEN_FILE.
    Reader,
    /// A token the daemon does not know, in REMEDY_TOKEN.
    Stranger,
}

/// The API tokens of a test: an operator's and a reader's (each also in a private file: the
/// operator's with a line feed, the reader's without), and one nobody was given.
#[derive(Debug)]
pub struct Tokens {
    pub operator_name: String,
    pub operator: String,
    pub reader_name: String,
    pub reader: String,
    pub wrong: String,
    pub operator_file: PathBuf,
    pub reader_file: PathBuf,
}

impl Tokens {
    /// Writes `operator.token` and `reader.token` into `dir`.
    pub fn write(dir: &Path, operator: (&str, &str), reader: (&str, &str), wrong: &str) -> Tokens {
        let tokens = Tokens {
            operator_name: operator.0.to_owned(),
            operator: operator.1.to_owned(),
            reader_name: reader.0.to_owned(),
            reader: reader.1.to_owned(),
            wrong: wrong.to_owned(),
            operator_file: dir.join("operator.token"),
            reader_file: dir.join("reader.token"),
        };
        write_private(&tokens.operator_file, &format!("{}\n", tokens.operator));
        write_private(&tokens.reader_file, &tokens.reader);
        tokens
    }

    /// `api.tokens` naming the two of them (not the wrong one).
    pub fn yaml(&self) -> String {
        token_yaml(&self.operator_name, "security-operator", &self.operator)
            + &token_yaml(&self.reader_name, "security-reader", &self.reader)
    }

    /// `remedy ARGS` against `server` as `who`, with nothing from the test's own environment that
    /// would change what it does.
    pub fn command(&self, server: &str, who: Who, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_remedy"));
        command
            .args(args)
            .env("REMEDY_SERVER", server)
            .env("NO_COLOR", "1")
            .env_remove("REMEDY_TOKEN")
            .env_remove("REMEDY_TOKEN_FILE")
            .env_remove("REMEDY_CA_FILE")
            .env_remove("REMEDY_LOG")
            .env_remove("REMEDY_LOG_FORMAT");
        match who {
            Who::Operator => {
                command.arg("--token-file").arg(&self.operator_file);
            }
            Who::OperatorEnv => {
                command.env("REMEDY_TOKEN", &self.operator);
            }
            Who::Reader => {
                command.env("REMEDY_TOKEN_FILE", &self.reader_file);
            }
            Who::Stranger => {
                command.env("REMEDY_TOKEN", &self.wrong);
            }
        }
        command
    }
}
