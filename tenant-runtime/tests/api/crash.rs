//! Crash test: the real `contact-runtime` binary is SIGKILLed while the simulator streams 10,000
//! customer messages (each retried until acknowledged) and while replies drain from the outbox.
//! After a restart on the same SQLite file, every message is stored exactly once and every reply
//! is delivered exactly once.
//!
//! `CONTACT_CRASH_MESSAGES` lowers the count for quick local runs; the default is 10,000.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::eventually;
use contact_runtime::channels::simulator::{
    SentLog, SimChannel, SimSettings, Simulator, StreamProgress,
};
use contact_runtime::domain::ChannelType;
use contact_runtime::storage::{ConnectOptions, Store};
use futures::StreamExt as _;
use serde_json::{Value, json};

/// Kills the runtime process if the test ends early.
struct Runtime(Option<Child>);

impl Runtime {
    fn spawn(config: &std::path::Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_contact-runtime"))
            .arg("--config")
            .arg(config)
            .env("CONTACT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn contact-runtime");
        Runtime(Some(child))
    }

    /// SIGKILL: no graceful shutdown, no flushing, nothing.
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            c.kill().expect("SIGKILL");
            let _ = c.wait();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_ready(http: &reqwest::Client, url: &str) {
    eventually(30, "runtime ready", || async {
        match http.get(format!("{url}/readyz")).send().await {
            Ok(r) if r.status() == 200 => Some(()),
            _ => None,
        }
    })
    .await;
}

async fn sent_log(http: &reqwest::Client, sim: &str) -> SentLog {
    http.get(format!("{sim}/_sim/sent"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn set_faults(http: &reqwest::Client, sim: &str, faults: serde_json::Value) {
    let r = http
        .post(format!("{sim}/_sim/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "faults refused: {}", r.status());
}

async fn progress(http: &reqwest::Client, sim: &str) -> StreamProgress {
    http.get(format!("{sim}/_sim/stream"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Sends one reply per conversation (idempotent per conversation, eight at a time); retries
/// while the runtime is down. Returns the reply message ids.
async fn reply_to_all(http: reqwest::Client, url: String) -> HashSet<String> {
    let convs: Vec<Value> = loop {
        match http
            .get(format!("{url}/api/v1/conversations?limit=500"))
            .bearer_auth("crash-token")
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => break r.json().await.unwrap(),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    futures::stream::iter(convs)
        .map(|c| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let conv = c["id"].as_str().unwrap().to_owned();
                loop {
                    let r = http
                        .post(format!("{url}/api/v1/conversations/{conv}/messages"))
                        .bearer_auth("crash-token")
                        // The same key on every try: a request that committed before the kill
                        // but lost its response returns the first message instead of a second.
                        .header("Idempotency-Key", format!("reply-{conv}"))
                        .json(&json!({ "content": { "type": "text", "text": "Thanks, we are looking into it." } }))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let m: Value = r.json().await.unwrap();
                            break m["id"].as_str().unwrap().to_owned();
                        }
                        Ok(r) if r.status().is_client_error() => {
                            panic!("reply refused: {}", r.status())
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// The channel's log after the restart: no reply delivered twice, every reply delivered, and
/// every send unanswered at the kill made again and recognised by its correlation id.
fn delivered_exactly_once(log: &SentLog, replies: &HashSet<String>, in_flight_at_kill: u64) {
    let delivered: Vec<&str> = log
        .messages
        .iter()
        .filter_map(|m| m.correlation_id.as_deref())
        .collect();
    let unique: HashSet<&str> = delivered.iter().copied().collect();
    assert_eq!(delivered.len(), unique.len(), "no reply delivered twice");
    // Every send that was unanswered at the kill was made again after the restart and
    // recognised by its correlation id: the restart did resend, and nothing was doubled.
    assert!(
        log.duplicates >= in_flight_at_kill,
        "{in_flight_at_kill} sends were unanswered at the kill, only {} re-sent",
        log.duplicates
    );
    assert_eq!(
        unique,
        replies.iter().map(String::as_str).collect::<HashSet<_>>(),
        "every reply delivered"
    );
}

/// After the restart: the outbox drains, every inbound message is stored exactly once (one
/// contact and conversation per customer), and every reply is one outbox row, sent.
async fn stored_exactly_once(store: &Store, count: u64, identities: u64, replies: usize) {
    eventually(60, "outbox drained", || async {
        (store.outbox_count("pending").await.unwrap() == 0).then_some(())
    })
    .await;
    let Store::Sqlite(pool) = &store else {
        unreachable!()
    };
    let (total, distinct): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT external_id) FROM messages WHERE direction = 'inbound'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        total, count as i64,
        "every inbound message stored exactly once"
    );
    assert_eq!(distinct, count as i64);
    let expected_ids: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages WHERE direction = 'inbound' AND external_id LIKE 'CRASH%'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(expected_ids, count as i64);
    assert_eq!(
        store.count("conversations").await.unwrap(),
        identities as i64,
        "one conversation per customer"
    );
    assert_eq!(store.count("contacts").await.unwrap(), identities as i64);
    assert_eq!(replies, identities as usize, "one reply per conversation");
    assert_eq!(store.count("outbox").await.unwrap(), replies as i64);
    assert_eq!(store.outbox_count("sent").await.unwrap(), replies as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_inbound_stream_and_outbox_drain_loses_nothing_and_duplicates_nothing() {
    let count: u64 = std::env::var("CONTACT_CRASH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let identities = 200;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.sqlite");
    let listen = crate::support::free_addr();
    let url = format!("http://{listen}");
    let sim = Simulator::bind(SimSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        runtime_url: url.clone(),
        channels: vec![SimChannel {
            name: "wa".into(),
            channel: ChannelType::Whatsapp,
            app_id: "CRASHAPP".into(),
            project_id: "crash-project".into(),
            key_id: "crash-key".into(),
            key_secret: "crash-key-secret".into(),
            webhook_secret: "crash-webhook-secret".into(),
        }],
        token_ttl_secs: 3600,
        delivery_reports: false,
        report_delay_ms: 0,
        // The stream keeps its customers' windows open; replies go to them.
        whatsapp_window: Some(Duration::from_secs(24 * 3600)),
        lifecycle_callbacks: false,
    })
    .await
    .unwrap();
    let sim_url = format!("http://{}", sim.local_addr());
    let config = dir.path().join("contact.yaml");
    std::fs::write(
        &config,
        format!(
            r#"listen: {listen}
database_url: "sqlite:{db}"
api_token: crash-token
sinch:
  auth_url: {sim_url}/oauth2/token
outbox:
  poll_interval_ms: 50
  lease_secs: 2
  base_backoff_ms: 50
  max_backoff_ms: 500
  max_attempts: 100
channels:
  - name: wa
    type: WHATSAPP
    project_id: crash-project
    app_id: CRASHAPP
    key_id: crash-key
    key_secret: crash-key-secret
    webhook_secret: crash-webhook-secret
    base_url: {sim_url}
"#,
            db = db.display()
        ),
    )
    .unwrap();
    let sim_task = tokio::spawn(sim.run_until(std::future::pending()));
    contact_runtime::install_tls_provider();
    let http = reqwest::Client::new();

    let mut runtime = Runtime::spawn(&config);
    wait_ready(&http, &url).await;
    let r = http
        .post(format!("{sim_url}/_sim/stream"))
        .json(&json!({ "channel": "wa", "count": count, "concurrency": 32, "identities": identities, "prefix": "CRASH" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Once a fifth of the stream landed, agents start replying to every conversation so far;
    // at half the stream the runtime is killed, with webhooks, replies and outbox in flight.
    eventually(120, "20% acknowledged", || async {
        (progress(&http, &sim_url).await.acknowledged >= count / 5).then_some(())
    })
    .await;
    // Until the kill, the channel takes every send but never answers: each send the runtime
    // made is then "delivered, not known to be delivered", the case that tempts a second send.
    set_faults(
        &http,
        &sim_url,
        json!({ "delay_next": u32::MAX, "delay_ms": 600_000 }),
    )
    .await;
    let first_replies = tokio::spawn(reply_to_all(http.clone(), url.clone()));
    eventually(120, "50% acknowledged and replies on the wire", || async {
        let half = progress(&http, &sim_url).await.acknowledged >= count / 2;
        (half && !sent_log(&http, &sim_url).await.messages.is_empty()).then_some(())
    })
    .await;
    runtime.kill();
    let at_kill = progress(&http, &sim_url).await;
    assert!(
        at_kill.acknowledged < count,
        "the kill must land mid-stream"
    );
    let in_flight_at_kill = sent_log(&http, &sim_url).await.messages.len() as u64;
    set_faults(&http, &sim_url, json!({ "delay_next": 0 })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut runtime = Runtime::spawn(&config);
    wait_ready(&http, &url).await;
    let mut replies = first_replies.await.unwrap();
    let done = eventually(180, "stream finished", || async {
        let p = progress(&http, &sim_url).await;
        p.done.then_some(p)
    })
    .await;
    assert_eq!(done.refused, 0, "valid messages were refused: {done:?}");
    assert_eq!(done.acknowledged, count);
    assert!(done.attempts > count, "the outage forced retries: {done:?}");
    // Replies for the rest (same keys again for the first ones: no second message).
    replies.extend(reply_to_all(http.clone(), url.clone()).await);

    let store = Store::connect(
        &format!("sqlite:{}", db.display()),
        &ConnectOptions::default(),
    )
    .await
    .unwrap();
    stored_exactly_once(&store, count, identities, replies.len()).await;

    let log = sent_log(&http, &sim_url).await;
    delivered_exactly_once(&log, &replies, in_flight_at_kill);
    eprintln!(
        "crash test: {count} inbound in {} attempts, {} replies, {} re-sends deduped by correlation_id",
        done.attempts,
        replies.len(),
        log.duplicates
    );
    store.close().await;
    runtime.kill();
    sim_task.abort();
}
