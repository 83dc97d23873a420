//! Logical snapshots: every table's rows as JSON, read in one consistent transaction, and loaded
//! back in foreign-key order.
//!
//! The dump is JSON Lines: a header line (`{"format", "database", "schemaVersion", "tables"}`,
//! tables in load order), then one line per row, `{"t": table, "r": {column: value}}`.
//! PostgreSQL reads every table inside one `REPEATABLE READ READ ONLY` transaction (one
//! snapshot for all tables), rows as `row_to_json`, and loads them with
//! `json_populate_recordset`. SQLite reads inside one read transaction, which in WAL mode is a
//! snapshot as well (writers go on and are not seen), rows as `json_object`, and loads them with
//! `json_extract`. Tables are discovered from the catalog, so tables other branches add are
//! included without changes here.
//!
//! Both directions stream: [`write_dump`] writes each row as the database returns it, and
//! [`load_from`] reads rows one at a time and inserts them in batches of [`LOAD_BATCH`], so
//! memory does not grow with the database. [`Dump`] (everything in memory) remains for tests
//! and comparisons.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};

use futures::TryStreamExt;

use serde::{Deserialize, Serialize};
// Identifiers in the dynamic SQL below come from the database's own catalog and are quoted.
use sqlx::{AssertSqlSafe, Row};

use super::Error;
use crate::storage::Store;

/// Dump format version.
pub const DUMP_FORMAT: u32 = 1;
/// Rows per insert statement on load.
pub const LOAD_BATCH: usize = 500;

/// The first line of a dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DumpHeader {
    /// [`DUMP_FORMAT`].
    pub format: u32,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// The newest applied migration.
    pub schema_version: i64,
    /// Tables in load (foreign-key) order.
    pub tables: Vec<String>,
}

/// A parsed dump.
#[derive(Debug, Clone, PartialEq)]
pub struct Dump {
    /// The header.
    pub header: DumpHeader,
    /// Rows per table, each a JSON object.
    pub rows: BTreeMap<String, Vec<serde_json::Value>>,
}

impl Dump {
    /// Rows per table.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.header
            .tables
            .iter()
            .map(|t| (t.clone(), self.rows.get(t).map_or(0, |r| r.len() as u64)))
            .collect()
    }

    /// Serializes as JSON Lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(&self.header).unwrap_or_default();
        out.push(b'\n');
        for t in &self.header.tables {
            for r in self.rows.get(t).into_iter().flatten() {
                let line = serde_json::json!({ "t": t, "r": r });
                out.extend(serde_json::to_vec(&line).unwrap_or_default());
                out.push(b'\n');
            }
        }
        out
    }

    /// Parses JSON Lines.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let mut reader = DumpReader::new(bytes)?;
        let mut rows: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        while let Some((t, r)) = reader.next_row()? {
            rows.entry(t).or_default().push(r);
        }
        Ok(Self {
            header: reader.header().clone(),
            rows,
        })
    }

    /// Every row as a sorted list of `table<TAB>row JSON` lines: equal for equal contents.
    pub fn canonical_rows(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .rows
            .iter()
            .flat_map(|(t, rows)| {
                rows.iter()
                    .map(move |r| format!("{t}\t{}", canonical_json(r)))
            })
            .collect();
        out.sort();
        out
    }
}

/// Reads a dump line by line: the header first, then one row at a time. Rows must come grouped
/// by table in the header's order (as [`write_dump`] writes them).
pub struct DumpReader<R: BufRead> {
    inner: R,
    header: DumpHeader,
    line: Vec<u8>,
    line_no: u64,
    table: usize,
}

impl<R: BufRead> DumpReader<R> {
    /// Reads and checks the header line.
    pub fn new(inner: R) -> Result<Self, Error> {
        let mut reader = Self {
            inner,
            header: DumpHeader {
                format: DUMP_FORMAT,
                database: String::new(),
                schema_version: 0,
                tables: Vec::new(),
            },
            line: Vec::new(),
            line_no: 0,
            table: 0,
        };
        if !reader.read_line()? {
            return Err(Error::Format("empty dump".to_owned()));
        }
        let header: DumpHeader = serde_json::from_slice(&reader.line)
            .map_err(|e| Error::Format(format!("header: {e}")))?;
        if header.format != DUMP_FORMAT {
            return Err(Error::Format(format!(
                "dump format {} (this build reads {DUMP_FORMAT})",
                header.format
            )));
        }
        reader.header = header;
        Ok(reader)
    }

