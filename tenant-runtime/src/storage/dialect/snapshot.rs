//! What a logical snapshot needs from each dialect: the catalog (data tables, the foreign keys
//! between them, the schema version), every row of a table as JSON text read in one consistent
//! snapshot, and loading JSON rows back. The dump format, its order and its streaming live in
//! `backup::snapshot`; only the SQL differs here.
//!
//! PostgreSQL reads every table inside one `REPEATABLE READ READ ONLY` transaction, rows as
//! `row_to_json`, and loads them with `json_populate_recordset`. SQLite reads inside one read
//! transaction, which in WAL mode is a snapshot as well, rows as `json_object`, and loads them
//! with `json_extract`. Tables are discovered from the catalog, so new tables need no change.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use sqlx::{AssertSqlSafe, Row};

use super::{Driver, on_driver};
use crate::storage::{Error, GENERAL_CATEGORY_ID, Store};

/// The data tables of a database, the foreign keys between them and the schema version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Catalog {
    /// Table names, sorted (`_sqlx_migrations` and SQLite's own left out).
    pub tables: Vec<String>,
    /// `(table, referenced table)` for every foreign key.
    pub references: Vec<(String, String)>,
    /// The newest applied migration.
    pub schema_version: i64,
}

/// A foreign key: the table that has it and the table it references.
#[derive(sqlx::FromRow)]
struct ForeignKey {
    table_name: String,
    referenced: String,
}

/// `"ident"`, quoted for SQL.
fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

