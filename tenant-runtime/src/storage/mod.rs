//! Durable state: sqlx repositories over SQLite (the embedded default) or PostgreSQL.
//!
//! [`Store`] is an enum over the two pools rather than `sqlx::Any`: `Any` only speaks a handful
//! of primitive types and hides each driver's options (WAL, busy timeout, `BEGIN IMMEDIATE`).
//! The SQL is written once in the common dialect (`$1` placeholders, which SQLite accepts too,
//! `ON CONFLICT`, `RETURNING`) and each repository method runs it on whichever pool is configured
//! through the [`on_pool!`] macro, which expands the same body once per driver.
//!
//! Timestamps are stored as unix epoch milliseconds (`BIGINT`): SQLite has no timestamp type and
//! sqlx writes RFC 3339 text with a variable number of fractional digits, which would not sort.
//! Migrations live in `migrations/sqlite` and `migrations/postgres`, embedded in the binary.

mod attributes;
mod audit;
mod auth;
mod cursor;
mod directory;
mod inbound;
mod messages;
mod outbox;
mod privacy;
mod routing;
mod workspace;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub(crate) use audit::AuditTx;
pub use audit::{AuditQuery, CHAIN_BATCH};
pub use auth::{AcceptOutcome, Credentials, NewInvite, SessionRecord};
pub use cursor::{EventCursor, GAP_PATIENCE};
pub use inbound::{
    DeliveryReport, GENERAL_CATEGORY_ID, InboundMessage, InboundOutcome, Nonce, ReportOutcome,
};
pub use messages::{ConversationFilter, NewOutbound};
pub use outbox::{OutboxItem, RetryAt};
pub use privacy::{Checkpoint, RetentionStep};
pub use routing::{
    AgentRow, AgentTransfer, ArrivalFacts, CategoryRow, Claim, HeldSkill, NeededSkill,
    OpenConversationRow, PickRefusal, REPLICA_STALE_MS, Return, RoutingRows, Signal,
    TransferOutcome, TransferPlan, TransferTarget,
};
pub use workspace::{CategoryRouting, EventRow};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or failed a query.
    #[error("database query failed")]
    Database(#[source] sqlx::Error),
    /// The schema migrations could not be applied.
    #[error("failed to apply database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The database URL has a scheme other than `sqlite:` or `postgres:`.
    #[error("unsupported database URL `{0}` (expected sqlite:… or postgres://…)")]
    UnsupportedUrl(String),
    /// A row the caller named does not exist.
    #[error("{what} `{id}` not found")]
    NotFound {
        /// The kind of row.
        what: &'static str,
        /// The id that was asked for.
        id: String,
    },
    /// A uniqueness rule was violated (e.g. a duplicate name).
    #[error("{0} already exists")]
    Conflict(String),
    /// A concurrent change invalidated what a write was based on; the operation retries
    /// internally and this only surfaces when retries run out.
    #[error("concurrent change, try again")]
    Contended,
    /// A stored value could not be read back (a bug or a hand-edited row).
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(e)
    }
}

/// Shorthand for storage results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The database handle shared by every part of the runtime.
#[derive(Debug, Clone)]
pub enum Store {
    /// SQLite pool (WAL, foreign keys on, busy timeout).
    Sqlite(SqlitePool),
    /// PostgreSQL pool.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$store`.
///
/// The body is compiled once per driver, so it must only use SQL and types both understand.
/// Appends one row to `conversation_events` (the live stream's and the allocator's source) with
/// the caller's executor, usually its write transaction: `push_event!(tx, id, kind, data, now)`,
/// `data` already JSON text.
macro_rules! push_event {
    ($tx:ident, $conversation:expr, $kind:expr, $data:expr, $now:expr) => {
        sqlx::query(
            "INSERT INTO conversation_events (conversation_id, kind, data, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind($conversation)
        .bind($kind)
        .bind($data)
        .bind($now)
        .execute(&mut *$tx)
    };
}

macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            $crate::storage::Store::Sqlite($pool) => $body,
            $crate::storage::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;
pub(crate) use push_event;

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

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

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
            Ok(Store::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            Ok(Store::Postgres(pool))
        } else {
            Err(Error::UnsupportedUrl(url.to_owned()))
        }
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self {
            Store::Sqlite(_) => &SQLITE_MIGRATOR,
            Store::Postgres(_) => &POSTGRES_MIGRATOR,
        }
    }

    /// Applies the embedded migrations that are not applied yet.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = self.migrator();
        on_pool!(self, |pool| migrator
            .run(pool)
            .await
            .map_err(Error::Migrate))
    }

    /// Readiness: the database answers and every embedded migration is applied.
    pub async fn ready(&self) -> Result<bool> {
        let applied: Vec<i64> = on_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(self.migrator().iter().all(|m| applied.contains(&m.version)))
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }

    /// Number of rows in `table` (for tests and the benchmark; the name is checked against a list).
    pub async fn count(&self, table: &str) -> Result<i64> {
        let sql = match table {
            "contacts" => "SELECT COUNT(*) FROM contacts",
            "contact_identities" => "SELECT COUNT(*) FROM contact_identities",
            "conversations" => "SELECT COUNT(*) FROM conversations",
            "messages" => "SELECT COUNT(*) FROM messages",
            "outbox" => "SELECT COUNT(*) FROM outbox",
            "webhook_nonces" => "SELECT COUNT(*) FROM webhook_nonces",
            "conversation_events" => "SELECT COUNT(*) FROM conversation_events",
            "conversation_notes" => "SELECT COUNT(*) FROM conversation_notes",
            "users" => "SELECT COUNT(*) FROM users",
            "skills" => "SELECT COUNT(*) FROM skills",
            "categories" => "SELECT COUNT(*) FROM categories",
            other => return Err(Error::Corrupt(format!("no such table `{other}`"))),
        };
        Ok(on_pool!(self, |pool| sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await?))
    }
}

/// The current time as stored: unix epoch milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Converts stored milliseconds back to a timestamp.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// A fresh, time-ordered id (UUID v7) as stored and exposed by the API.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// True when `e` is a uniqueness or serialization conflict worth retrying the transaction for.
pub(crate) fn is_retryable(e: &Error) -> bool {
    match e {
        Error::Contended => true,
        Error::Database(sqlx::Error::Database(db)) => {
            db.is_unique_violation()
                || matches!(db.code().as_deref(), Some("40001") | Some("40P01"))
                || db.message().contains("database is locked")
        }
        _ => false,
    }
}
