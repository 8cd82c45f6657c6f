//! Shared by the in-process integration tests: a throwaway database per test on the real
//! PostgreSQL server named by `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432`,
//! trust auth), so tests run in parallel without seeing each other's rows.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Connection options for the test server (no database chosen).
pub fn server_options() -> PgConnectOptions {
    let url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    PgConnectOptions::from_str(&url).expect("TEST_DATABASE_URL is a PostgreSQL URL")
}

/// A database that exists for one test and is dropped (best effort) when the test ends,
/// whether it passed or panicked.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    /// Creates `<prefix>_<uuid>`.
    pub async fn create(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = server_options()
            .database("postgres")
            .connect()
            .await
            .expect("PostgreSQL is reachable (set TEST_DATABASE_URL)");
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        Self { name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot block on its own futures: use a
        // throwaway runtime on another thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut admin) = server_options().database("postgres").connect().await {
                    let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}