impl Store {
    /// The data tables, their foreign keys and the schema version.
    pub(crate) async fn catalog(&self) -> Result<Catalog, Error> {
        let (tables, references) = match self {
            Driver::Sqlite(pool) => {
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name",
                )
                .fetch_all(pool)
                .await?;
                let mut refs = Vec::new();
                for t in &tables {
                    let to: Vec<String> =
                        sqlx::query_scalar("SELECT \"table\" FROM pragma_foreign_key_list($1)")
                            .bind(t)
                            .fetch_all(pool)
                            .await?;
                    refs.extend(to.into_iter().map(|to| (t.clone(), to)));
                }
                (tables, refs)
            }
            Driver::Postgres(pool) => {
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations' ORDER BY 1",
                )
                .fetch_all(pool)
                .await?;
                let refs: Vec<ForeignKey> = sqlx::query_as(
                    "SELECT cl.relname::text AS table_name, ref.relname::text AS referenced FROM pg_constraint c \
                     JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_class ref ON ref.oid = c.confrelid \
                     JOIN pg_namespace n ON n.oid = cl.relnamespace \
                     WHERE c.contype = 'f' AND n.nspname = current_schema()",
                )
                .fetch_all(pool)
                .await?;
                let refs = refs
                    .into_iter()
                    .map(|f| (f.table_name, f.referenced))
                    .collect();
                (tables, refs)
            }
        };
        let version: Option<i64> = on_driver!(self, |pool| sqlx::query_scalar(
            "SELECT MAX(version) FROM _sqlx_migrations"
        )
        .fetch_one(pool)
        .await?);
        Ok(Catalog {
            tables,
            references,
            schema_version: version.unwrap_or(0),
        })
    }

    /// Rows that count as data in `tables` (migrations seed a few rows, e.g. the General
    /// category, which do not count).
    pub(crate) async fn data_rows(&self, tables: &[String]) -> Result<u64, Error> {
        let mut n = 0u64;
        for t in tables {
            let sql = if t == "categories" {
                format!(
                    "SELECT COUNT(*) FROM {} WHERE id <> '{GENERAL_CATEGORY_ID}'",
                    quote(t)
                )
            } else {
                format!("SELECT COUNT(*) FROM {}", quote(t))
            };
            let c: i64 = on_driver!(self, |pool| sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
                .fetch_one(pool)
                .await?);
            n += c as u64;
        }
        Ok(n)
    }

    /// Hands every row of `tables`, in that order, to `row` as `(table, JSON object text)`, all
    /// read in one consistent snapshot of a live database, one row at a time. Returns the rows
    /// per table.
    pub(crate) async fn dump_rows<E: From<Error>>(
        &self,
        tables: &[String],
        mut row: impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<BTreeMap<String, u64>, E> {
        let mut counts = BTreeMap::new();
        on_driver!(self, |pool| {
            let mut tx = pool.begin().await.map_err(Error::from)?;
            // PostgreSQL: one snapshot for every table (SQLite's read transaction is one).
            if let Driver::Postgres(_) = self {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::from)?;
            }
            for t in tables {
                let sql = match self {
                    Driver::Sqlite(_) => {
                        let cols: Vec<String> = sqlx::query_scalar(
                            "SELECT name FROM pragma_table_info($1) ORDER BY cid",
                        )
                        .bind(t)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(Error::from)?;
                        let pairs = cols
                            .iter()
                            .map(|c| format!("'{}', {}", c.replace('\'', "''"), quote(c)))
                            .collect::<Vec<_>>()
                            .join(", ");
                        format!(
                            "SELECT json_object({pairs}) FROM {} ORDER BY rowid",
                            quote(t)
                        )
                    }
                    Driver::Postgres(_) => {
                        format!("SELECT row_to_json(x)::text FROM {} x", quote(t))
                    }
                };
                let mut n = 0u64;
                let mut rows =
                    sqlx::query_scalar::<_, String>(AssertSqlSafe(sql.as_str())).fetch(&mut *tx);
                while let Some(r) = rows.try_next().await.map_err(Error::from)? {
                    row(t, &r)?;
                    n += 1;
                }
                drop(rows);
                counts.insert(t.clone(), n);
            }
            tx.commit().await.map_err(Error::from)?;
        });
        Ok(counts)
    }

    /// Replaces every row of `tables` (in load order: referenced tables first) with the batches
    /// `next` yields (`(table, JSON array text)`, `None` at the end), in one transaction. `check`
    /// runs after the last batch, before the commit: an error from it, from `next` or from the
    /// database rolls everything back.
    pub(crate) async fn load_rows<E: From<Error>>(
        &self,
        tables: &[String],
        mut next: impl FnMut() -> Result<Option<(String, String)>, E>,
        check: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            Driver::Sqlite(pool) => {
                let mut tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(Error::from)?;
                sqlx::query("PRAGMA defer_foreign_keys = ON")
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::from)?;
                for t in tables.iter().rev() {
                    sqlx::query(AssertSqlSafe(format!("DELETE FROM {}", quote(t))))
                        .execute(&mut *tx)
                        .await
                        .map_err(Error::from)?;
                }
                let mut statements: BTreeMap<String, String> = BTreeMap::new();
                while let Some((t, batch)) = next()? {
                    if !statements.contains_key(&t) {
                        let cols: Vec<String> = sqlx::query_scalar(
                            "SELECT name FROM pragma_table_info($1) ORDER BY cid",
                        )
                        .bind(&t)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(Error::from)?;
                        statements.insert(t.clone(), sqlite_insert(&t, &cols));
                    }
                    sqlx::query(AssertSqlSafe(statements[&t].as_str()))
                        .bind(batch)
                        .execute(&mut *tx)
                        .await
                        .map_err(Error::from)?;
                }
                check()?;
                tx.commit().await.map_err(Error::from)?;
            }
            Driver::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(Error::from)?;
                if !tables.is_empty() {
                    let list = tables
                        .iter()
                        .map(|t| quote(t))
                        .collect::<Vec<_>>()
                        .join(", ");
                    sqlx::query(AssertSqlSafe(format!("TRUNCATE {list} RESTART IDENTITY")))
                        .execute(&mut *tx)
                        .await
                        .map_err(Error::from)?;
                }
                while let Some((t, batch)) = next()? {
                    let sql = format!(
                        "INSERT INTO {q} OVERRIDING SYSTEM VALUE SELECT * FROM json_populate_recordset(NULL::{q}, $1::json)",
                        q = quote(&t)
                    );
                    sqlx::query(AssertSqlSafe(sql.as_str()))
                        .bind(batch)
                        .execute(&mut *tx)
                        .await
                        .map_err(Error::from)?;
                }
                check()?;
                restart_sequences(&mut tx).await?;
                tx.commit().await.map_err(Error::from)?;
            }
        }
        Ok(())
    }
}

/// SQLite's insert of a JSON array of row objects into `table` with `columns`.
fn sqlite_insert(table: &str, columns: &[String]) -> String {
    let names = columns
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(", ");
    let values = columns
        .iter()
        .map(|c| format!("json_extract(value, '$.\"{}\"')", c.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {} ({names}) SELECT {values} FROM json_each($1)",
        quote(table)
    )
}

/// PostgreSQL: identity and serial columns continue after the restored ids.
async fn restart_sequences(tx: &mut sqlx::PgConnection) -> Result<(), Error> {
    let seqs = sqlx::query(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND (is_identity = 'YES' OR column_default LIKE 'nextval%')",
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in seqs {
        let (t, c): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX({c}), 1), MAX({c}) IS NOT NULL) FROM {t}",
            c = quote(&c),
            t = quote(&t)
        );
        sqlx::query(AssertSqlSafe(sql.as_str()))
            .bind(quote(&t))
            .bind(&c)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
