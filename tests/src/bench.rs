//! What the runtime's benchmarks (`tenant-runtime/benches/`) share: the two databases every
//! benchmark runs on, run sizes from the environment, Sinch inbound callbacks and percentiles.
//! Nothing here links the runtime (the operator's tests build this crate too).

use std::time::Duration;

use crate::postgres::{self, PgServer};

/// The databases a benchmark runs on, in the order of its table's rows.
pub const BACKENDS: [&str; 2] = ["sqlite", "postgres"];

/// Fresh databases for a benchmark: SQLite files in one temporary directory and databases on one
/// PostgreSQL server of the benchmark's own (not the tests' shared one, so no test runs beside it).
pub struct BenchDatabases {
    pg: PgServer,
    dir: tempfile::TempDir,
}

impl BenchDatabases {
    /// Starts the PostgreSQL server and makes the directory.
    pub fn start() -> Result<Self, postgres::Error> {
        Ok(Self {
            pg: PgServer::start()?,
            dir: tempfile::tempdir()?,
        })
    }

    /// A new, empty database on `backend` (one of [`BACKENDS`]); `tag` names the SQLite file.
    pub fn url(&self, backend: &str, tag: &str) -> String {
        match backend {
            "sqlite" => format!(
                "sqlite:{}",
                self.dir
                    .path()
                    .join(format!("{backend}-{tag}.sqlite"))
                    .display()
            ),
            _ => self.pg.create_database().expect("create database"),
        }
    }

    /// The directory for the benchmark's other files.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// `name` from the environment as a number, else `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A Sinch inbound text callback from `identity` on WhatsApp for app `app_id` of project `project_id`.
pub fn inbound_text(
    app_id: &str,
    project_id: &str,
    message_id: &str,
    identity: &str,
    text: &str,
) -> String {
    serde_json::json!({
        "app_id": app_id, "project_id": project_id, "accepted_time": "2026-01-01T00:00:00Z",
        "message": {
            "id": message_id, "direction": "TO_APP",
            "contact_message": { "text_message": { "text": text } },
            "channel_identity": { "channel": "WHATSAPP", "identity": identity, "app_id": "" },
            "processing_mode": "CONVERSATION"
        }
    })
    .to_string()
}

/// The `p` quantile (0..=1) of `sorted`, which is sorted and not empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_from_the_sorted_samples() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(100));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&v[..1], 0.99), Duration::from_millis(1));
    }

    #[test]
    fn inbound_text_is_a_sinch_callback() {
        let v: serde_json::Value =
            serde_json::from_str(&inbound_text("APP", "p", "M1", "4670", "hi")).unwrap();
        assert_eq!(
            v["message"]["contact_message"]["text_message"]["text"],
            "hi"
        );
        assert_eq!(v["message"]["channel_identity"]["identity"], "4670");
        assert_eq!(v["app_id"], "APP");
    }
}
