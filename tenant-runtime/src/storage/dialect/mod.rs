//! The one place where SQLite and PostgreSQL differ, and the one way code reaches either.
//!
//! **One mechanism.** Everything that talks to the database is a [`Driver`]: the pools
//! ([`super::Store`]) or a connection borrowed from a write transaction ([`Conn`]). Code
//! runs on whichever driver it holds through [`on_driver!`], which expands the same body once
//! per driver; the body therefore uses only SQL and types both understand (`$1` placeholders,
//! which SQLite accepts too, `ON CONFLICT`, `RETURNING`, epoch-millisecond `BIGINT`s).
//! Statements that several write paths share take a `&mut Conn` and run inside the caller's
//! transaction. `sqlx::Any` would hide the drivers behind one type, but it speaks only a handful
//! of primitive types and hides each driver's options (WAL, busy timeout, `BEGIN IMMEDIATE`).
//!
//! **The differences** are here: how each pool is opened ([`Store::connect`]: WAL, fsync, busy
//! timeout, one connection for an in-memory SQLite), row locks and advisory locks (PostgreSQL
//! only; SQLite serializes writers anyway), batch updates through `UNNEST`, writes inside a
//! `WITH` (PostgreSQL only), the migration folders, and what a logical backup reads and writes
//! ([`snapshot`]: catalogs, rows as JSON). The two folders hold the same schema
//! in each dialect's words; `tests/api/schema.rs` migrates both and fails when they drift.

pub mod snapshot;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{PgConnection, SqliteConnection};

use super::{Error, Result, Store};
use crate::domain::audit::Link;

/// One value per driver: the pools, a transaction or a connection on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub enum Driver<S, P> {
    /// SQLite.
    Sqlite(S),
    /// PostgreSQL.
    Postgres(P),
}

/// Runs `$body` with `$v` bound to the concrete value of `$driver` (a [`Driver`]: the store, a
/// transaction or a connection). The body is compiled once per driver, so it must only use SQL
/// and types both understand. Exported so that tests and benchmarks reach both databases the
/// same way the runtime does.
#[macro_export]
macro_rules! on_driver {
    ($driver:expr, |$v:ident| $body:expr) => {
        match $driver {
            $crate::storage::Driver::Sqlite($v) => $body,
            $crate::storage::Driver::Postgres($v) => $body,
        }
    };
}
pub use crate::on_driver;

/// A connection borrowed from a transaction, for statements several write paths share.
pub(crate) type Conn<'a> = Driver<&'a mut SqliteConnection, &'a mut PgConnection>;

/// Borrows a concrete connection (or a transaction, through `Deref`) as a [`Conn`].
pub(crate) trait AsConn {
    /// The connection as a [`Conn`].
    fn conn(&mut self) -> Conn<'_>;
}

impl AsConn for SqliteConnection {
    fn conn(&mut self) -> Conn<'_> {
        Driver::Sqlite(self)
    }
}

impl AsConn for PgConnection {
    fn conn(&mut self) -> Conn<'_> {
        Driver::Postgres(self)
    }
}

impl<S, P> Driver<S, P> {
    /// Which dialect this driver speaks.
    pub fn dialect(&self) -> Dialect {
        match self {
            Driver::Sqlite(_) => Dialect::Sqlite,
            Driver::Postgres(_) => Dialect::Postgres,
        }
    }
}

/// Pool sizing and timeouts.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long SQLite waits on a locked database before giving up.
    pub busy_timeout: Duration,
    /// SQLite: fsync every commit (`synchronous=FULL`). With `false` (`NORMAL` in WAL mode) a
    /// commit survives a process crash but the last ones may be lost on power failure.
    pub sqlite_fsync_each_commit: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            busy_timeout: Duration::from_secs(10),
            sqlite_fsync_each_commit: true,
        }
    }
}

