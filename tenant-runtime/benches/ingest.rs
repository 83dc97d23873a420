//! Ingest benchmark: signed inbound webhooks from 64 concurrent senders over real HTTP, on SQLite
//! and on PostgreSQL (a real server from the `contact-tests` harness), beside the raw insert rate
//! of the same rows into the same kind of database in the same run.
//!
//! ```text
//! cargo bench -p contact-runtime --bench ingest
//! CONTACT_BENCH_MESSAGES=50000 cargo bench -p contact-runtime --bench ingest   # longer run
//! ```
//!
//! "Webhook" is the full path: HTTP, signature check, parse, contact/conversation lookup, one
//! transaction (nonce, conversation touch, message, event, audit entry), 200, with the audit
//! chainer running in the server. "Raw" is the same five writes per message in one transaction
//! straight on the pool, with no HTTP, no checks, no lookups, and the same chainer running
//! beside it (same rows, same durability, same background work). "Raw, inline chain" is the
//! scheme the runtime used before the chainer: every transaction takes the advisory lock (on
//! SQLite the write lock it holds anyway), reads the chain head and inserts a chained entry.
//! "Chain lag" is how long after the last acknowledgement the chainer had linked every entry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use contact_runtime::app::Application;
use contact_runtime::channels::signature;
use contact_runtime::config::{ChannelApp, Region, Secret, Settings};
use contact_runtime::domain::ChannelType;
use contact_runtime::domain::audit::{AuditAction, AuditChange, GENESIS_HASH, prepare, seal};
use contact_runtime::privacy::chainer::AuditChainer;
use contact_runtime::storage::{
    ConnectOptions, Dialect, Store, WriteTx, new_id, now_ms, on_driver,
};
use contact_tests::bench::{BACKENDS, BenchDatabases, env_u64, inbound_text, percentile};

const SENDERS: usize = 64;
const IDENTITIES: u64 = 1000;
const SECRET: &str = "bench-webhook-secret";

struct Run {
    backend: &'static str,
    messages: u64,
    webhook_rate: f64,
    p50: Duration,
    p99: Duration,
    raw_rate: f64,
    raw_inline_rate: f64,
    chain_lag: Duration,
}

/// How the raw inserter writes the audit entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Audit {
    /// Unchained, linked by the chainer (what the runtime does).
    Deferred,
    /// Chained inside the transaction under the lock (what the runtime did before).
    Inline,
}

fn main() {
    let messages = env_u64("CONTACT_BENCH_MESSAGES", 20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dbs = BenchDatabases::start().expect("start PostgreSQL for the benchmark");
    let mut runs = Vec::new();
    for backend in BACKENDS {
        let url = |tag: &str| dbs.url(backend, tag);
        let urls = [url("webhook"), url("raw"), url("inline")];
        runs.push(rt.block_on(run(backend, messages, &urls)));
    }
    println!();
    println!(
        "| database | messages | senders | webhook msg/s | p50 ack | p99 ack | chain lag | raw insert msg/s | webhook / raw | raw, inline chain msg/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} | {SENDERS} | {:.0} | {:.1} ms | {:.1} ms | {:.0} ms | {:.0} | {:.0}% | {:.0} |",
            r.backend,
            r.messages,
            r.webhook_rate,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.chain_lag.as_secs_f64() * 1e3,
            r.raw_rate,
            100.0 * r.webhook_rate / r.raw_rate,
            r.raw_inline_rate,
        );
    }
}

fn settings(database_url: &str) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: database_url.to_owned(),
        channels: vec![ChannelApp {
            name: "wa".into(),
            channel: ChannelType::Whatsapp,
            region: Region::Eu,
            project_id: "bench".into(),
            app_id: "BENCHAPP".into(),
            key_id: "k".into(),
            key_secret: Secret("s".into()),
            webhook_secret: Secret(SECRET.into()),
            base_url: Some("http://127.0.0.1:9".into()),
            key_id_file: None,
            key_secret_file: None,
            webhook_secret_file: None,
            category: None,
        }],
        ..Settings::default()
    }
}

fn body(i: u64) -> String {
    inbound_text(
        "BENCHAPP",
        "bench",
        &format!("BENCH{i:010}"),
        &format!("4670{:07}", i % IDENTITIES),
        &format!("benchmark message {i}"),
    )
}

