//! Routing end to end: from a signed inbound webhook to the agent's live assignment event, at a
//! steady inbound rate, on SQLite and on PostgreSQL (a real server from the `contact-tests`
//! harness), beside the webhook's own acknowledgement latency in the same run.
//!
//! ```text
//! cargo bench -p contact-runtime --bench routing_e2e
//! CONTACT_BENCH_RATE=100 CONTACT_BENCH_SECS=30 CONTACT_BENCH_AGENTS=100 cargo bench -p contact-runtime --bench routing_e2e
//! ```
//!
//! Every webhook is a new customer, so every one opens a conversation that routing assigns.
//! Agents are real sessions holding `GET /api/v1/live` streams (which is also what makes them
//! connected for routing); the time is taken when the assigned agent's stream delivers the
//! `conversation_assigned` event. The path measured: HTTP, signature, one ingest transaction,
//! 200 → the allocator is woken, reads the event, categorizes, decides (full explanation),
//! claims in one transaction → the live tailer reads the assignment event → SSE to the agent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contact_runtime::app::Application;
use contact_runtime::channels::signature;
use contact_runtime::config::{ChannelApp, Region, Secret, Settings};
use contact_runtime::domain::api::NewUser;
use contact_runtime::domain::{ChannelType, Role};
use contact_runtime::http::auth::password;
use contact_runtime::storage::{Store, new_id, now_ms};
use contact_tests::bench::{BACKENDS, BenchDatabases, env_u64, inbound_text, percentile};

const SECRET: &str = "bench-webhook-secret";

struct Run {
    backend: &'static str,
    sent: usize,
    rate: u64,
    agents: u64,
    ack_p50: Duration,
    ack_p99: Duration,
    e2e_p50: Duration,
    e2e_p99: Duration,
    e2e_max: Duration,
    /// Conversations the database has not assigned at the end.
    unassigned: usize,
    /// Assigned conversations whose event never reached the agent's stream.
    not_pushed: usize,
}

fn main() {
    // Warnings of the runtime (a routing step failing, the reconciliation finding a missed
    // conversation) show up next to the numbers.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONTACT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rate = env_u64("CONTACT_BENCH_RATE", 50);
    let secs = env_u64("CONTACT_BENCH_SECS", 20);
    let agents = env_u64("CONTACT_BENCH_AGENTS", 50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dbs = BenchDatabases::start().expect("start PostgreSQL for the benchmark");
    let mut runs = Vec::new();
    for backend in BACKENDS {
        let url = dbs.url(backend, "routing");
        runs.push(rt.block_on(run(backend, &url, rate, secs, agents)));
    }
    println!();
    println!(
        "| database | rate/s | webhooks | agents | p50 ack | p99 ack | p50 webhook → live assignment | p99 | max | unassigned | not pushed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for r in &runs {
        println!(
            "| {} | {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} |",
            r.backend,
            r.rate,
            r.sent,
            r.agents,
            ms(r.ack_p50),
            ms(r.ack_p99),
            ms(r.e2e_p50),
            ms(r.e2e_p99),
            ms(r.e2e_max),
            r.unassigned,
            r.not_pushed
        );
    }
}

fn settings(database_url: &str) -> Settings {
    let mut s = Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        database_url: database_url.to_owned(),
        api_token: Some(Secret("bench-token".into())),
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
    };
    // Enough room for every customer of the run: no conversation waits for capacity.
    s.routing.max_conversations_per_agent = 100;
    s
}

fn body(i: u64) -> String {
    inbound_text(
        "BENCHAPP",
        "bench",
        &format!("ROUTE{i:010}"),
        &identity(i),
        &format!("customer {i} needs help"),
    )
}

fn identity(i: u64) -> String {
    format!("4680{i:07}")
}

/// Assignment events seen by each agent's stream: conversation → when.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// Holds an agent's live stream and records the assignments it is told about.
async fn listen(http: reqwest::Client, url: String, cookie: String, user: String, seen: Seen) {
    let mut resp = http
        .get(format!("{url}/api/v1/live"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("live stream");
    assert_eq!(resp.status(), 200);
    let mut buf = String::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let at = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if !block.contains("event: conversation_assigned") {
                continue;
            }
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let event: serde_json::Value = serde_json::from_str(data.trim()).unwrap_or_default();
            if event["assigned_user_id"] == user.as_str()
                && let Some(c) = event["conversation_id"].as_str()
            {
                seen.lock().expect("seen").entry(c.to_owned()).or_insert(at);
            }
        }
    }
}

