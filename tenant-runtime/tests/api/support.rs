//! Test helpers shared by the integration tests: the `both!` macro, stores on both databases, a
//! runtime plus simulator on real sockets, and signed webhook requests.

use std::net::SocketAddr;
use std::time::Duration;

use contact_runtime::app::Application;
use contact_runtime::channels::signature;
use contact_runtime::channels::simulator::{SimSettings, Simulator};
use contact_runtime::config::{ChannelApp, Region, Secret, Settings};
use contact_runtime::domain::ChannelType;
use contact_runtime::storage::{ConnectOptions, Store};
use contact_tests::postgres::PgServer;

/// Defines `sqlite::<case>` and `postgres::<case>` tests for every listed `async fn case(db: Db)`
/// of the calling module. Four worker threads: the racing cases (picks, claims, chainers) need
/// tasks that really run at once.
macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case($crate::support::Db::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case($crate::support::Db::Postgres).await;
                }
            )*
        }
    };
}
pub(crate) use both;

/// Keeps a test database alive.
pub enum DbGuard {
    /// SQLite file in a temporary directory.
    Sqlite(
        #[expect(
            dead_code,
            reason = "held for its Drop: the directory lives as long as the guard"
        )]
        tempfile::TempDir,
    ),
    /// A database on the shared PostgreSQL (dropped with the server).
    Postgres,
    /// The caller keeps the database alive.
    External,
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A fresh database URL.
pub fn database_url(db: Db) -> (String, DbGuard) {
    match db {
        Db::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite:{}", dir.path().join("contact.sqlite").display());
            (url, DbGuard::Sqlite(dir))
        }
        Db::Postgres => {
            let url = PgServer::shared()
                .create_database()
                .expect("create test database");
            (url, DbGuard::Postgres)
        }
    }
}

/// A migrated store on a fresh database.
pub async fn store(db: Db) -> (Store, DbGuard) {
    let (url, guard) = database_url(db);
    let store = Store::connect(
        &url,
        &ConnectOptions {
            max_connections: 8,
            ..ConnectOptions::default()
        },
    )
    .await
    .expect("connect");
    store.migrate().await.expect("migrate");
    (store, guard)
}

/// A free loopback port.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Channel app used by the tests.
pub fn channel(name: &str, channel: ChannelType, sim: &str) -> ChannelApp {
    ChannelApp {
        name: name.to_owned(),
        channel,
        region: Region::Eu,
        project_id: "test-project".to_owned(),
        app_id: format!("APP{}", channel.as_str()),
        key_id: "test-key".to_owned(),
        key_secret: Secret("test-key-secret".to_owned()),
        webhook_secret: Secret(format!("{name}-secret")),
        base_url: Some(sim.to_owned()),
        key_id_file: None,
        key_secret_file: None,
        webhook_secret_file: None,
        category: None,
    }
}

/// Settings with a WhatsApp and an SMS app pointing at a simulator on `sim_addr`.
pub fn settings(database_url: &str, listen: SocketAddr, sim_addr: SocketAddr) -> Settings {
    let sim = format!("http://{sim_addr}");
    let mut s = Settings {
        listen,
        database_url: database_url.to_owned(),
        database_max_connections: 8,
        api_token: Some(Secret("test-token".to_owned())),
        channels: vec![
            channel("wa", ChannelType::Whatsapp, &sim),
            channel("sms", ChannelType::Sms, &sim),
        ],
        ..Settings::default()
    };
    s.sinch.auth_url = format!("{sim}/oauth2/token");
    s.outbox.poll_interval_ms = 50;
    s.outbox.base_backoff_ms = 50;
    s.outbox.max_backoff_ms = 400;
    s.outbox.request_timeout_ms = 2_000;
    s
}

/// A runtime and a simulator talking to each other over loopback HTTP.
pub struct Harness {
    pub url: String,
    pub sim_url: String,
    pub store: Store,
    pub settings: Settings,
    pub http: reqwest::Client,
    runtime: tokio::task::JoinHandle<()>,
    simulator: tokio::task::JoinHandle<()>,
    _db: DbGuard,
}

impl Harness {
    /// Starts both on `db`; `tweak` may adjust the settings first.
    pub async fn start(db: Db, tweak: impl FnOnce(&mut Settings)) -> Self {
        let (url, guard) = database_url(db);
        Self::start_on(url, guard, tweak).await
    }

    /// Starts both on an existing database URL.
    pub async fn start_on(url: String, guard: DbGuard, tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::start_full(url, guard, tweak, |_| {}).await
    }

