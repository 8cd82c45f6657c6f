//! A PostgreSQL server of the test's own, for the transport-security tests: `ssl = on` with a
//! certificate the test's CA issued, and a `pg_hba.conf` under which the tracker's role can log
//! in only over TLS and only with its password (`hostssl … scram-sha-256`; plaintext TCP is
//! rejected). The shared server the other tests use (trust auth) cannot prove that.
//!
//! It is the machine's own PostgreSQL binaries (`initdb`, `pg_ctl`), run as the `postgres`
//! user when the test runs as root (PostgreSQL refuses to run as root), in a temporary
//! directory, on a free loopback port. The superuser connects only through the Unix socket in
//! that directory. Dropping the value stops the server (`pg_ctl stop -m immediate`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context};

use crate::pki::{write_private, CertFiles};
use crate::{free_port, log_dir, unique_suffix};

/// The role the tracker logs in as, and its database.
pub const TRACKER_ROLE: &str = "tracker";
pub const TRACKER_DB: &str = "sagas";

/// A running private PostgreSQL server.
#[derive(Debug)]
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The password of [`TRACKER_ROLE`].
    pub password: String,
}

/// `/usr/lib/postgresql/<major>/bin`, the newest installed, or `PG_BIN_DIR`.
pub(crate) fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut majors: Vec<u32> = std::fs::read_dir(root)
        .with_context(|| format!("listing {} (is PostgreSQL installed?)", root.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    majors.sort_unstable();
    let major = majors
        .last()
        .context("no PostgreSQL server binaries under /usr/lib/postgresql (set PG_BIN_DIR)")?;
    Ok(root.join(major.to_string()).join("bin"))
}

pub(crate) fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A command for a PostgreSQL binary, as `postgres` when we are root.
pub(crate) fn pg_command(bin: &Path, program: &str) -> Command {
    let path = bin.join(program);
    if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(path);
        cmd
    } else {
        Command::new(path)
    }
}

pub(crate) fn run(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl PgServer {
    /// Initialises and starts a server whose TLS certificate is `server_cert`.
    pub fn start(server_cert: &CertFiles) -> anyhow::Result<Self> {
        let bin = pg_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("saga-tracker-pg-")
            .tempdir()
            .context("creating a directory for the test PostgreSQL")?;
        let data = dir.path().join("data");
        if running_as_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres"]).arg(dir.path());
                    c
                },
                "chown of the PostgreSQL directory",
            )?;
        }
        let mut init = pg_command(&bin, "initdb");
        init.args([
            "--auth-local=trust",
            "--auth-host=reject",
            "--username=postgres",
        ])
        .args(["--encoding=UTF8", "--no-sync", "-D"])
        .arg(&data);
        run(init, "initdb")?;

        // The server's key must belong to the server's user and be private.
        let cert = data.join("server.crt");
        let key = data.join("server.key");
        std::fs::copy(&server_cert.cert, &cert).context("copying the server certificate")?;
        write_private(
            &key,
            &std::fs::read(&server_cert.key).context("reading the server key")?,
        )?;
        if running_as_root() {
            let mut c = Command::new("chown");
            c.args(["postgres:postgres"]).arg(&cert).arg(&key);
            run(c, "chown of the server certificate")?;
        }
        let port = free_port()?;
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{sock}'\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             password_encryption = 'scram-sha-256'\nfsync = off\nmax_connections = 40\n",
            sock = dir.path().display()
        );
        append(&data.join("postgresql.conf"), &conf)?;
        // Order matters: the first matching line decides. Plain TCP is refused outright, so a
        // client that does not use TLS cannot log in even with the right password.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local   all  postgres                trust\n\
             hostssl all  all       127.0.0.1/32  scram-sha-256\n\
             host    all  all       127.0.0.1/32  reject\n",
        )
        .context("writing pg_hba.conf")?;
        // Inside the server's own directory (writable by its user); copied to the test logs
        // when the server is dropped.
        let log = dir.path().join("postgres.log");
        let mut start = pg_command(&bin, "pg_ctl");
        start
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("start");
        run(start, "pg_ctl start")?;
        let server = Self {
            dir,
            bin,
            port,
            password: format!("pw-{}", unique_suffix()),
        };
        server.psql(&format!(
            "create role {TRACKER_ROLE} login password '{}'",
            server.password
        ))?;
        // `create database` cannot share a transaction (one `-c`) with anything else.
        server.psql(&format!(
            "create database {TRACKER_DB} owner {TRACKER_ROLE}"
        ))?;
        Ok(server)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://tracker@<host>:<port>/sagas`, without a password: the tests supply it
    /// through `database.password_file`.
    pub fn url(&self, host: &str) -> String {
        format!(
            "postgres://{TRACKER_ROLE}@{host}:{}/{TRACKER_DB}",
            self.port
        )
    }

    /// Runs SQL as the superuser over the Unix socket, in database `postgres`.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        self.psql_in("postgres", sql)
    }

    /// Reads one value back as the superuser.
    pub fn query_one(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let out = self.psql_in(db, sql)?;
        match out.lines().next() {
            Some(line) => Ok(line.to_owned()),
            None => bail!("`{sql}` returned no row"),
        }
    }

    /// `psql` as the superuser in `db`: unaligned, tuples only, stop at the first error.
    fn psql_in(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let mut c = pg_command(&self.bin, "psql");
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ]);
        run(c, "psql")
    }
}

pub(crate) fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let mut stop = pg_command(&self.bin, "pg_ctl");
        stop.args(["-w", "-t", "30", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop");
        let _ = stop.output();
        if let Ok(logs) = log_dir() {
            let _ = std::fs::copy(
                self.dir.path().join("postgres.log"),
                logs.join(format!("postgres-{}-{}.log", self.port, unique_suffix())),
            );
        }
    }
}