    /// The header.
    pub fn header(&self) -> &DumpHeader {
        &self.header
    }

    /// The next non-empty line into `self.line`; false at the end.
    fn read_line(&mut self) -> Result<bool, Error> {
        loop {
            self.line.clear();
            let n = self
                .inner
                .read_until(b'\n', &mut self.line)
                .map_err(|e| super::stream::backup_error(e, "reading the dump"))?;
            if n == 0 {
                return Ok(false);
            }
            self.line_no += 1;
            if self.line.last() == Some(&b'\n') {
                self.line.pop();
            }
            if !self.line.is_empty() {
                return Ok(true);
            }
        }
    }

    /// The next row and its table, or `None` at the end of the dump.
    pub fn next_row(&mut self) -> Result<Option<(String, serde_json::Value)>, Error> {
        #[derive(Deserialize)]
        struct Line {
            t: String,
            r: serde_json::Value,
        }
        if !self.read_line()? {
            return Ok(None);
        }
        let n = self.line_no;
        let l: Line = serde_json::from_slice(&self.line)
            .map_err(|e| Error::Format(format!("row line {n}: {e}")))?;
        // Tables only move forward: each is one contiguous run, in load order.
        let Some(i) = self.header.tables[self.table..]
            .iter()
            .position(|t| *t == l.t)
        else {
            return Err(Error::Format(format!(
                "row line {n}: table `{}` is unknown or out of order",
                l.t
            )));
        };
        if !l.r.is_object() {
            return Err(Error::Format(format!(
                "row line {n}: the row is not an object"
            )));
        }
        self.table += i;
        Ok(Some((l.t, l.r)))
    }
}

/// Reads every row of `reader` and counts them per table, without a database: the check that
/// precedes a restore.
pub fn count_rows<R: BufRead>(reader: &mut DumpReader<R>) -> Result<BTreeMap<String, u64>, Error> {
    let mut counts: BTreeMap<String, u64> = reader
        .header()
        .tables
        .iter()
        .map(|t| (t.clone(), 0))
        .collect();
    while let Some((t, _)) = reader.next_row()? {
        *counts.entry(t).or_default() += 1;
    }
    Ok(counts)
}

/// JSON with object keys sorted (serde_json's map is ordered by key without `preserve_order`).
fn canonical_json(v: &serde_json::Value) -> String {
    let sorted: BTreeMap<&String, &serde_json::Value> = match v {
        serde_json::Value::Object(m) => m.iter().collect(),
        _ => return v.to_string(),
    };
    serde_json::to_string(&sorted).unwrap_or_default()
}

/// Orders `tables` so that every table comes after the tables it references.
pub fn load_order(
    tables: &[String],
    references: &[(String, String)],
) -> Result<Vec<String>, Error> {
    let set: BTreeSet<&String> = tables.iter().collect();
    let mut deps: BTreeMap<&String, BTreeSet<&String>> =
        tables.iter().map(|t| (t, BTreeSet::new())).collect();
    for (from, to) in references {
        if from != to
            && set.contains(to)
            && let Some(d) = deps.get_mut(from)
        {
            d.insert(to);
        }
    }
    let mut out: Vec<String> = Vec::with_capacity(tables.len());
    while !deps.is_empty() {
        let ready: Vec<&String> = deps
            .iter()
            .filter(|(_, d)| d.iter().all(|x| out.contains(x)))
            .map(|(t, _)| *t)
            .collect();
        if ready.is_empty() {
            return Err(Error::Format(format!(
                "foreign keys form a cycle among {:?}",
                deps.keys().collect::<Vec<_>>()
            )));
        }
        for t in ready {
            deps.remove(t);
            out.push(t.clone());
        }
    }
    Ok(out)
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The tables that hold data, with the foreign keys between them and the schema version.
async fn catalog(store: &Store) -> Result<(Vec<String>, Vec<(String, String)>, i64), Error> {
    Ok(match store {
        Store::Sqlite(pool) => {
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
            let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
                .fetch_one(pool)
                .await?;
            (tables, refs, v.unwrap_or(0))
        }
        Store::Postgres(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations' ORDER BY 1",
            )
            .fetch_all(pool)
            .await?;
            let refs: Vec<(String, String)> = sqlx::query_as(
                "SELECT cl.relname::text, ref.relname::text FROM pg_constraint c \
                 JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_class ref ON ref.oid = c.confrelid \
                 JOIN pg_namespace n ON n.oid = cl.relnamespace \
                 WHERE c.contype = 'f' AND n.nspname = current_schema()",
            )
            .fetch_all(pool)
            .await?;
            let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
                .fetch_one(pool)
                .await?;
            (tables, refs, v.unwrap_or(0))
        }
    })
}

