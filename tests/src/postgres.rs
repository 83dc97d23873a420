//! A real PostgreSQL for tests: Debian's server binaries started in a temporary directory on a
//! free loopback port, with durability switched off (`fsync=off`) because the data is thrown away.
//!
//! - The binaries come from `CONTACT_PG_BIN` or the newest `/usr/lib/postgresql/*/bin`; if there
//!   are none, starting fails loudly with the install command (tests never skip silently).
//! - PostgreSQL refuses to run as root, so when the effective uid is 0 the server runs as
//!   `nobody` through `setpriv`, in a directory handed to that user.
//! - The server is torn down when the [`PgServer`] is dropped *and* when the test process exits
//!   by any means: it runs under a tiny shell supervisor that blocks reading its stdin (a pipe
//!   from this process) and stops the server and deletes the directory when the pipe closes.
//!   That also covers [`PgServer::shared`], whose static is never dropped.
//!
//! Each test takes its own database from [`PgServer::create_database`].

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Errors starting or using the test server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No PostgreSQL server binaries were found.
    #[error(
        "PostgreSQL server binaries not found (looked in CONTACT_PG_BIN and /usr/lib/postgresql/*/bin); install them with `apt-get install -y postgresql`"
    )]
    BinariesMissing,
    /// A helper command could not be run.
    #[error("failed to run {command}")]
    Spawn {
        /// The command.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A helper command failed.
    #[error("{command} failed: {output}")]
    Command {
        /// The command.
        command: String,
        /// Its stderr and stdout.
        output: String,
    },
    /// The server did not come up in time.
    #[error("PostgreSQL did not become ready within {0:?}; server log:\n{1}")]
    NotReady(Duration, String),
    /// File system trouble in the temporary directory.
    #[error("failed to prepare the temporary directory")]
    Io(#[from] std::io::Error),
}

/// A running throw-away PostgreSQL server.
#[derive(Debug)]
pub struct PgServer {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
    supervisor: Mutex<Option<(Child, ChildStdin)>>,
}

static SHARED: OnceLock<PgServer> = OnceLock::new();
static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The newest PostgreSQL `bin` directory.
pub fn find_bin_dir() -> Result<PathBuf, Error> {
    if let Ok(dir) = std::env::var("CONTACT_PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("postgres").exists() {
            return Ok(dir);
        }
        return Err(Error::BinariesMissing);
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| Error::BinariesMissing)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, b)| b)
        .ok_or(Error::BinariesMissing)
}

/// The effective uid of this process (from `/proc`, to avoid `unsafe` libc calls).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn free_port() -> Result<u16, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl PgServer {
    /// One server for the whole test process, started on first use.
    ///
    /// # Panics
    /// When the server cannot be started: tests that need PostgreSQL must fail, not skip.
    pub fn shared() -> &'static PgServer {
        SHARED.get_or_init(|| {
            PgServer::start().unwrap_or_else(|e| panic!("cannot start test PostgreSQL: {e}"))
        })
    }

    /// Starts a new server (initdb + postgres); stopped on drop.
    pub fn start() -> Result<Self, Error> {
        let bin = find_bin_dir()?;
        let run_as = (effective_uid() == Some(0)).then(|| "nobody".to_owned());
        let dir = tempfile::Builder::new()
            .prefix("contact-pg-")
            .tempdir()?
            .keep();
        if let Some(user) = &run_as {
            run(Command::new("chown").arg(format!("{user}:")).arg(&dir))?;
        }
        let data = dir.join("data");
        let server = PgServer {
            port: free_port()?,
            dir: dir.clone(),
            bin: bin.clone(),
            run_as,
            supervisor: Mutex::new(None),
        };
        run(server.command("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]))?;
        server.launch(&data)?;
        Ok(server)
    }

    /// A command for PostgreSQL binary `name`, run as the unprivileged user when needed.
    fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={user}"),
                    &format!("--regid={}", nogroup()),
                    "--clear-groups",
                    "--",
                ])
                .arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn launch(&self, data: &Path) -> Result<(), Error> {
        let log = self.dir.join("server.log");
        // $1 postgres binary, $2 data dir, $3 port, $4 socket dir, $5 log, $6 dir to delete.
        let script = r#"
"$1" -D "$2" -p "$3" -k "$4" -c listen_addresses=127.0.0.1 -c fsync=off \
  -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
  -c shared_buffers=64MB >"$5" 2>&1 &
pid=$!
echo started
read -r _ignored
kill -QUIT "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$6"
"#;
        let mut cmd = self.command_sh();
        cmd.arg("-c")
            .arg(script)
            .arg("pg-supervisor")
            .arg(self.bin.join("postgres"))
            .arg(data)
            .arg(self.port.to_string())
            .arg(&self.dir)
            .arg(&log)
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            command: "sh (postgres supervisor)".to_owned(),
            source,
        })?;
        let stdin = child.stdin.take().ok_or_else(|| Error::Command {
            command: "sh".to_owned(),
            output: "no stdin pipe".to_owned(),
        })?;
        if let Some(stdout) = child.stdout.take() {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
        }
        *self.supervisor.lock().unwrap_or_else(|e| e.into_inner()) = Some((child, stdin));
        let timeout = Duration::from_secs(30);
        let deadline = Instant::now() + timeout;
        loop {
            let ready = self
                .command("pg_isready")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(Error::NotReady(timeout, log));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn command_sh(&self) -> Command {
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={user}"),
                    &format!("--regid={}", nogroup()),
                    "--clear-groups",
                    "--",
                    "sh",
                ]);
                c
            }
            None => Command::new("sh"),
        }
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a fresh, uniquely named database and returns its URL.
    pub fn create_database(&self) -> Result<String, Error> {
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            DB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run(self.command("createdb").args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            &name,
        ]))?;
        Ok(self.url(&name))
    }

    fn stop(&self) {
        let taken = self
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((mut child, mut stdin)) = taken {
            // Closing the pipe tells the supervisor to stop the server and delete the directory.
            let _ = stdin.write_all(b"stop\n");
            drop(stdin);
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The primary group of `nobody` on Debian (`nogroup`), falling back to the numeric id.
fn nogroup() -> &'static str {
    if std::fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("nogroup:"))
    {
        "nogroup"
    } else {
        "65534"
    }
}

fn run(cmd: &mut Command) -> Result<(), Error> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| Error::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_creates_databases_and_cleans_up() {
        let server = PgServer::start().expect("PostgreSQL must start");
        let a = server.create_database().unwrap();
        let b = server.create_database().unwrap();
        assert_ne!(a, b);
        let dir = server.dir.clone();
        assert!(dir.join("data").exists());
        drop(server);
        assert!(!dir.exists(), "temporary directory removed on drop");
    }
}