impl Store {
    /// Connects to `url` (`sqlite:path?mode=rwc`, `sqlite::memory:` or `postgres://…`).
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        if url.starts_with("sqlite:") {
            let connect = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // A webhook is acknowledged only after its commit, so by default every commit is
                // fsynced (FULL). NORMAL is durable against process crashes only.
                .synchronous(if options.sqlite_fsync_each_commit {
                    SqliteSynchronous::Full
                } else {
                    SqliteSynchronous::Normal
                })
                .foreign_keys(true)
                .busy_timeout(options.busy_timeout);
            let in_memory = url.contains(":memory:");
            let pool = SqlitePoolOptions::new()
                // An in-memory database exists per connection: keep exactly one.
                .max_connections(if in_memory {
                    1
                } else {
                    options.max_connections
                })
                .min_connections(if in_memory { 1 } else { 0 })
                .idle_timeout(if in_memory {
                    None
                } else {
                    Some(Duration::from_secs(600))
                })
                .max_lifetime(if in_memory {
                    None
                } else {
                    Some(Duration::from_secs(1800))
                })
                .connect_with(connect)
                .await?;
            Ok(Driver::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            Ok(Driver::Postgres(pool))
        } else {
            Err(Error::UnsupportedUrl(url.to_owned()))
        }
    }
}

/// Which database a [`Driver`] talks to, and what differs between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Advisory lock key that makes one audit chainer at a time on PostgreSQL ("audit" in ASCII).
const PG_AUDIT_LOCK: i64 = 0x0061_7564_6974;

impl Dialect {
    /// The name used in backups and logs.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// The embedded migrations of this dialect.
    pub(crate) fn migrator(self) -> &'static sqlx::migrate::Migrator {
        match self {
            Dialect::Sqlite => &SQLITE_MIGRATOR,
            Dialect::Postgres => &POSTGRES_MIGRATOR,
        }
    }

    /// Reads the allocator lease's epoch (`$1` lease name, `$2` holder) so that a takeover waits
    /// for the reading transaction to commit (`FOR SHARE` on PostgreSQL).
    pub(crate) fn lease_fence(self) -> &'static str {
        match self {
            Dialect::Postgres => {
                "SELECT epoch FROM routing_leader WHERE name = $1 AND holder = $2 FOR SHARE"
            }
            Dialect::Sqlite => "SELECT epoch FROM routing_leader WHERE name = $1 AND holder = $2",
        }
    }

    /// Whether one statement may write several tables through `WITH … INSERT` (PostgreSQL's
    /// data-modifying common table expressions; SQLite has none).
    pub(crate) fn writes_in_with(self) -> bool {
        self == Dialect::Postgres
    }
}

/// Locks a user's row until commit on PostgreSQL, so a capacity read about them holds (claims,
/// picks and transfers take it in user-id order before any conversation row, so they cannot
/// deadlock). Nothing on SQLite, whose write transactions are serialized anyway.
pub(crate) async fn lock_user(conn: &mut Conn<'_>, user_id: &str) -> Result<()> {
    if let Driver::Postgres(c) = conn {
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
            .bind(user_id)
            .execute(&mut **c)
            .await?;
    }
    Ok(())
}

/// Takes the transaction-scoped advisory lock `key` on PostgreSQL, waiting for it, so replicas
/// that run the same job take turns. Nothing on SQLite (writers are serialized).
pub(crate) async fn advisory_lock(conn: &mut Conn<'_>, key: i64) -> Result<()> {
    if let Driver::Postgres(c) = conn {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut **c)
            .await?;
    }
    Ok(())
}

/// Takes the audit chainer's transaction-scoped lock on PostgreSQL; `wait: false` gives up at
/// once when another chainer holds it. Always `true` on SQLite (writers are serialized).
pub(crate) async fn lock_audit_chain(conn: &mut Conn<'_>, wait: bool) -> Result<bool> {
    match conn {
        Driver::Sqlite(_) => Ok(true),
        Driver::Postgres(_) if wait => {
            advisory_lock(conn, PG_AUDIT_LOCK).await?;
            Ok(true)
        }
        Driver::Postgres(c) => Ok(sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(PG_AUDIT_LOCK)
            .fetch_one(&mut **c)
            .await?),
    }
}