/// The schema version (newest applied migration) of `store`.
pub async fn schema_version(store: &Store) -> Result<i64, Error> {
    Ok(catalog(store).await?.2)
}

/// What [`write_dump`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpSummary {
    /// The header line.
    pub header: DumpHeader,
    /// Rows per table.
    pub counts: BTreeMap<String, u64>,
}

/// Writes one row line. The row is the database's own JSON text, not re-parsed: the line is
/// assembled around it.
fn write_row(out: &mut impl Write, table_json: &str, row: &str) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Format(format!("writing the dump: {e}"));
    out.write_all(b"{\"t\":").map_err(io)?;
    out.write_all(table_json.as_bytes()).map_err(io)?;
    out.write_all(b",\"r\":").map_err(io)?;
    out.write_all(row.as_bytes()).map_err(io)?;
    out.write_all(b"}\n").map_err(io)
}

/// Streams every row of every table, read in one consistent snapshot on a live database, into
/// `out` as JSON Lines. Holds one row at a time.
pub async fn write_dump(store: &Store, out: &mut impl Write) -> Result<DumpSummary, Error> {
    let (tables, refs, schema_version) = catalog(store).await?;
    let order = load_order(&tables, &refs)?;
    let header = DumpHeader {
        format: DUMP_FORMAT,
        database: backend_name(store).to_owned(),
        schema_version,
        tables: order.clone(),
    };
    let mut line = serde_json::to_vec(&header).map_err(|e| Error::Format(e.to_string()))?;
    line.push(b'\n');
    out.write_all(&line)
        .map_err(|e| Error::Format(format!("writing the dump: {e}")))?;
    let mut counts = BTreeMap::new();
    match store {
        Store::Sqlite(pool) => {
            let mut tx = pool.begin().await?;
            for t in &order {
                let cols: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                        .bind(t)
                        .fetch_all(&mut *tx)
                        .await?;
                let pairs = cols
                    .iter()
                    .map(|c| format!("'{}', {}", c.replace('\'', "''"), quote(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "SELECT json_object({pairs}) FROM {} ORDER BY rowid",
                    quote(t)
                );
                let table_json = serde_json::Value::String(t.clone()).to_string();
                let mut n = 0u64;
                let mut rows =
                    sqlx::query_scalar::<_, String>(AssertSqlSafe(sql.as_str())).fetch(&mut *tx);
                while let Some(row) = rows.try_next().await? {
                    write_row(out, &table_json, &row)?;
                    n += 1;
                }
                drop(rows);
                counts.insert(t.clone(), n);
            }
            tx.commit().await?;
        }
        Store::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
            for t in &order {
                let sql = format!("SELECT row_to_json(x)::text FROM {} x", quote(t));
                let table_json = serde_json::Value::String(t.clone()).to_string();
                let mut n = 0u64;
                let mut rows =
                    sqlx::query_scalar::<_, String>(AssertSqlSafe(sql.as_str())).fetch(&mut *tx);
                while let Some(row) = rows.try_next().await? {
                    write_row(out, &table_json, &row)?;
                    n += 1;
                }
                drop(rows);
                counts.insert(t.clone(), n);
            }
            tx.commit().await?;
        }
    }
    Ok(DumpSummary { header, counts })
}

/// Reads every row of every table in one consistent snapshot into memory (tests, comparisons;
/// backups stream with [`write_dump`]).
pub async fn dump(store: &Store) -> Result<Dump, Error> {
    let mut bytes = Vec::new();
    write_dump(store, &mut bytes).await?;
    Dump::from_bytes(&bytes)
}

/// `sqlite` or `postgres`.
pub fn backend_name(store: &Store) -> &'static str {
    match store {
        Store::Sqlite(_) => "sqlite",
        Store::Postgres(_) => "postgres",
    }
}

