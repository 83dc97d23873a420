//! Durable state: sqlx repositories over SQLite (the embedded default) or PostgreSQL.
//!
//! [`Store`] holds the pool of either driver; the SQL is written once and runs on whichever is
//! configured, and what differs between the two lives in [`dialect`] (read it first). Rows are
//! `#[derive(FromRow)]` structs private to their repository; what leaves storage is the API
//! types of `domain::api` or the plain records declared here.
//!
//! Timestamps are stored as unix epoch milliseconds (`BIGINT`): SQLite has no timestamp type and
//! sqlx writes RFC 3339 text with a variable number of fractional digits, which would not sort.
//! Migrations live in `migrations/sqlite` and `migrations/postgres`, embedded in the binary, and
//! `tests/api/schema.rs` fails when the two schemas drift apart.

mod attributes;
mod audit;
mod auth;
mod cursor;
pub mod dialect;
mod directory;
mod inbound;
mod messages;
mod outbox;
mod privacy;
mod routing;
mod workspace;

use chrono::{DateTime, TimeZone, Utc};
pub use dialect::Driver;
pub use dialect::on_driver;
pub(crate) use dialect::{AsConn, Conn};
pub use dialect::{ConnectOptions, Dialect, WriteTx};
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

pub use audit::AuditQuery;
pub(crate) use audit::CHAIN_BATCH;
pub(crate) use audit::append_audit;
pub use auth::{AcceptOutcome, NewInvite};
pub(crate) use cursor::EventCursor;
pub use inbound::{
    DeliveryReport, GENERAL_CATEGORY_ID, InboundMessage, InboundOutcome, Nonce, ReportOutcome,
};
pub use messages::{ConversationFilter, NewOutbound};
pub(crate) use outbox::OutboxItem;
pub use outbox::RetryAt;
pub(crate) use privacy::{Checkpoint, RetentionStep};
pub(crate) use routing::{
    AgentRow, AgentTransfer, CategoryRow, HeldSkill, NeededSkill, OpenConversationRow, Return,
    TransferOutcome, TransferPlan, TransferTarget,
};
pub use routing::{Claim, PickRefusal};
pub(crate) use workspace::EventRow;

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

/// Two text columns read as `owner` and `item` (a skill of a conversation, an attribute of a
/// contact, …): the one row shape many reads share.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Pair {
    /// What the item belongs to (or the key).
    pub owner: String,
    /// The item (or the value).
    pub item: String,
}

/// A stored proficiency level (1..=5 by the schema's CHECK) as the vocabulary's.
pub(crate) fn level(stored: Option<i64>) -> Option<u8> {
    stored.and_then(|l| u8::try_from(l).ok())
}

/// A stored name that no longer parses: a bug or a hand-edited row.
pub(crate) fn corrupt(e: crate::domain::Error) -> Error {
    Error::Corrupt(e.to_string())
}

/// Shorthand for storage results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The database handle shared by every part of the runtime: the SQLite pool (WAL, foreign keys
/// on, busy timeout) or the PostgreSQL pool.
pub type Store = Driver<SqlitePool, PgPool>;

/// Appends one row to `conversation_events` (the live stream's and the allocator's source)
/// inside the caller's transaction; `data` is JSON text.
pub(crate) async fn push_event(
    conn: &mut Conn<'_>,
    conversation_id: &str,
    kind: &str,
    data: String,
    now: i64,
) -> Result<()> {
    on_driver!(conn, |c| {
        sqlx::query(
        "INSERT INTO conversation_events (conversation_id, kind, data, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(conversation_id)
    .bind(kind)
    .bind(data)
    .bind(now)
    .execute(&mut **c)
    .await?;
    });
    Ok(())
}

impl Store {
    /// Applies the embedded migrations that are not applied yet.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = self.dialect().migrator();
        on_driver!(self, |pool| migrator
            .run(pool)
            .await
            .map_err(Error::Migrate))
    }

    /// Readiness: the database answers and every embedded migration is applied.
    pub async fn ready(&self) -> Result<bool> {
        let applied: Vec<i64> = on_driver!(self, |pool| {
            sqlx::query_scalar(
                "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(self
            .dialect()
            .migrator()
            .iter()
            .all(|m| applied.contains(&m.version)))
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        on_driver!(self, |pool| pool.close().await)
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
        Ok(on_driver!(self, |pool| sqlx::query_scalar(sql)
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