async fn run(backend: &'static str, messages: u64, urls: &[String; 3]) -> Run {
    let [webhook_url, raw_url, inline_url] = urls;
    // --- webhooks through the real server ---
    let app = Application::build(settings(webhook_url))
        .await
        .expect("build runtime");
    let url = format!("http://{}/webhooks/sinch/wa", app.local_addr());
    let store = app.store().clone();
    // A graceful stop, not an abort: `run_until` then stops its background tasks (sender,
    // chainer, …), which would otherwise keep running into the raw measurements.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    contact_runtime::install_tls_provider();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(SENDERS)
        .build()
        .expect("client");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let (http, url, next) = (http.clone(), url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= messages {
                    break latencies;
                }
                let body = body(i);
                let t = Instant::now();
                let headers = signature::signed_headers(
                    SECRET,
                    body.as_bytes(),
                    &new_id(),
                    chrono::Utc::now().timestamp(),
                );
                let resp = http
                    .post(&url)
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .expect("webhook request");
                assert_eq!(resp.status(), 200, "webhook refused");
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("sender"));
    }
    let elapsed = started.elapsed();
    assert_eq!(
        store.count("messages").await.expect("count"),
        messages as i64,
        "every acknowledged message is stored"
    );
    let chain_lag = drained(&store).await;
    let report = store.verify_audit_chain().await.expect("verify");
    assert_eq!(report.broken, None, "the chain verifies");
    assert!(
        report.checked >= messages,
        "every message has its chained entry"
    );
    let _ = stop.send(());
    server
        .await
        .expect("server task")
        .expect("server stopped cleanly");
    store.close().await;
    latencies.sort();

    // --- the same rows, inserted raw, with the chainer beside them; then the old inline chain ---
    let raw_rate = measure_raw(raw_url, messages, Audit::Deferred).await;
    let raw_inline_rate = measure_raw(inline_url, messages, Audit::Inline).await;
    Run {
        backend,
        messages,
        webhook_rate: messages as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        raw_rate,
        raw_inline_rate,
        chain_lag,
    }
}