/// Rows that count as data (migrations seed a few rows, e.g. the General category).
pub async fn data_rows(store: &Store) -> Result<u64, Error> {
    let (tables, _, _) = catalog(store).await?;
    let mut n = 0u64;
    for t in &tables {
        let sql = if t == "categories" {
            format!(
                "SELECT COUNT(*) FROM {} WHERE id <> '{}'",
                quote(t),
                crate::storage::GENERAL_CATEGORY_ID
            )
        } else {
            format!("SELECT COUNT(*) FROM {}", quote(t))
        };
        let c: i64 = match store {
            Store::Sqlite(pool) => {
                sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
                    .fetch_one(pool)
                    .await?
            }
            Store::Postgres(pool) => {
                sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
                    .fetch_one(pool)
                    .await?
            }
        };
        n += c as u64;
    }
    Ok(n)
}

/// Replaces every row of every table of `store` with the rows of `dump`, in one transaction
/// (the in-memory form of [`load_from`]).
pub async fn load(store: &Store, dump: &Dump) -> Result<BTreeMap<String, u64>, Error> {
    let mut rows = dump
        .header
        .tables
        .iter()
        .flat_map(|t| dump.rows.get(t).into_iter().flatten().map(move |r| (t, r)));
    load_rows(
        store,
        &dump.header.tables,
        || Ok(rows.next().map(|(t, r)| (t.clone(), r.clone()))),
        |_| Ok(()),
    )
    .await
}

/// Replaces every row of every table of `store` with the rows `reader` yields, in one
/// transaction, holding one batch of rows at a time. `check` sees the row counts after the last
/// row and before the commit: an error from it, from the reader (a chunk that fails
/// authentication, a truncated file) or from the database rolls everything back.
pub async fn load_from<R: BufRead>(
    store: &Store,
    reader: &mut DumpReader<R>,
    check: impl FnOnce(&BTreeMap<String, u64>) -> Result<(), Error>,
) -> Result<BTreeMap<String, u64>, Error> {
    let tables = reader.header().tables.clone();
    load_rows(store, &tables, || reader.next_row(), check).await
}

/// Inserts the rows of `next` batch by batch: a batch ends at [`LOAD_BATCH`] rows or where the
/// table changes. `$insert` runs one batch (table, JSON array text).
macro_rules! load_batches {
    ($next:expr, $counts:expr, |$t:ident, $batch:ident| $insert:expr) => {{
        let mut rows: Vec<serde_json::Value> = Vec::with_capacity(LOAD_BATCH);
        let mut table: Option<String> = None;
        loop {
            let row = $next()?;
            let ends = match (&row, &table) {
                (Some((t, _)), Some(current)) => t != current || rows.len() == LOAD_BATCH,
                (None, Some(_)) => true,
                _ => false,
            };
            if ends && !rows.is_empty() {
                let $batch = serde_json::Value::Array(std::mem::take(&mut rows)).to_string();
                let $t: &str = table.as_deref().unwrap_or_default();
                $insert;
            }
            let Some((t, r)) = row else { break };
            *$counts.entry(t.clone()).or_insert(0u64) += 1;
            table = Some(t);
            rows.push(r);
        }
    }};
}

