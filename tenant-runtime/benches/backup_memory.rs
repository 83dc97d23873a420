//! Backup and restore memory benchmark: peak resident memory of `backup` and `restore` on a
//! generated database (200,000 messages by default), streaming (what the runtime does) against
//! the earlier in-memory approach (whole snapshot parsed, serialized, sealed as one GCM message;
//! restore reading, decrypting and parsing all of it before loading), on SQLite and PostgreSQL.
//!
//! ```text
//! cargo bench -p contact-runtime --bench backup_memory
//! CONTACT_BENCH_MESSAGES=50000 cargo bench -p contact-runtime --bench backup_memory   # shorter
//! ```
//!
//! Each measurement runs in a fresh child process (this binary with `--child`), so one mode's
//! peak does not hide another's; the child reports its own peak (`VmHWM` of `/proc/self/status`,
//! Linux only) and wall time. `idle` is the same process connecting to the database and reading
//! one count: the floor every mode pays (runtime, pool, allocator).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use contact_runtime::backup::{self, BackupKey, Manifest, crypto, snapshot};
use contact_runtime::domain::{ChannelType, MessageContent};
use contact_runtime::storage::{
    self, ConnectOptions, InboundMessage, Nonce, Store, new_id, now_ms,
};
use contact_tests::bench::{BACKENDS, BenchDatabases, env_u64};

const CONVERSATIONS: u64 = 1000;
const KEY: [u8; 32] = [7; 32];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1..]);
        return;
    }
    // `cargo bench` passes `--bench`; nothing else is expected.
    let messages = env_u64("CONTACT_BENCH_MESSAGES", 200_000);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dbs = BenchDatabases::start().expect("start PostgreSQL for the benchmark");
    println!("backup/restore peak memory, {messages} messages ({CONVERSATIONS} conversations)\n");
    println!(
        "| database | dump size | mode | peak RSS | above idle | wall time |\n|---|---|---|---|---|---|"
    );
    for backend in BACKENDS {
        let url = |tag: &str| dbs.url(backend, tag);
        let source = url("source");
        let plaintext = rt.block_on(generate(&source, messages));
        let backups = dbs.dir().join(format!("{backend}-backups"));
        let mut runs: Vec<(String, Report)> = Vec::new();
        let idle = run_child(&["idle", &source]);
        let streamed = run_child(&["backup-streaming", &source, backups.to_str().unwrap()]);
        let in_memory = run_child(&["backup-in-memory", &source, backups.to_str().unwrap()]);
        let (s_target, m_target) = (url("restored-streaming"), url("restored-in-memory"));
        let restore_s = run_child(&[
            "restore-streaming",
            &s_target,
            backups.to_str().unwrap(),
            &streamed.name,
        ]);
        let restore_m = run_child(&[
            "restore-in-memory",
            &m_target,
            backups.to_str().unwrap(),
            &in_memory.name,
        ]);
        // Both restores must have produced the source's rows.
        let expected = rt.block_on(canonical(&source));
        assert_eq!(
            rt.block_on(canonical(&s_target)),
            expected,
            "streaming restore"
        );
        assert_eq!(
            rt.block_on(canonical(&m_target)),
            expected,
            "in-memory restore"
        );
        let idle_kib = idle.peak_kib;
        runs.push(("idle (connect, one query)".into(), idle));
        runs.push(("backup, streaming".into(), streamed));
        runs.push(("backup, in memory (before)".into(), in_memory));
        runs.push(("restore, streaming".into(), restore_s));
        runs.push(("restore, in memory (before)".into(), restore_m));
        for (mode, r) in &runs {
            println!(
                "| {backend} | {:.1} MiB | {mode} | {:.1} MiB | {:.1} MiB | {:.2} s |",
                plaintext as f64 / 1048576.0,
                r.peak_kib as f64 / 1024.0,
                r.peak_kib.saturating_sub(idle_kib) as f64 / 1024.0,
                r.secs
            );
        }
        let above = |r: &Report| r.peak_kib.saturating_sub(idle_kib).max(1) as f64;
        println!(
            "| {backend} | | ratio in-memory / streaming above idle: backup {:.1}×, restore {:.1}× | | | |",
            above(&runs[2].1) / above(&runs[1].1),
            above(&runs[4].1) / above(&runs[3].1),
        );
    }
}