/// Waits until the chainer has linked every entry; returns how long that took.
async fn drained(store: &Store) -> Duration {
    let t = Instant::now();
    while store.audit_pending().await.expect("pending") > 0 {
        assert!(t.elapsed() < Duration::from_secs(300), "chainer stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t.elapsed()
}

/// Raw inserts of `messages` messages from 64 tasks; messages per second (until the chain is
/// complete too, so deferred chaining does not get its backlog for free).
async fn measure_raw(url: &str, messages: u64, audit: Audit) -> f64 {
    let raw = Store::connect(url, &ConnectOptions::default())
        .await
        .expect("connect raw");
    raw.migrate().await.expect("migrate raw");
    let conversations = prepare_conversations(&raw).await;
    let chainer = tokio::spawn(AuditChainer::new(raw.clone()).run_forever());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let (raw, next, conversations) = (raw.clone(), next.clone(), conversations.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= messages {
                    break;
                }
                let conv = &conversations[(i % IDENTITIES) as usize];
                raw_insert(&raw, i, conv, audit).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("raw inserter");
    }
    drained(&raw).await;
    let elapsed = started.elapsed();
    chainer.abort();
    assert_eq!(raw.count("messages").await.expect("count"), messages as i64);
    let report = raw.verify_audit_chain().await.expect("verify");
    assert_eq!((report.checked, report.broken), (messages, None));
    raw.close().await;
    messages as f64 / elapsed.as_secs_f64()
}

/// One contact, identity and open conversation per identity (not timed).
async fn prepare_conversations(store: &Store) -> Arc<Vec<String>> {
    let mut ids = Vec::new();
    for n in 0..IDENTITIES {
        let (contact, conv, now) = (new_id(), new_id(), now_ms());
        let identity = format!("4670{n:07}");
        on_driver!(store, |pool| {
            sqlx::query(
                "INSERT INTO contacts (id, display_name, created_at) VALUES ($1, NULL, $2)",
            )
            .bind(&contact)
            .bind(now)
            .execute(pool)
            .await
            .expect("contact");
            sqlx::query("INSERT INTO contact_identities (channel, identity, contact_id, created_at) VALUES ('WHATSAPP', $1, $2, $3)")
                    .bind(&identity).bind(&contact).bind(now).execute(pool).await.expect("identity");
            sqlx::query("INSERT INTO conversations (id, contact_id, channel, channel_app, identity, category_id, status, created_at, updated_at, last_inbound_at) VALUES ($1, $2, 'WHATSAPP', 'wa', $3, NULL, 'queued', $4, $4, $4)")
                    .bind(&conv).bind(&contact).bind(&identity).bind(now).execute(pool).await.expect("conversation");
        });
        ids.push(conv);
    }
    Arc::new(ids)
}

/// The writes one webhook makes, in one transaction, without lookups.
async fn raw_insert(store: &Store, i: u64, conversation_id: &str, audit: Audit) {
    let now = now_ms();
    let (nonce, message_id) = (new_id(), new_id());
    let content =
        serde_json::json!({ "type": "text", "text": format!("benchmark message {i}") }).to_string();
    let change = AuditChange::new(
        "channel:wa",
        AuditAction::Create,
        "message",
        &message_id,
        "content",
        Some(content.clone()),
    )
    .about(conversation_id);
    // The same write-transaction helper the runtime uses (on SQLite: gate + BEGIN IMMEDIATE).
    on_driver!(store, |pool| {
        let mut tx = pool.begin_write().await.expect("begin");
        sqlx::query(
            "INSERT INTO webhook_nonces (channel_app, nonce, expires_at) VALUES ('wa', $1, $2)",
        )
        .bind(&nonce)
        .bind(now + 600_000)
        .execute(&mut *tx)
        .await
        .expect("nonce");
        sqlx::query("UPDATE conversations SET last_inbound_at = $1, updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(conversation_id)
            .execute(&mut *tx)
            .await
            .expect("touch");
        sqlx::query("INSERT INTO messages (id, conversation_id, channel_app, direction, external_id, kind, content, status, status_rank, created_at, updated_at) VALUES ($1, $2, 'wa', 'inbound', $3, 'text', $4, 'RECEIVED', 0, $5, $5)")
                .bind(&message_id).bind(conversation_id).bind(format!("RAW{i:010}")).bind(&content).bind(now)
                .execute(&mut *tx).await.expect("message");
        sqlx::query("INSERT INTO conversation_events (conversation_id, kind, data, created_at) VALUES ($1, 'message_received', $2, $3)")
                .bind(conversation_id).bind(format!("{{\"message_id\":\"{message_id}\"}}")).bind(now)
                .execute(&mut *tx).await.expect("event");
        match audit {
            Audit::Deferred => {
                let e = prepare(now, &change);
                sqlx::query("INSERT INTO audit_log (at, actor, action, entity, entity_id, subject_id, attribute, new_value, salt, value_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
                        .bind(e.at).bind(&e.actor).bind(e.action).bind(&e.entity).bind(&e.entity_id).bind(&e.subject_id)
                        .bind(&e.attribute).bind(&e.new_value).bind(&e.salt).bind(&e.value_hash)
                        .execute(&mut *tx).await.expect("audit");
            }
            Audit::Inline => {
                if store.dialect() == Dialect::Postgres {
                    sqlx::query("SELECT pg_advisory_xact_lock(1)")
                        .execute(&mut *tx)
                        .await
                        .expect("lock");
                }
                let (seq, prev): (i64, String) = sqlx::query_as(
                    "SELECT seq, hash FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)",
                )
                .fetch_optional(&mut *tx)
                .await
                .expect("head")
                .unwrap_or((0, GENESIS_HASH.to_owned()));
                let e = seal(seq + 1, now, &prev, &change);
                sqlx::query("INSERT INTO audit_log (seq, at, actor, action, entity, entity_id, subject_id, attribute, new_value, salt, value_hash, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)")
                        .bind(e.seq).bind(e.at).bind(&e.actor).bind(&e.action).bind(&e.entity).bind(&e.entity_id).bind(&e.subject_id)
                        .bind(&e.attribute).bind(&e.new_value).bind(&e.salt).bind(&e.value_hash).bind(&e.prev_hash).bind(&e.hash)
                        .execute(&mut *tx).await.expect("audit");
            }
        }
        tx.commit().await.expect("commit");
    });
}