async fn load_rows(
    store: &Store,
    dump_tables: &[String],
    mut next: impl FnMut() -> Result<Option<(String, serde_json::Value)>, Error>,
    check: impl FnOnce(&BTreeMap<String, u64>) -> Result<(), Error>,
) -> Result<BTreeMap<String, u64>, Error> {
    let (tables, refs, _) = catalog(store).await?;
    let order = load_order(&tables, &refs)?;
    for t in dump_tables {
        if !tables.contains(t) {
            return Err(Error::Format(format!("table `{t}` does not exist here")));
        }
    }
    let mut counts: BTreeMap<String, u64> = dump_tables.iter().map(|t| (t.clone(), 0)).collect();
    match store {
        Store::Sqlite(pool) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query("PRAGMA defer_foreign_keys = ON")
                .execute(&mut *tx)
                .await?;
            for t in order.iter().rev() {
                sqlx::query(AssertSqlSafe(format!("DELETE FROM {}", quote(t))))
                    .execute(&mut *tx)
                    .await?;
            }
            let mut statements: BTreeMap<String, String> = BTreeMap::new();
            load_batches!(next, counts, |t, batch| {
                if !statements.contains_key(t) {
                    let cols: Vec<String> =
                        sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                            .bind(t)
                            .fetch_all(&mut *tx)
                            .await?;
                    let names = cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ");
                    let values = cols
                        .iter()
                        .map(|c| format!("json_extract(value, '$.\"{}\"')", c.replace('\'', "''")))
                        .collect::<Vec<_>>()
                        .join(", ");
                    statements.insert(
                        t.to_owned(),
                        format!(
                            "INSERT INTO {} ({names}) SELECT {values} FROM json_each($1)",
                            quote(t)
                        ),
                    );
                }
                let sql = &statements[t];
                sqlx::query(AssertSqlSafe(sql.as_str()))
                    .bind(batch)
                    .execute(&mut *tx)
                    .await?;
            });
            check(&counts)?;
            tx.commit().await?;
        }
        Store::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            let list = order
                .iter()
                .map(|t| quote(t))
                .collect::<Vec<_>>()
                .join(", ");
            if !order.is_empty() {
                sqlx::query(AssertSqlSafe(format!("TRUNCATE {list} RESTART IDENTITY")))
                    .execute(&mut *tx)
                    .await?;
            }
            load_batches!(next, counts, |t, batch| {
                let sql = format!(
                    "INSERT INTO {q} OVERRIDING SYSTEM VALUE SELECT * FROM json_populate_recordset(NULL::{q}, $1::json)",
                    q = quote(t)
                );
                sqlx::query(AssertSqlSafe(sql.as_str()))
                    .bind(batch)
                    .execute(&mut *tx)
                    .await?;
            });
            check(&counts)?;
            // Identity and serial columns continue after the restored ids.
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
            tx.commit().await?;
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn referenced_tables_load_first() {
        let tables = s(&["messages", "contacts", "conversations", "outbox"]);
        let refs = vec![
            ("messages".to_owned(), "conversations".to_owned()),
            ("conversations".to_owned(), "contacts".to_owned()),
            ("outbox".to_owned(), "messages".to_owned()),
            ("contacts".to_owned(), "contacts".to_owned()),
        ];
        assert_eq!(
            load_order(&tables, &refs).unwrap(),
            s(&["contacts", "conversations", "messages", "outbox"])
        );
    }

    #[test]
    fn cycles_are_refused() {
        let refs = vec![
            ("a".to_owned(), "b".to_owned()),
            ("b".to_owned(), "a".to_owned()),
        ];
        assert!(matches!(
            load_order(&s(&["a", "b"]), &refs),
            Err(Error::Format(_))
        ));
    }

    #[test]
    fn dumps_round_trip_through_bytes() {
        let d = Dump {
            header: DumpHeader {
                format: DUMP_FORMAT,
                database: "sqlite".into(),
                schema_version: 100,
                tables: s(&["a", "b"]),
            },
            rows: [(
                "a".to_owned(),
                vec![serde_json::json!({"id": "x", "n": 1, "t": "line\nbreak"})],
            )]
            .into(),
        };
        let back = Dump::from_bytes(&d.to_bytes()).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.counts()["b"], 0);
        assert!(Dump::from_bytes(b"{}\n").is_err());
    }

    #[test]
    fn readers_count_rows_and_refuse_disorder() {
        let header = r#"{"format":1,"database":"sqlite","schemaVersion":1,"tables":["a","b"]}"#;
        let good = format!(
            "{header}\n{{\"t\":\"a\",\"r\":{{}}}}\n\n{{\"t\":\"b\",\"r\":{{}}}}\n{{\"t\":\"b\",\"r\":{{}}}}\n"
        );
        let counts = count_rows(&mut DumpReader::new(good.as_bytes()).unwrap()).unwrap();
        assert_eq!(counts, [("a".to_owned(), 1), ("b".to_owned(), 2)].into());
        for (bad, why) in [
            (
                r#"{"t":"b","r":{}}
{"t":"a","r":{}}"#,
                "out of order",
            ),
            (r#"{"t":"c","r":{}}"#, "unknown"),
            (r#"{"t":"a","r":[1]}"#, "not an object"),
            (r#"{"t":"a""#, "row line 2"),
        ] {
            let text = format!("{header}\n{bad}\n");
            let err = count_rows(&mut DumpReader::new(text.as_bytes()).unwrap()).unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
        assert!(DumpReader::new(&b""[..]).is_err());
        let newer = r#"{"format":9,"database":"sqlite","schemaVersion":1,"tables":[]}"#;
        assert!(DumpReader::new(newer.as_bytes()).is_err());
    }
}