/// What a child reports.
struct Report {
    peak_kib: u64,
    secs: f64,
    name: String,
}

fn run_child(args: &[&str]) -> Report {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .arg("--child")
        .args(args)
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "child {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("child prints one JSON object");
    Report {
        peak_kib: v["peak_kib"].as_u64().unwrap(),
        secs: v["secs"].as_f64().unwrap(),
        name: v["name"].as_str().unwrap_or_default().to_owned(),
    }
}

/// Peak resident set size of this process, KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

async fn connect(url: &str) -> Store {
    let store = Store::connect(url, &ConnectOptions::default())
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store
}

fn child(args: &[String]) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let key = BackupKey::from_bytes(KEY);
    let started = Instant::now();
    let name = rt.block_on(async {
        let store = connect(&args[1]).await;
        let name = match args[0].as_str() {
            "idle" => {
                store.count("messages").await.expect("count");
                String::new()
            }
            "backup-streaming" => {
                backup::backup(&store, Path::new(&args[2]), &key, now_ms(), 0)
                    .await
                    .expect("backup")
                    .name
            }
            "backup-in-memory" => backup_in_memory(&store, Path::new(&args[2]), &key).await,
            "restore-streaming" => {
                // The two halves apart: verification (no database) and the load transaction.
                let t = Instant::now();
                let manifest = backup::open(Path::new(&args[2]), &args[3], &key).expect("open");
                let verify_secs = t.elapsed().as_secs_f64();
                backup::restore_opened(&store, Path::new(&args[2]), manifest, &key, false)
                    .await
                    .expect("restore");
                eprintln!(
                    "restore-streaming: verification {verify_secs:.2} s, load {:.2} s",
                    t.elapsed().as_secs_f64() - verify_secs
                );
                args[3].clone()
            }
            "restore-in-memory" => {
                restore_in_memory(&store, Path::new(&args[2]), &args[3], &key).await;
                args[3].clone()
            }
            other => panic!("unknown mode {other}"),
        };
        store.close().await;
        name
    });
    let report = serde_json::json!({
        "peak_kib": peak_kib(),
        "secs": started.elapsed().as_secs_f64(),
        "name": name,
    });
    println!("{report}");
}

/// The earlier backup: the whole snapshot parsed in memory, serialized, sealed as one GCM
/// message, written at once (manifest format 1, which restore still reads).
async fn backup_in_memory(store: &Store, dir: &Path, key: &BackupKey) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let dump = snapshot::dump(store).await.expect("dump");
    let plaintext = dump.to_bytes();
    let name = format!("contact-in-memory-{}", new_id());
    let mut manifest = Manifest {
        format_version: backup::MANIFEST_FORMAT_SINGLE,
        name: name.clone(),
        created_at: storage::from_ms(now_ms()).to_rfc3339(),
        created_at_ms: now_ms(),
        database: dump.header.database.clone(),
        schema_version: dump.header.schema_version,
        tables: dump.counts(),
        cipher: "AES-256-GCM".to_owned(),
        nonce: String::new(),
        chunk_bytes: 0,
        plaintext_sha256: crypto::sha256_hex(&plaintext),
        ciphertext_sha256: String::new(),
        size_bytes: 0,
        mac: String::new(),
    };
    let aad = format!("{}|{}|{}", name, manifest.database, manifest.format_version);
    let (nonce, ciphertext) = crypto::seal(key, &plaintext, aad.as_bytes()).expect("seal");
    manifest.nonce = hex::encode(nonce);
    manifest.ciphertext_sha256 = crypto::sha256_hex(&ciphertext);
    manifest.size_bytes = ciphertext.len() as u64;
    manifest.sign(key);
    std::fs::File::create(dir.join(format!("{name}.backup")))
        .and_then(|mut f| f.write_all(&ciphertext))
        .expect("write backup");
    std::fs::write(
        dir.join(format!("{name}.manifest.json")),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .expect("write manifest");
    name
}

