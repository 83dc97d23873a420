//! The twin migration folders, guarded: migrate a SQLite and a PostgreSQL database and compare
//! what the migrations built, table by table: columns, their types (mapped between the two
//! dialects), nullability, and indexes with their columns, uniqueness and partialness. A
//! migration added to one folder only, or written differently in the other, fails here.

use std::collections::{BTreeMap, BTreeSet};

use contact_runtime::storage::Store;

use crate::support::{Db, store};

/// A column as both dialects can describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    /// `integer`, `text`, `real` or `blob`; anything else is kept as the database named it.
    class: String,
    nullable: bool,
}

/// An index (or the primary key) by what it covers, not by its name: the two databases name
/// the indexes behind constraints differently.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Index {
    columns: Vec<String>,
    primary: bool,
    unique: bool,
    partial: bool,
}

/// What migrations built: tables with their columns and indexes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Schema {
    tables: BTreeMap<String, (BTreeMap<String, Column>, BTreeSet<Index>)>,
}

/// The type class of a SQLite declared type. SQLite has no boolean: its `INTEGER` stands for
/// PostgreSQL's `BIGINT` and `BOOLEAN` alike.
fn sqlite_class(declared: &str) -> String {
    match declared.to_ascii_uppercase().as_str() {
        "INTEGER" | "BIGINT" | "INT" | "BOOLEAN" => "integer".to_owned(),
        "TEXT" => "text".to_owned(),
        "REAL" | "DOUBLE PRECISION" => "real".to_owned(),
        "BLOB" => "blob".to_owned(),
        other => other.to_lowercase(),
    }
}

/// The type class of a PostgreSQL `data_type`.
fn postgres_class(data_type: &str) -> String {
    match data_type {
        "bigint" | "integer" | "smallint" | "boolean" => "integer".to_owned(),
        "text" | "character varying" => "text".to_owned(),
        "double precision" | "real" => "real".to_owned(),
        "bytea" => "blob".to_owned(),
        other => other.to_owned(),
    }
}

#[derive(sqlx::FromRow)]
struct ColumnRow {
    table_name: String,
    column_name: String,
    data_type: String,
    nullable: bool,
}

#[derive(sqlx::FromRow)]
struct IndexRow {
    table_name: String,
    columns: String,
    is_primary: bool,
    is_unique: bool,
    is_partial: bool,
}

/// SQLite's data tables, as `sqlite_master m`.
const SQLITE_TABLES: &str =
    "m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations'";

/// Reads the schema of a migrated database.
async fn schema(store: &Store) -> Schema {
    let (columns, indexes): (Vec<ColumnRow>, Vec<IndexRow>) = match store {
        Store::Sqlite(pool) => {
            let columns = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT m.name AS table_name, p.name AS column_name, p.type AS data_type, \
                 (p.\"notnull\" = 0 AND p.pk = 0) AS nullable FROM sqlite_master m, pragma_table_info(m.name) p WHERE {SQLITE_TABLES}"
            )))
            .fetch_all(pool)
            .await
            .expect("sqlite columns");
            // The primary key from the table (a rowid alias has no index), the other indexes
            // from the index list (the primary key's own index, if any, left out).
            let mut indexes: Vec<IndexRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT m.name AS table_name, \
                   (SELECT group_concat(name, ',') FROM (SELECT p.name FROM pragma_table_info(m.name) p WHERE p.pk > 0 ORDER BY p.pk)) AS columns, \
                   1 AS is_primary, 1 AS is_unique, 0 AS is_partial \
                 FROM sqlite_master m WHERE {SQLITE_TABLES} AND EXISTS (SELECT 1 FROM pragma_table_info(m.name) p WHERE p.pk > 0)"
            )))
            .fetch_all(pool)
            .await
            .expect("sqlite primary keys");
            indexes.extend(
                sqlx::query_as::<_, IndexRow>(sqlx::AssertSqlSafe(format!(
                    "SELECT m.name AS table_name, \
                       (SELECT group_concat(name, ',') FROM (SELECT ii.name FROM pragma_index_info(il.name) ii ORDER BY ii.seqno)) AS columns, \
                       0 AS is_primary, il.\"unique\" AS is_unique, il.partial AS is_partial \
                     FROM sqlite_master m, pragma_index_list(m.name) il WHERE {SQLITE_TABLES} AND il.origin <> 'pk'"
                )))
                .fetch_all(pool)
                .await
                .expect("sqlite indexes"),
            );
            (columns, indexes)
        }
        Store::Postgres(pool) => {
            let columns = sqlx::query_as(
                "SELECT table_name::text AS table_name, column_name::text AS column_name, data_type::text AS data_type, \
                 is_nullable = 'YES' AS nullable FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
            )
            .fetch_all(pool)
            .await
            .expect("postgres columns");
            let indexes = sqlx::query_as(
                "SELECT t.relname::text AS table_name, \
                   (SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM unnest(i.indkey::smallint[]) WITH ORDINALITY AS k(attnum, n) \
                    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum) AS columns, \
                   i.indisprimary AS is_primary, i.indisunique AS is_unique, i.indpred IS NOT NULL AS is_partial \
                 FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
                 WHERE n.nspname = current_schema() AND t.relname <> '_sqlx_migrations'",
            )
            .fetch_all(pool)
            .await
            .expect("postgres indexes");
            (columns, indexes)
        }
    };
    let class = |t: &str| match store {
        Store::Sqlite(_) => sqlite_class(t),
        Store::Postgres(_) => postgres_class(t),
    };
    let mut out = Schema::default();
    for c in columns {
        out.tables.entry(c.table_name).or_default().0.insert(
            c.column_name,
            Column {
                class: class(&c.data_type),
                nullable: c.nullable,
            },
        );
    }
    for i in indexes {
        out.tables.entry(i.table_name).or_default().1.insert(Index {
            columns: i.columns.split(',').map(str::to_owned).collect(),
            primary: i.is_primary,
            unique: i.is_unique,
            partial: i.is_partial,
        });
    }
    out
}