async fn run(backend: &'static str, url: &str, rate: u64, secs: u64, agents: u64) -> Run {
    let app = Application::build(settings(url))
        .await
        .expect("build runtime");
    let base = format!("http://{}", app.local_addr());
    let store = app.store().clone();
    let server = tokio::spawn(app.run_until(std::future::pending()));
    contact_runtime::install_tls_provider();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");

    // Agents with sessions, each holding a live stream.
    let seen: Seen = Arc::default();
    let mut streams = Vec::new();
    let mut ids = Vec::new();
    for a in 0..agents {
        let user = store
            .create_user(&NewUser {
                email: format!("agent{a}@bench.test"),
                display_name: format!("Agent {a}"),
                role: Role::Agent,
                password_hash: None,
                skill_ids: vec![],
            })
            .await
            .expect("agent");
        let sid = new_id();
        store
            .create_session(
                &password::token_hash(&sid),
                &user.id,
                "csrf",
                now_ms() + 3_600_000,
            )
            .await
            .expect("session");
        streams.push(tokio::spawn(listen(
            http.clone(),
            base.clone(),
            format!("contact_session={sid}"),
            user.id.clone(),
            seen.clone(),
        )));
        ids.push(user.id);
    }
    // Wait until every agent is recorded as connected (the allocator reads presence before any
    // later conversation).
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &ids {
        loop {
            let row = store.routing_agent(id, now_ms()).await.expect("agent row");
            if row.is_some_and(|r| r.sessions > 0) {
                break;
            }
            assert!(Instant::now() < deadline, "agents never connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Steady inbound rate: one new customer every 1/rate seconds, each send on its own task.
    let total = rate * secs;
    let webhook = format!("{base}/webhooks/sinch/wa");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = Vec::new();
    for i in 0..total {
        tick.tick().await;
        let (http, webhook) = (http.clone(), webhook.clone());
        sends.push(tokio::spawn(async move {
            let body = body(i);
            let started = Instant::now();
            let headers = signature::signed_headers(
                SECRET,
                body.as_bytes(),
                &new_id(),
                chrono::Utc::now().timestamp(),
            );
            let resp = http
                .post(&webhook)
                .headers(headers)
                .body(body)
                .send()
                .await
                .expect("webhook");
            assert_eq!(resp.status(), 200, "webhook refused");
            (identity(i), started, started.elapsed())
        }));
    }
    let mut sent = Vec::new();
    for s in sends {
        sent.push(s.await.expect("sender"));
    }
    // Wait for the stragglers (at most 30 s), then join sends to assignments.
    let (by_identity, unassigned) = loop {
        let (map, unassigned) = conversations_by_identity(&store).await;
        let done = map.len() == sent.len()
            && map
                .values()
                .all(|c| seen.lock().expect("seen").contains_key(c));
        if done || Instant::now() > deadline + Duration::from_secs(30 + secs) {
            break (map, unassigned);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Counted again after the wait: the read above may predate the last assignments.
    let unassigned = if unassigned > 0 {
        conversations_by_identity(&store).await.1
    } else {
        0
    };
    let seen = seen.lock().expect("seen").clone();
    let mut acks = Vec::new();
    let mut e2e = Vec::new();
    let mut not_pushed = 0;
    for (identity, started, ack) in &sent {
        acks.push(*ack);
        match by_identity.get(identity).and_then(|c| seen.get(c)) {
            Some(at) => e2e.push(at.duration_since(*started)),
            None => not_pushed += 1,
        }
    }
    for s in streams {
        s.abort();
    }
    server.abort();
    store.close().await;
    acks.sort();
    e2e.sort();
    Run {
        backend,
        sent: sent.len(),
        rate,
        agents,
        ack_p50: percentile(&acks, 0.50),
        ack_p99: percentile(&acks, 0.99),
        e2e_p50: percentile(&e2e, 0.50),
        e2e_p99: percentile(&e2e, 0.99),
        e2e_max: *e2e.last().expect("at least one assignment"),
        unassigned,
        not_pushed: not_pushed - unassigned.min(not_pushed),
    }
}

/// Conversation id by customer identity, and how many are not assigned.
async fn conversations_by_identity(store: &Store) -> (HashMap<String, String>, usize) {
    let mut out = HashMap::new();
    let mut unassigned = 0;
    let all = store
        .conversations(&contact_runtime::storage::ConversationFilter {
            status: None,
            limit: 100_000,
        })
        .await
        .expect("conversations");
    let total = all.len();
    for c in all {
        if c.status != contact_runtime::domain::ConversationStatus::Assigned {
            unassigned += 1;
            tracing::debug!(identity = %c.identity, id = %c.id, status = ?c.status, total, "not assigned");
        }
        out.insert(c.identity, c.id);
    }
    (out, unassigned)
}