/// The earlier restore: read, check, decrypt and parse the whole file, then load the parsed
/// snapshot.
async fn restore_in_memory(store: &Store, dir: &Path, name: &str, key: &BackupKey) {
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.manifest.json"))).unwrap())
            .unwrap();
    assert!(manifest.verify(key));
    let ciphertext = std::fs::read(dir.join(format!("{name}.backup"))).unwrap();
    assert_eq!(crypto::sha256_hex(&ciphertext), manifest.ciphertext_sha256);
    let aad = format!(
        "{}|{}|{}",
        manifest.name, manifest.database, manifest.format_version
    );
    let plaintext = crypto::open(
        key,
        &hex::decode(&manifest.nonce).unwrap(),
        &ciphertext,
        aad.as_bytes(),
    )
    .expect("open");
    assert_eq!(crypto::sha256_hex(&plaintext), manifest.plaintext_sha256);
    let dump = snapshot::Dump::from_bytes(&plaintext).expect("parse");
    assert_eq!(dump.counts(), manifest.tables);
    snapshot::load(store, &dump).await.expect("load");
}

/// Every row of the database, canonical (for the equality check after the restores).
async fn canonical(url: &str) -> Vec<String> {
    let store = connect(url).await;
    let rows = snapshot::dump(&store).await.expect("dump").canonical_rows();
    store.close().await;
    rows
}

/// Fills a database: `CONVERSATIONS` customers write in through the store (contacts,
/// identities, conversations, events, audit entries), then `messages` text messages of about
/// 100 characters are spread over their conversations in bulk. Returns the dump size.
async fn generate(url: &str, messages: u64) -> u64 {
    let store = connect(url).await;
    for i in 0..CONVERSATIONS {
        let msg = InboundMessage {
            channel_app: "wa".into(),
            channel: ChannelType::Whatsapp,
            identity: format!("4670{i:07}"),
            external_id: new_id(),
            content: MessageContent::Text {
                text: format!("Hello, this is customer {i}"),
            },
            category_id: None,
            reopen_closed_since: None,
        };
        let nonce = Nonce {
            channel_app: "wa".into(),
            nonce: new_id(),
            expires_at: now_ms() + 600_000,
        };
        store.record_inbound(&nonce, &msg).await.expect("inbound");
    }
    let bulk = messages.saturating_sub(CONVERSATIONS) as i64;
    let text = "Customer message {} about an order, a delivery address and a phone number, long enough to look real";
    match &store {
        Store::Sqlite(p) => {
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1), \
                 bench_convs AS (SELECT row_number() OVER (ORDER BY id) - 1 AS k, id FROM conversations) \
                 INSERT INTO messages (id, conversation_id, channel_app, direction, external_id, kind, content, status, status_rank, status_reason, author_user_id, idempotency_key, created_at, updated_at) \
                 SELECT 'bench-' || i, c.id, t.channel_app, t.direction, 'ext-' || i, t.kind, \
                        json_object('type', 'text', 'text', replace($2, '{}', i)), t.status, t.status_rank, NULL, NULL, NULL, t.created_at + i, t.updated_at + i \
                 FROM n JOIN bench_convs c ON c.k = n.i % $3, (SELECT * FROM messages LIMIT 1) t",
            )
            .bind(bulk)
            .bind(text)
            .bind(CONVERSATIONS as i64)
            .execute(p)
            .await
            .unwrap();
        }
        Store::Postgres(p) => {
            sqlx::query(
                "INSERT INTO messages (id, conversation_id, channel_app, direction, external_id, kind, content, status, status_rank, status_reason, author_user_id, idempotency_key, created_at, updated_at) \
                 SELECT 'bench-' || i, c.id, t.channel_app, t.direction, 'ext-' || i, t.kind, \
                        json_build_object('type', 'text', 'text', replace($2, '{}', i::text))::text, t.status, t.status_rank, NULL, NULL, NULL, t.created_at + i, t.updated_at + i \
                 FROM generate_series(1, $1::bigint) i \
                 JOIN (SELECT row_number() OVER (ORDER BY id) - 1 AS k, id FROM conversations) c ON c.k = i % $3, \
                      (SELECT * FROM messages LIMIT 1) t",
            )
            .bind(bulk)
            .bind(text)
            .bind(CONVERSATIONS as i64)
            .execute(p)
            .await
            .unwrap();
        }
    }
    assert_eq!(
        store.count("messages").await.unwrap() as u64,
        messages.max(CONVERSATIONS)
    );
    let mut sink = CountingSink(0);
    snapshot::write_dump(&store, &mut sink).await.expect("dump");
    store.close().await;
    sink.0
}

/// Counts what is written to it.
struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