/// Every difference between the two schemas, one line each.
fn drift(sqlite: &Schema, postgres: &Schema) -> Vec<String> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = sqlite.tables.keys().chain(postgres.tables.keys()).collect();
    for t in names {
        let (Some((s_cols, s_idx)), Some((p_cols, p_idx))) =
            (sqlite.tables.get(t), postgres.tables.get(t))
        else {
            let only = if sqlite.tables.contains_key(t) {
                "SQLite"
            } else {
                "PostgreSQL"
            };
            out.push(format!("table `{t}` exists on {only} only"));
            continue;
        };
        let columns: BTreeSet<&String> = s_cols.keys().chain(p_cols.keys()).collect();
        for c in columns {
            match (s_cols.get(c), p_cols.get(c)) {
                (Some(s), Some(p)) if s.class != p.class => out.push(format!(
                    "`{t}.{c}`: type {} on SQLite, {} on PostgreSQL",
                    s.class, p.class
                )),
                (Some(s), Some(p)) if s.nullable != p.nullable => out.push(format!(
                    "`{t}.{c}`: nullable {} on SQLite, {} on PostgreSQL",
                    s.nullable, p.nullable
                )),
                (Some(_), None) => out.push(format!("column `{t}.{c}` exists on SQLite only")),
                (None, Some(_)) => out.push(format!("column `{t}.{c}` exists on PostgreSQL only")),
                _ => {}
            }
        }
        for i in s_idx.difference(p_idx) {
            out.push(format!("`{t}`: index {i:?} exists on SQLite only"));
        }
        for i in p_idx.difference(s_idx) {
            out.push(format!("`{t}`: index {i:?} exists on PostgreSQL only"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_migration_folders_build_the_same_schema() {
    let (sqlite, _s) = store(Db::Sqlite).await;
    let (postgres, _p) = store(Db::Postgres).await;
    let (s, p) = (schema(&sqlite).await, schema(&postgres).await);
    // The reader sees what there is: every table, with columns and a primary key.
    assert!(s.tables.len() >= 20, "{:?}", s.tables.keys());
    for (t, (columns, indexes)) in &s.tables {
        assert!(!columns.is_empty(), "{t}");
        assert!(indexes.iter().any(|i| i.primary), "{t} has no primary key");
    }
    let differences = drift(&s, &p);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_in_either_folder_is_named() {
    let (sqlite, _s) = store(Db::Sqlite).await;
    let (postgres, _p) = store(Db::Postgres).await;
    // What a migration written for one database only would do.
    let Store::Sqlite(s) = &sqlite else {
        unreachable!()
    };
    for sql in [
        "CREATE TABLE shadow (id TEXT PRIMARY KEY)",
        "ALTER TABLE contacts ADD COLUMN nickname TEXT",
        "CREATE INDEX messages_kind ON messages(kind)",
    ] {
        sqlx::query(sql).execute(s).await.expect(sql);
    }
    let Store::Postgres(p) = &postgres else {
        unreachable!()
    };
    for sql in [
        "ALTER TABLE users ALTER COLUMN display_name DROP NOT NULL",
        "ALTER TABLE skills ALTER COLUMN name TYPE bigint USING 0",
        "DROP INDEX audit_log_seq",
        "CREATE INDEX audit_log_seq ON audit_log(seq)",
    ] {
        sqlx::query(sql).execute(p).await.expect(sql);
    }
    let differences = drift(&schema(&sqlite).await, &schema(&postgres).await);
    let seq = |unique| Index {
        columns: vec!["seq".to_owned()],
        primary: false,
        unique,
        partial: false,
    };
    assert_eq!(
        differences,
        [
            format!("`audit_log`: index {:?} exists on SQLite only", seq(true)),
            format!(
                "`audit_log`: index {:?} exists on PostgreSQL only",
                seq(false)
            ),
            "column `contacts.nickname` exists on SQLite only".to_owned(),
            format!(
                "`messages`: index {:?} exists on SQLite only",
                Index {
                    columns: vec!["kind".to_owned()],
                    primary: false,
                    unique: false,
                    partial: false,
                }
            ),
            "table `shadow` exists on SQLite only".to_owned(),
            "`skills.name`: type text on SQLite, integer on PostgreSQL".to_owned(),
            "`users.display_name`: nullable false on SQLite, true on PostgreSQL".to_owned(),
        ]
    );
}
