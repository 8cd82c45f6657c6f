//! A primary PostgreSQL and a streaming replica of it, both the test's own, for the read
//! replica test (`database.read_url`).
//!
//! The primary is `initdb` in a temporary directory on a free loopback port with
//! `wal_level = replica` and trust authentication (replication connections from 127.0.0.1
//! included); the replica is `pg_basebackup -R` of it (so it streams from the primary as a
//! hot standby) on another free port. Never the machine's shared server: a base backup copies
//! the whole cluster. As in [`crate::pg`], the binaries run as `postgres` when we are root.
//! Dropping the value stops both servers and removes the directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::pg::{append, pg_bin_dir, pg_command, run, running_as_root};
use crate::{free_port, log_dir, unique_suffix};

/// The database the tracker uses on both servers.
pub const DB: &str = "sagas";

/// A running primary and its streaming replica.
#[derive(Debug)]
pub struct ReplicatedPg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    primary_port: u16,
    replica_port: u16,
}

impl ReplicatedPg {
    /// Creates and starts the primary, creates [`DB`] on it, then base-backs it up into a
    /// replica and starts that; returns once the replica streams.
    pub fn start() -> anyhow::Result<Self> {
        let bin = pg_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("saga-tracker-replica-")
            .tempdir()
            .context("creating a directory for the test PostgreSQL pair")?;
        if running_as_root() {
            let mut c = Command::new("chown");
            c.args(["postgres:postgres"]).arg(dir.path());
            run(c, "chown of the PostgreSQL directory")?;
        }
        let primary_port = free_port()?;
        let mut pair = Self {
            dir,
            bin,
            primary_port,
            replica_port: 0,
        };
        let primary = pair.primary_data();
        let mut init = pg_command(&pair.bin, "initdb");
        init.args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
            .args(["--no-sync", "-D"])
            .arg(&primary);
        run(init, "initdb")?;
        append(
            &primary.join("postgresql.conf"),
            &format!(
                "\nlisten_addresses = '127.0.0.1'\nport = {primary_port}\n\
                 unix_socket_directories = '{sock}'\nwal_level = replica\nmax_wal_senders = 4\n\
                 hot_standby = on\nfsync = off\nmax_connections = 40\n",
                sock = pair.dir.path().display()
            ),
        )?;
        std::fs::write(
            primary.join("pg_hba.conf"),
            "local all         all                trust\n\
             host  all         all  127.0.0.1/32  trust\n\
             host  replication all  127.0.0.1/32  trust\n",
        )
        .context("writing pg_hba.conf")?;
        pair.pg_ctl(&primary, "start")?;
        pair.psql(
            pair.primary_port,
            "postgres",
            &format!("create database {DB}"),
        )?;

        let replica = pair.replica_data();
        let mut backup = pg_command(&pair.bin, "pg_basebackup");
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary_port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-X", "stream", "-R", "--no-sync", "--checkpoint=fast", "-D"])
            .arg(&replica);
        run(backup, "pg_basebackup")?;
        pair.replica_port = free_port()?;
        // The copied postgresql.conf names the primary's port; a later line wins.
        append(
            &replica.join("postgresql.conf"),
            &format!("\nport = {}\n", pair.replica_port),
        )?;
        pair.pg_ctl(&replica, "start")?;
        Ok(pair)
    }

    fn primary_data(&self) -> PathBuf {
        self.dir.path().join("primary")
    }

    fn replica_data(&self) -> PathBuf {
        self.dir.path().join("replica")
    }

    fn log_of(data: &Path) -> PathBuf {
        data.with_extension("log")
    }

    fn pg_ctl(&self, data: &Path, action: &str) -> anyhow::Result<()> {
        let mut c = pg_command(&self.bin, "pg_ctl");
        c.args(["-w", "-t", "60", "-D"]).arg(data);
        if action == "start" {
            c.arg("-l").arg(Self::log_of(data));
        } else {
            c.args(["-m", "fast"]);
        }
        c.arg(action);
        run(c, &format!("pg_ctl {action} ({})", data.display())).map(drop)
    }

    /// `postgres://postgres@127.0.0.1:<primary>/sagas`.
    pub fn primary_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DB}", self.primary_port)
    }

    /// `postgres://postgres@127.0.0.1:<replica>/sagas`.
    pub fn replica_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{DB}", self.replica_port)
    }

    /// Stops the replica (`pg_ctl stop -m fast`): its port then refuses connections.
    pub fn stop_replica(&self) -> anyhow::Result<()> {
        self.pg_ctl(&self.replica_data(), "stop")
    }

    /// Starts the stopped replica again; it resumes streaming from where it stopped.
    pub fn start_replica(&self) -> anyhow::Result<()> {
        self.pg_ctl(&self.replica_data(), "start")
    }

    /// Runs SQL on the replica as the superuser, in [`DB`]; returns the first line.
    pub fn replica_query(&self, sql: &str) -> anyhow::Result<String> {
        self.psql(self.replica_port, DB, sql)
    }

    /// Runs SQL on the primary as the superuser, in [`DB`]; returns the first line.
    pub fn primary_query(&self, sql: &str) -> anyhow::Result<String> {
        self.psql(self.primary_port, DB, sql)
    }

    fn psql(&self, port: u16, db: &str, sql: &str) -> anyhow::Result<String> {
        let mut c = pg_command(&self.bin, "psql");
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ]);
        let out = run(c, "psql")?;
        match out.lines().next() {
            Some(line) => Ok(line.to_owned()),
            None if out.is_empty() => Ok(String::new()),
            None => bail!("`{sql}` printed nothing"),
        }
    }
}

impl Drop for ReplicatedPg {
    fn drop(&mut self) {
        for data in [self.replica_data(), self.primary_data()] {
            let mut stop = pg_command(&self.bin, "pg_ctl");
            stop.args(["-w", "-t", "30", "-m", "immediate", "-D"])
                .arg(&data)
                .arg("stop");
            let _ = stop.output();
            if let Ok(logs) = log_dir() {
                let name = data.file_name().map(|n| n.to_string_lossy().into_owned());
                let _ = std::fs::copy(
                    Self::log_of(&data),
                    logs.join(format!(
                        "postgres-{}-{}.log",
                        name.unwrap_or_default(),
                        unique_suffix()
                    )),
                );
            }
        }
        // The TempDir removes the directory (owned by postgres, removable by root).
    }
}
