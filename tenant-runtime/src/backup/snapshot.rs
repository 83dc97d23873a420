//! Logical snapshots: every table's rows as JSON, read in one consistent transaction, and loaded
//! back in foreign-key order.
//!
//! The dump is JSON Lines: a header line (`{"format", "database", "schemaVersion", "tables"}`,
//! tables in load order), then one line per row, `{"t": table, "r": {column: value}}`. The SQL
//! that reads and writes the rows differs per database and lives in storage
//! (`storage/dialect/snapshot.rs`): one consistent snapshot for all tables, rows as the
//! database's own JSON, tables discovered from the catalog so that new tables need no change.
//!
//! Both directions stream: [`write_dump`] writes each row as the database returns it, and
//! [`load_from`] reads rows one at a time and inserts them in batches of [`LOAD_BATCH`], so
//! memory does not grow with the database. [`Dump`] (everything in memory) remains for tests
//! and comparisons.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use super::Error;
use crate::storage::Store;

/// Dump format version.
pub(crate) const DUMP_FORMAT: u32 = 1;
/// Rows per insert statement on load.
pub(crate) const LOAD_BATCH: usize = 500;

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
pub(crate) struct DumpReader<R: BufRead> {
    inner: R,
    header: DumpHeader,
    line: Vec<u8>,
    line_no: u64,
    table: usize,
}

impl<R: BufRead> DumpReader<R> {
    /// Reads and checks the header line.
    pub(crate) fn new(inner: R) -> Result<Self, Error> {
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
    pub(crate) fn header(&self) -> &DumpHeader {
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
    pub(crate) fn next_row(&mut self) -> Result<Option<(String, serde_json::Value)>, Error> {
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
pub(crate) fn count_rows<R: BufRead>(
    reader: &mut DumpReader<R>,
) -> Result<BTreeMap<String, u64>, Error> {
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
pub(crate) fn load_order(
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

/// The schema version (newest applied migration) of `store`.
pub async fn schema_version(store: &Store) -> Result<i64, Error> {
    Ok(store.catalog().await?.schema_version)
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
    let catalog = store.catalog().await?;
    let order = load_order(&catalog.tables, &catalog.references)?;
    let header = DumpHeader {
        format: DUMP_FORMAT,
        database: store.dialect().name().to_owned(),
        schema_version: catalog.schema_version,
        tables: order.clone(),
    };
    let mut line = serde_json::to_vec(&header).map_err(|e| Error::Format(e.to_string()))?;
    line.push(b'\n');
    out.write_all(&line)
        .map_err(|e| Error::Format(format!("writing the dump: {e}")))?;
    // The table name as JSON, encoded once per table rather than once per row.
    let mut table_json = (String::new(), String::new());
    let counts = store
        .dump_rows(&order, |table, row| {
            if table_json.0 != table {
                table_json = (
                    table.to_owned(),
                    serde_json::Value::String(table.to_owned()).to_string(),
                );
            }
            write_row(out, &table_json.1, row)
        })
        .await?;
    Ok(DumpSummary { header, counts })
}

/// Reads every row of every table in one consistent snapshot into memory (tests, comparisons;
/// backups stream with [`write_dump`]).
pub async fn dump(store: &Store) -> Result<Dump, Error> {
    let mut bytes = Vec::new();
    write_dump(store, &mut bytes).await?;
    Dump::from_bytes(&bytes)
}

/// Rows that count as data (migrations seed a few rows, e.g. the General category).
pub(crate) async fn data_rows(store: &Store) -> Result<u64, Error> {
    let catalog = store.catalog().await?;
    Ok(store.data_rows(&catalog.tables).await?)
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
pub(crate) async fn load_from<R: BufRead>(
    store: &Store,
    reader: &mut DumpReader<R>,
    check: impl FnOnce(&BTreeMap<String, u64>) -> Result<(), Error>,
) -> Result<BTreeMap<String, u64>, Error> {
    let tables = reader.header().tables.clone();
    load_rows(store, &tables, || reader.next_row(), check).await
}

async fn load_rows(
    store: &Store,
    dump_tables: &[String],
    next: impl FnMut() -> Result<Option<(String, serde_json::Value)>, Error>,
    check: impl FnOnce(&BTreeMap<String, u64>) -> Result<(), Error>,
) -> Result<BTreeMap<String, u64>, Error> {
    let catalog = store.catalog().await?;
    let order = load_order(&catalog.tables, &catalog.references)?;
    for t in dump_tables {
        if !catalog.tables.contains(t) {
            return Err(Error::Format(format!("table `{t}` does not exist here")));
        }
    }
    let batches = std::cell::RefCell::new(Batches {
        next,
        pending: None,
        counts: dump_tables.iter().map(|t| (t.clone(), 0)).collect(),
    });
    store
        .load_rows(
            &order,
            || batches.borrow_mut().next_batch(),
            || check(&batches.borrow().counts),
        )
        .await?;
    Ok(batches.into_inner().counts)
}

/// Groups the rows a reader yields into insert batches: a batch ends at [`LOAD_BATCH`] rows or
/// where the table changes. Counts the rows per table as they pass.
struct Batches<F> {
    next: F,
    /// A row read that belongs to the next batch.
    pending: Option<(String, serde_json::Value)>,
    counts: BTreeMap<String, u64>,
}

impl<F: FnMut() -> Result<Option<(String, serde_json::Value)>, Error>> Batches<F> {
    /// The next batch as `(table, JSON array text)`, `None` after the last row.
    fn next_batch(&mut self) -> Result<Option<(String, String)>, Error> {
        let mut rows = Vec::new();
        let mut table: Option<String> = None;
        loop {
            let row = match self.pending.take() {
                Some(row) => Some(row),
                None => (self.next)()?,
            };
            let Some((t, r)) = row else { break };
            if table.as_ref().is_some_and(|current| *current != t) || rows.len() == LOAD_BATCH {
                self.pending = Some((t, r));
                break;
            }
            *self.counts.entry(t.clone()).or_insert(0) += 1;
            table = Some(t);
            rows.push(r);
        }
        Ok(table.map(|t| (t, serde_json::Value::Array(rows).to_string())))
    }
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