    /// Starts both, adjusting the runtime's and the simulator's settings.
    pub async fn start_full(
        url: String,
        guard: DbGuard,
        tweak: impl FnOnce(&mut Settings),
        sim_tweak: impl FnOnce(&mut SimSettings),
    ) -> Self {
        // Both sockets are bound before anything else starts: no port can be taken in between.
        let runtime_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind runtime");
        let listen = runtime_listener.local_addr().unwrap();
        let runtime_url = format!("http://{listen}");
        let mut settings = settings(&url, listen, listen);
        tweak(&mut settings);
        let mut sim_settings =
            SimSettings::for_runtime(&settings, "127.0.0.1:0".parse().unwrap(), &runtime_url);
        sim_settings.report_delay_ms = 20;
        sim_tweak(&mut sim_settings);
        let sim = Simulator::bind(sim_settings).await.expect("bind simulator");
        let sim_addr = sim.local_addr();
        let sim_base = format!("http://{sim_addr}");
        settings.sinch.auth_url = format!("{sim_base}/oauth2/token");
        for app in &mut settings.channels {
            app.base_url = Some(sim_base.clone());
        }
        let simulator = tokio::spawn(async move {
            let _ = sim.run_until(std::future::pending()).await;
        });
        let app = Application::build_on(settings.clone(), runtime_listener)
            .await
            .expect("build runtime");
        let store = app.store().clone();
        let runtime = tokio::spawn(async move {
            let _ = app.run_until(std::future::pending()).await;
        });
        Self {
            url: runtime_url,
            sim_url: format!("http://{sim_addr}"),
            store,
            settings,
            http: {
                contact_runtime::install_tls_provider();
                reqwest::Client::new()
            },
            runtime,
            simulator,
            _db: guard,
        }
    }

    /// Stops the runtime (the simulator keeps running).
    pub fn stop_runtime(&self) {
        self.runtime.abort();
    }

    /// Signs `body` for channel app `app` and posts it to the webhook.
    pub async fn post_webhook(&self, app: &str, body: &str) -> (u16, serde_json::Value) {
        let nonce = uuid::Uuid::new_v4().to_string();
        let headers = signed(
            &self.settings,
            app,
            body,
            &nonce,
            chrono::Utc::now().timestamp(),
        );
        self.post_webhook_with(app, body, headers).await
    }

    /// Posts `body` with the given headers.
    pub async fn post_webhook_with(
        &self,
        app: &str,
        body: &str,
        headers: reqwest::header::HeaderMap,
    ) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .post(format!("{}/webhooks/sinch/{app}", self.url))
            .headers(headers)
            .body(body.to_owned())
            .send()
            .await
            .expect("webhook request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// An authenticated API request.
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth("test-token")
    }

    /// Row counts of the tables a webhook may touch.
    pub async fn counts(&self) -> Vec<i64> {
        counts(&self.store).await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.runtime.abort();
        self.simulator.abort();
    }
}

/// Row counts of the tables a webhook may touch.
pub async fn counts(store: &Store) -> Vec<i64> {
    let mut out = Vec::new();
    for t in [
        "contacts",
        "contact_identities",
        "conversations",
        "messages",
        "outbox",
        "webhook_nonces",
        "conversation_events",
    ] {
        out.push(store.count(t).await.unwrap());
    }
    out
}

/// Signature headers for `body` on channel app `app` of `settings`.
pub fn signed(
    settings: &Settings,
    app: &str,
    body: &str,
    nonce: &str,
    timestamp: i64,
) -> reqwest::header::HeaderMap {
    let secret = settings
        .channels
        .iter()
        .find(|c| c.name == app)
        .map(|c| c.webhook_secret.expose().to_owned())
        .unwrap_or_default();
    signature::signed_headers(&secret, body.as_bytes(), nonce, timestamp)
}

/// A compact inbound text callback.
pub fn inbound_text(channel: ChannelType, identity: &str, message_id: &str, text: &str) -> String {
    serde_json::json!({
        "app_id": "APP", "project_id": "test-project", "accepted_time": "2026-01-01T00:00:00Z",
        "message": {
            "id": message_id, "direction": "TO_APP",
            "contact_message": { "text_message": { "text": text } },
            "channel_identity": { "channel": channel.as_str(), "identity": identity, "app_id": "" },
            "processing_mode": "CONVERSATION"
        }
    })
    .to_string()
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stores one inbound WhatsApp text from `identity` straight through the store (no HTTP), which
/// queues a conversation; returns its id.
pub async fn queued(store: &Store, identity: &str) -> String {
    use contact_runtime::domain::MessageContent;
    use contact_runtime::storage::{InboundMessage, InboundOutcome, Nonce, new_id, now_ms};
    let msg = InboundMessage {
        channel_app: "wa".into(),
        channel: ChannelType::Whatsapp,
        identity: identity.into(),
        external_id: new_id(),
        content: MessageContent::Text { text: "hi".into() },
        category_id: None,
        reopen_closed_since: None,
    };
    let nonce = Nonce {
        channel_app: "wa".into(),
        nonce: new_id(),
        expires_at: now_ms() + 600_000,
    };
    match store.record_inbound(&nonce, &msg).await.unwrap() {
        InboundOutcome::Stored {
            conversation_id, ..
        } => conversation_id,
        other => panic!("{other:?}"),
    }
}