/// Gives unchained audit rows their place in the chain (`seq`, `prev_hash`, `hash`); returns
/// how many rows changed. PostgreSQL takes the whole batch in one round trip through `UNNEST`;
/// SQLite, in process, runs one prepared statement per row.
pub(crate) async fn link_audit_rows(conn: &mut Conn<'_>, links: &[Link]) -> Result<u64> {
    match conn {
        Driver::Sqlite(c) => {
            let mut updated = 0;
            for l in links {
                updated += sqlx::query(
                    "UPDATE audit_log SET seq = $1, prev_hash = $2, hash = $3 WHERE id = $4 AND seq IS NULL",
                )
                .bind(l.seq)
                .bind(&l.prev_hash)
                .bind(&l.hash)
                .bind(l.id)
                .execute(&mut **c)
                .await?
                .rows_affected();
            }
            Ok(updated)
        }
        Driver::Postgres(c) => {
            let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for l in links {
                columns.0.push(l.id);
                columns.1.push(l.seq);
                columns.2.push(l.prev_hash.clone());
                columns.3.push(l.hash.clone());
            }
            Ok(sqlx::query(
                "UPDATE audit_log AS a SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash \
                 FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[]) AS v(id, seq, prev_hash, hash) \
                 WHERE a.id = v.id AND a.seq IS NULL",
            )
            .bind(columns.0)
            .bind(columns.1)
            .bind(columns.2)
            .bind(columns.3)
            .execute(&mut **c)
            .await?
            .rows_affected())
        }
    }
}

/// A write transaction. On SQLite it also holds the write gate of its database file.
///
/// SQLite allows one writer at a time; when several connections contend, SQLite's busy handler
/// makes the losers sleep in steps of up to 100 ms even if the lock frees up at once. Queuing
/// writers on an async mutex first hands the lock over without sleeping (the benchmark showed
/// p99 acknowledgement times of ~750 ms without it). The gate is per database file and
/// process; other processes still meet the busy timeout.
pub struct WriteTransaction<DB: sqlx::Database> {
    tx: sqlx::Transaction<'static, DB>,
    _gate: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<DB: sqlx::Database> std::ops::Deref for WriteTransaction<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for WriteTransaction<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

impl<DB: sqlx::Database> WriteTransaction<DB> {
    /// Commits, then releases the gate.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// Opens a write transaction on either pool.
///
/// SQLite gets `BEGIN IMMEDIATE`: a deferred transaction that reads first and writes later can
/// fail with `SQLITE_BUSY` without waiting when another writer got there in between.
pub trait WriteTx {
    /// The sqlx database of the pool.
    type Db: sqlx::Database;
    /// Begins a transaction that will write.
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<WriteTransaction<Self::Db>>> + Send;
}

fn sqlite_gate(pool: &SqlitePool) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    type Gates = std::sync::Mutex<
        std::collections::HashMap<std::path::PathBuf, std::sync::Arc<tokio::sync::Mutex<()>>>,
    >;
    static GATES: std::sync::OnceLock<Gates> = std::sync::OnceLock::new();
    let file = pool.connect_options().get_filename().to_path_buf();
    let mut gates = GATES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    gates.entry(file).or_default().clone()
}

impl WriteTx for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<WriteTransaction<sqlx::Sqlite>> {
        let gate = sqlite_gate(self).lock_owned().await;
        let tx = self.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTransaction {
            tx,
            _gate: Some(gate),
        })
    }
}

impl WriteTx for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> Result<WriteTransaction<sqlx::Postgres>> {
        Ok(WriteTransaction {
            tx: self.begin().await?,
            _gate: None,
        })
    }
}
