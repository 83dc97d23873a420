//! A local simulator of the Conversation API, for tests and the demo. Never the production path.
//!
//! It plays Sinch for the channel apps of a runtime's settings:
//! - `POST /oauth2/token`: client-credentials tokens (HTTP Basic `key_id:key_secret`);
//! - `POST /v1/projects/{project}/messages:send`: bearer-checked (401), Google-RPC-style errors,
//!   deduplication on `correlation_id`, then signed delivery reports (`QUEUED_ON_CHANNEL`,
//!   `DELIVERED`, `READ`) posted back to the runtime. WhatsApp's 24-hour customer-care window is
//!   enforced the way the API does it, asynchronously: a non-template send to a customer whose
//!   last message is older than the window is accepted (200), then reported `FAILED` with
//!   `OUTSIDE_ALLOWED_SENDING_WINDOW`. The simulator only knows the customers it relayed messages
//!   for (or was told about with `/_sim/window`); a recipient it never saw write counts as inside
//!   the window, because tests may post inbound webhooks to the runtime directly;
//! - `POST /_sim/window`: set when a customer last wrote (e.g. 25 hours ago), so the window can
//!   be closed without waiting;
//! - `GET|DELETE /_sim/sent`: what it accepted (and how often each was re-sent);
//! - `GET|POST /_sim/faults`: the next N sends fail with 500, 429 + `Retry-After`, or a delay;
//! - `POST /_sim/inbound`: a customer writes (any content type), signed and posted to the runtime;
//!   a customer's first message is preceded, as in CONVERSATION mode, by `contact_create_notification`
//!   and `conversation_start_notification` callbacks naming the simulator's contact and
//!   conversation ids, which the message callbacks then carry;
//! - `POST /_sim/callback`: any callback body, signed and posted (delivery reports, odd kinds);
//! - `POST|GET /_sim/stream`: many customer messages, each retried until acknowledged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use super::signature;
use crate::config::Settings;
use crate::domain::ChannelType;

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("failed to bind the simulator on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("simulator server failed")]
    Serve(#[source] std::io::Error),
    /// Its HTTP client could not be built (in practice: no CA certificates on the system).
    #[error(
        "cannot build the simulator's HTTP client: {0} (install CA certificates or set SSL_CERT_FILE)"
    )]
    Http(String),
}

/// One channel app as the simulator sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimChannel {
    /// Name in the runtime's webhook path.
    pub name: String,
    /// Channel type.
    pub channel: ChannelType,
    /// Conversation API app id.
    pub app_id: String,
    /// Project id.
    pub project_id: String,
    /// Access key id.
    pub key_id: String,
    /// Access key secret.
    pub key_secret: String,
    /// Webhook signing secret.
    pub webhook_secret: String,
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimSettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Base URL of the runtime that receives callbacks.
    pub runtime_url: String,
    /// The simulated channel apps.
    pub channels: Vec<SimChannel>,
    /// Lifetime of issued tokens.
    pub token_ttl_secs: u64,
    /// Whether accepted sends produce delivery reports.
    pub delivery_reports: bool,
    /// Delay between delivery reports of one message.
    pub report_delay_ms: u64,
    /// WhatsApp's customer-care window (24 hours); `None` turns the check off.
    pub whatsapp_window: Option<Duration>,
    /// Whether a customer's first message through `/_sim/inbound` is preceded by the
    /// `contact_create_notification` and `conversation_start_notification` callbacks.
    pub lifecycle_callbacks: bool,
}

/// The reason code of a send outside WhatsApp's customer-care window.
pub(crate) const OUTSIDE_WINDOW: &str = "OUTSIDE_ALLOWED_SENDING_WINDOW";

/// `POST /_sim/window` request: when a customer last wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WindowRequest {
    /// Channel app name (default: the first one).
    #[serde(default)]
    pub channel: Option<String>,
    /// The customer's identity.
    pub identity: String,
    /// How long ago the customer's last message was.
    pub last_inbound_secs_ago: i64,
}

/// What the simulator knows of a customer (per app and identity), like Sinch's contact and
/// active conversation.
#[derive(Debug, Clone)]
struct SimContact {
    contact_id: String,
    conversation_id: String,
    last_inbound: chrono::DateTime<chrono::Utc>,
}

impl SimSettings {
    /// Simulates exactly the channel apps of a runtime's settings.
    pub fn for_runtime(settings: &Settings, listen: SocketAddr, runtime_url: &str) -> Self {
        Self {
            listen,
            runtime_url: runtime_url.trim_end_matches('/').to_owned(),
            channels: settings
                .channels
                .iter()
                .map(|a| SimChannel {
                    name: a.name.clone(),
                    channel: a.channel,
                    app_id: a.app_id.clone(),
                    project_id: a.project_id.clone(),
                    key_id: a.key_id.clone(),
                    key_secret: a.key_secret.expose().to_owned(),
                    webhook_secret: a.webhook_secret.expose().to_owned(),
                })
                .collect(),
            token_ttl_secs: 3600,
            delivery_reports: true,
            report_delay_ms: 200,
            whatsapp_window: Some(Duration::from_secs(24 * 3600)),
            lifecycle_callbacks: true,
        }
    }
}

/// A request the simulator accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SentRecord {
    /// The message id it answered with.
    pub message_id: String,
    /// The request's `correlation_id`.
    pub correlation_id: Option<String>,
    /// The app id.
    pub app_id: String,
    /// The recipient identity.
    pub identity: String,
    /// The full request body.
    pub body: Value,
    /// How many times this `correlation_id` was received (1 = no duplicate).
    pub received: u32,
}

/// `GET /_sim/sent` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SentLog {
    /// Accepted messages, one per `correlation_id`.
    pub messages: Vec<SentRecord>,
    /// Requests that repeated an earlier `correlation_id` (answered, not delivered again).
    pub duplicates: u64,
}

/// Fault injection knobs (`POST /_sim/faults`; absent fields keep their value).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Faults {
    /// The next N sends answer 500.
    pub fail_next: u32,
    /// The next N sends answer 429.
    pub throttle_next: u32,
    /// `Retry-After` seconds on those 429s.
    pub retry_after_secs: u64,
    /// The next N sends wait `delay_ms` before answering (a send that succeeds is recorded
    /// first, so a client that gives up meanwhile has still delivered it).
    pub delay_next: u32,
    /// How long those waits are.
    pub delay_ms: u64,
}

/// `POST /_sim/stream` request: many customer messages, each retried until acknowledged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StreamRequest {
    /// Channel app name.
    pub channel: String,
    /// How many messages.
    pub count: u64,
    /// Messages in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Distinct customers the messages come from.
    #[serde(default = "default_identities")]
    pub identities: u64,
    /// Message ids are `{prefix}{index:08}`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_concurrency() -> usize {
    16
}
fn default_identities() -> u64 {
    100
}
fn default_prefix() -> String {
    "SIMSTREAM".to_owned()
}

/// `GET /_sim/stream` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamProgress {
    /// Messages requested.
    pub requested: u64,
    /// Messages the runtime acknowledged with 2xx.
    pub acknowledged: u64,
    /// HTTP attempts made (retries included).
    pub attempts: u64,
    /// Messages refused with a 4xx (a bug: these are valid).
    pub refused: u64,
    /// Whether the stream finished.
    pub done: bool,
}

/// `POST /_sim/inbound` request: a customer writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InboundRequest {
    /// Channel app name (default: the first one).
    #[serde(default)]
    pub channel: Option<String>,
    /// The customer's identity (default `46700000001`).
    #[serde(default)]
    pub identity: Option<String>,
    /// Plain text (shorthand for `contact_message: {text_message: {text}}`).
    #[serde(default)]
    pub text: Option<String>,
    /// Any `contact_message` object (media, media card, location, choice response, …).
    #[serde(default)]
    pub contact_message: Option<Value>,
    /// Message id (default: a fresh one).
    #[serde(default)]
    pub message_id: Option<String>,
}

/// `POST /_sim/callback` request: sign and post an arbitrary callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CallbackRequest {
    /// Channel app name.
    pub channel: String,
    /// The callback body.
    pub body: Value,
}

struct Sim {
    settings: SimSettings,
    http: reqwest::Client,
    tokens: Mutex<HashMap<String, Instant>>,
    sent: Mutex<(Vec<SentRecord>, HashMap<String, usize>, u64)>,
    faults: Mutex<Faults>,
    stream: Mutex<StreamProgress>,
    seq: AtomicU64,
    /// Keyed by (app id, identity).
    contacts: Mutex<HashMap<(String, String), SimContact>>,
}

/// A bound simulator.
pub struct Simulator {
    listener: TcpListener,
    sim: Arc<Sim>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("listen", &self.listener.local_addr().ok())
            .finish()
    }
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A 26-character ULID-looking id like the Conversation API's (time-ordered, random tail).
pub(crate) fn ulid_like() -> String {
    let n = uuid::Uuid::now_v7().as_u128();
    (0..26)
        .rev()
        .map(|i| CROCKFORD[((n >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// The callback a customer message produces (CONVERSATION-mode shape, compact JSON), with
/// blank contact and conversation ids.
pub(crate) fn inbound_callback(
    ch: &SimChannel,
    identity: &str,
    message_id: &str,
    contact_message: &Value,
) -> Value {
    inbound_callback_in(ch, identity, message_id, contact_message, "", "")
}

/// [`inbound_callback`] naming the Conversation API's contact and conversation.
pub(crate) fn inbound_callback_in(
    ch: &SimChannel,
    identity: &str,
    message_id: &str,
    contact_message: &Value,
    contact_id: &str,
    conversation_id: &str,
) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({
        "app_id": ch.app_id,
        "accepted_time": now,
        "event_time": now,
        "project_id": ch.project_id,
        "message": {
            "id": message_id,
            "direction": "TO_APP",
            "contact_message": contact_message,
            "channel_identity": { "channel": ch.channel.as_str(), "identity": identity, "app_id": "" },
            "conversation_id": conversation_id,
            "contact_id": contact_id,
            "metadata": "",
            "accept_time": now,
            "processing_mode": "CONVERSATION",
            "injected": false
        },
        "message_metadata": "",
        "correlation_id": ""
    })
}

/// A delivery report callback.
pub(crate) fn delivery_report_callback(
    ch: &SimChannel,
    identity: &str,
    message_id: &str,
    correlation_id: Option<&str>,
    status: &str,
) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({
        "app_id": ch.app_id,
        "accepted_time": now,
        "event_time": now,
        "project_id": ch.project_id,
        "message_delivery_report": {
            "message_id": message_id,
            "conversation_id": "",
            "status": status,
            "channel_identity": { "channel": ch.channel.as_str(), "identity": identity, "app_id": "" },
            "contact_id": "",
            "metadata": "",
            "processing_mode": "CONVERSATION"
        },
        "message_metadata": "",
        "correlation_id": correlation_id.unwrap_or("")
    })
}

/// A `FAILED` delivery report for a send outside WhatsApp's customer-care window, with the
/// reason the API gives.
pub(crate) fn window_failure_callback(
    ch: &SimChannel,
    identity: &str,
    message_id: &str,
    correlation_id: Option<&str>,
) -> Value {
    let mut body = delivery_report_callback(ch, identity, message_id, correlation_id, "FAILED");
    body["message_delivery_report"]["reason"] = json!({
        "code": OUTSIDE_WINDOW,
        "description": "The underlying channel reported: Message failed to send because more than 24 hours have passed since the customer last replied to this number",
        "sub_code": "UNSPECIFIED_SUB_CODE"
    });
    body
}

/// `contact_create_notification`: the Conversation API created a contact for a new identity.
pub(crate) fn contact_create_callback(ch: &SimChannel, identity: &str, contact_id: &str) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({
        "app_id": ch.app_id,
        "project_id": ch.project_id,
        "accepted_time": now,
        "contact_create_notification": { "contact": {
            "id": contact_id,
            "channel_identities": [ { "channel": ch.channel.as_str(), "identity": identity, "app_id": "" } ],
            "channel_priority": [ ch.channel.as_str() ],
            "display_name": "Unknown", "email": "", "external_id": "", "metadata": "",
            "language": "UNSPECIFIED"
        } },
        "message_metadata": ""
    })
}

/// `conversation_start_notification`: a new active conversation for the contact on the app.
pub(crate) fn conversation_start_callback(
    ch: &SimChannel,
    contact_id: &str,
    conversation_id: &str,
) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({
        "app_id": ch.app_id,
        "project_id": ch.project_id,
        "accepted_time": now,
        "conversation_start_notification": { "conversation": {
            "id": conversation_id, "app_id": ch.app_id, "contact_id": contact_id,
            "active_channel": ch.channel.as_str(), "active": true, "last_received": now,
            "metadata": "", "metadata_json": {}
        } },
        "message_metadata": ""
    })
}

/// Whether a send of `message` to a customer whose last message was at `last_inbound` breaks
/// WhatsApp's customer-care window of length `window` at `now` (templates are always allowed;
/// an unknown customer counts as inside, see the module docs).
fn outside_window(
    window: Option<Duration>,
    message: &Value,
    last_inbound: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let (Some(window), Some(last)) = (window, last_inbound) else {
        return false;
    };
    if message.get("template_message").is_some() {
        return false;
    }
    chrono::TimeDelta::from_std(window).is_ok_and(|w| now - last > w)
}

/// The `contact_message` of stream message `i`: cycles through every inbound content type.
pub(crate) fn sample_contact_message(i: u64) -> Value {
    match i % 5 {
        0 | 1 => json!({ "text_message": { "text": format!("Hello, this is message {i}") } }),
        2 => json!({ "media_message": { "url": format!("https://media.example.test/{i}.jpg") } }),
        3 => {
            json!({ "media_card_message": { "url": format!("https://media.example.test/{i}.jpg"), "caption": format!("photo {i}") } })
        }
        _ => {
            json!({ "location_message": { "coordinates": { "latitude": 59.33, "longitude": 18.06 }, "title": format!("spot {i}") } })
        }
    }
}

/// The simulator's own endpoints (`/_sim/…`) answer errors as `{"error": message}`.
fn sim_error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

fn rpc_error(status: StatusCode, rpc: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": status.as_u16(), "message": message, "status": rpc, "details": [] } })),
    )
        .into_response()
}

impl Simulator {
    /// Binds the simulator.
    pub async fn bind(settings: SimSettings) -> Result<Self, Error> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: settings.listen,
                source,
            })?;
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| Error::Http(super::sinch::build_error(&e)))?;
        Ok(Self {
            listener,
            sim: Arc::new(Sim {
                settings,
                http,
                tokens: Mutex::new(HashMap::new()),
                sent: Mutex::new((Vec::new(), HashMap::new(), 0)),
                faults: Mutex::new(Faults::default()),
                stream: Mutex::new(StreamProgress::default()),
                seq: AtomicU64::new(0),
                contacts: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.sim.settings.listen)
    }

    /// Serves until `shutdown` resolves.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let app = Router::new()
            .route("/oauth2/token", post(token))
            .route("/v1/projects/{project}/messages:send", post(send))
            .route("/_sim/sent", get(sent).delete(clear_sent))
            .route("/_sim/faults", get(get_faults).post(set_faults))
            .route("/_sim/inbound", post(inbound))
            .route("/_sim/window", post(set_window))
            .route("/_sim/callback", post(callback))
            .route("/_sim/stream", get(stream_progress).post(start_stream))
            .route("/_sim/healthz", get(|| async { "ok" }))
            .with_state(self.sim);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve)
    }
}

impl Sim {
    fn channel(&self, name: Option<&str>) -> Option<&SimChannel> {
        match name {
            Some(n) => self.settings.channels.iter().find(|c| c.name == n),
            None => self.settings.channels.first(),
        }
    }

    /// Signs `body` with a fresh nonce and posts it to the runtime's webhook of `ch`.
    async fn post_callback(&self, ch: &SimChannel, body: &[u8]) -> Result<(u16, String), String> {
        let nonce = ulid_like();
        let headers = signature::signed_headers(
            &ch.webhook_secret,
            body,
            &nonce,
            chrono::Utc::now().timestamp(),
        );
        let url = format!("{}/webhooks/sinch/{}", self.settings.runtime_url, ch.name);
        let resp = self
            .http
            .post(url)
            .headers(headers)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.unwrap_or_default()))
    }

    fn next_id(&self) -> String {
        self.seq.fetch_add(1, Ordering::Relaxed);
        ulid_like()
    }

    /// Records that `identity` wrote on `ch` now; returns its contact and whether it is new.
    async fn customer_wrote(&self, ch: &SimChannel, identity: &str) -> (SimContact, bool) {
        let mut contacts = self.contacts.lock().await;
        let key = (ch.app_id.clone(), identity.to_owned());
        let new = !contacts.contains_key(&key);
        let c = contacts.entry(key).or_insert_with(|| SimContact {
            contact_id: ulid_like(),
            conversation_id: ulid_like(),
            last_inbound: chrono::Utc::now(),
        });
        c.last_inbound = chrono::Utc::now();
        (c.clone(), new)
    }
}

async fn token(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let creds = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let valid = creds
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .is_some_and(|(id, secret)| {
            sim.settings
                .channels
                .iter()
                .any(|c| c.key_id == id && c.key_secret == secret)
        });
    if !valid {
        // OAuth2's own error shape (RFC 6749 §5.2), as the real token endpoint answers.
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_client", "error_description": "bad key id or secret" })),
        )
            .into_response();
    }
    if !String::from_utf8_lossy(&body).contains("grant_type=client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "unsupported_grant_type" })),
        )
            .into_response();
    }
    let token = format!("sim-{}", uuid::Uuid::new_v4());
    let ttl = sim.settings.token_ttl_secs;
    sim.tokens
        .lock()
        .await
        .insert(token.clone(), Instant::now() + Duration::from_secs(ttl));
    Json(json!({ "access_token": token, "expires_in": ttl, "scope": "", "token_type": "bearer" }))
        .into_response()
}

/// Whether the request carries a bearer token the simulator issued and that has not expired.
async fn authorised(sim: &Sim, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    sim.tokens
        .lock()
        .await
        .get(bearer)
        .is_some_and(|exp| *exp > Instant::now())
}

/// Takes this request's share of the injected faults: a delay, a 500, or a 429's `Retry-After`.
async fn take_faults(sim: &Sim) -> (Option<Duration>, bool, Option<u64>) {
    let mut f = sim.faults.lock().await;
    let delay = (f.delay_next > 0).then(|| {
        f.delay_next -= 1;
        Duration::from_millis(f.delay_ms)
    });
    let fail = f.fail_next > 0;
    if fail {
        f.fail_next -= 1;
    }
    let throttle = (!fail && f.throttle_next > 0).then(|| {
        f.throttle_next -= 1;
        f.retry_after_secs
    });
    (delay, fail, throttle)
}

/// Logs a send; a repeated `correlation_id` counts as a duplicate of the first send and gets its
/// message id. Returns the message id and whether the send is new.
async fn record_send(sim: &Sim, mut record: SentRecord) -> (String, bool) {
    let mut sent = sim.sent.lock().await;
    let (records, by_corr, duplicates) = &mut *sent;
    match record
        .correlation_id
        .as_ref()
        .and_then(|c| by_corr.get(c).copied())
    {
        Some(i) => {
            records[i].received += 1;
            *duplicates += 1;
            (records[i].message_id.clone(), false)
        }
        None => {
            record.message_id = sim.next_id();
            if let Some(c) = &record.correlation_id {
                by_corr.insert(c.clone(), records.len());
            }
            let message_id = record.message_id.clone();
            records.push(record);
            (message_id, true)
        }
    }
}

/// Sends a new message's callbacks later: the WhatsApp window refusal when `closed` (accepted
/// now, refused by the channel a moment later: the API's asynchronous check), else the delivery
/// reports when they are switched on.
fn spawn_reports(
    sim: &Arc<Sim>,
    ch: SimChannel,
    identity: String,
    message_id: String,
    correlation_id: Option<String>,
    closed: bool,
) {
    let statuses: &[&str] = if closed {
        &[]
    } else if sim.settings.delivery_reports {
        &["QUEUED_ON_CHANNEL", "DELIVERED", "READ"]
    } else {
        return;
    };
    let sim = sim.clone();
    tokio::spawn(async move {
        let delay = Duration::from_millis(sim.settings.report_delay_ms);
        let bodies: Vec<String> = if closed {
            vec![
                window_failure_callback(&ch, &identity, &message_id, correlation_id.as_deref())
                    .to_string(),
            ]
        } else {
            statuses
                .iter()
                .map(|status| {
                    delivery_report_callback(
                        &ch,
                        &identity,
                        &message_id,
                        correlation_id.as_deref(),
                        status,
                    )
                    .to_string()
                })
                .collect()
        };
        for body in bodies {
            tokio::time::sleep(delay).await;
            if let Err(e) = sim.post_callback(&ch, body.as_bytes()).await {
                tracing::debug!(error = %e, "delivery report not delivered");
            }
        }
    });
}

async fn send(
    State(sim): State<Arc<Sim>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorised(&sim, &headers).await {
        return rpc_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    let (delay, fail, throttle) = take_faults(&sim).await;
    if let Some(d) = delay.filter(|_| fail || throttle.is_some()) {
        tokio::time::sleep(d).await;
    }
    if fail {
        return rpc_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Injected failure.",
        );
    }
    if let Some(secs) = throttle {
        let mut r = rpc_error(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            "Too many requests.",
        );
        if let Ok(v) = secs.to_string().parse() {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let Some(ch) = sim
        .settings
        .channels
        .iter()
        .find(|c| c.project_id == project)
        .cloned()
    else {
        return rpc_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Project not found.");
    };
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid JSON payload.",
        );
    };
    let app_id = req["app_id"].as_str().unwrap_or_default().to_owned();
    let identity = req
        .pointer("/recipient/identified_by/channel_identities/0/identity")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if app_id.is_empty() || identity.is_empty() || !req["message"].is_object() {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "app_id, recipient and message are required",
        );
    }
    let Some(ch) = sim
        .settings
        .channels
        .iter()
        .find(|c| c.app_id == app_id && c.project_id == ch.project_id)
        .cloned()
    else {
        return rpc_error(StatusCode::NOT_FOUND, "NOT_FOUND", "App not found.");
    };
    let correlation_id = req["correlation_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let (message_id, fresh) = record_send(
        &sim,
        SentRecord {
            message_id: String::new(),
            correlation_id: correlation_id.clone(),
            app_id,
            identity: identity.clone(),
            body: req.clone(),
            received: 1,
        },
    )
    .await;
    let closed = ch.channel == ChannelType::Whatsapp && {
        let last = sim
            .contacts
            .lock()
            .await
            .get(&(ch.app_id.clone(), identity.clone()))
            .map(|c| c.last_inbound);
        outside_window(
            sim.settings.whatsapp_window,
            &req["message"],
            last,
            chrono::Utc::now(),
        )
    };
    if fresh {
        spawn_reports(
            &sim,
            ch,
            identity,
            message_id.clone(),
            correlation_id,
            closed,
        );
    }
    // A slow answer comes after the send was taken: a client that gives up (or dies) meanwhile
    // has sent it all the same, which is the case the idempotency key exists for.
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    Json(json!({
        "message_id": message_id,
        "accepted_time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }))
    .into_response()
}

async fn sent(State(sim): State<Arc<Sim>>) -> Json<SentLog> {
    let sent = sim.sent.lock().await;
    Json(SentLog {
        messages: sent.0.clone(),
        duplicates: sent.2,
    })
}

async fn clear_sent(State(sim): State<Arc<Sim>>) -> StatusCode {
    *sim.sent.lock().await = (Vec::new(), HashMap::new(), 0);
    StatusCode::NO_CONTENT
}

async fn get_faults(State(sim): State<Arc<Sim>>) -> Json<Faults> {
    Json(sim.faults.lock().await.clone())
}

async fn set_faults(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            *sim.faults.lock().await = f.clone();
            Json(f).into_response()
        }
        Err(e) => sim_error(StatusCode::BAD_REQUEST, &e),
    }
}

async fn inbound(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let req: InboundRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return sim_error(StatusCode::BAD_REQUEST, &e);
        }
    };
    let Some(ch) = sim.channel(req.channel.as_deref()).cloned() else {
        return sim_error(StatusCode::NOT_FOUND, "no such channel");
    };
    let content = match (req.contact_message, req.text) {
        (Some(c), _) => c,
        (None, Some(text)) => json!({ "text_message": { "text": text } }),
        (None, None) => {
            return sim_error(StatusCode::BAD_REQUEST, "give `text` or `contact_message`");
        }
    };
    let identity = req.identity.unwrap_or_else(|| "46700000001".to_owned());
    let message_id = req.message_id.unwrap_or_else(|| sim.next_id());
    let (contact, new) = sim.customer_wrote(&ch, &identity).await;
    let mut lifecycle = Vec::new();
    if new && sim.settings.lifecycle_callbacks {
        for body in [
            contact_create_callback(&ch, &identity, &contact.contact_id),
            conversation_start_callback(&ch, &contact.contact_id, &contact.conversation_id),
        ] {
            let kind = body
                .as_object()
                .and_then(|o| o.keys().find(|k| k.ends_with("_notification")).cloned())
                .unwrap_or_default();
            let status = match sim.post_callback(&ch, body.to_string().as_bytes()).await {
                Ok((status, _)) => json!(status),
                Err(e) => json!(e),
            };
            lifecycle.push(json!({ "kind": kind, "runtime_status": status }));
        }
    }
    let callback = inbound_callback_in(
        &ch,
        &identity,
        &message_id,
        &content,
        &contact.contact_id,
        &contact.conversation_id,
    )
    .to_string();
    let mut resp = relay_json(&sim, &ch, callback.as_bytes(), &message_id).await;
    if let Ok(Value::Object(o)) = &mut resp {
        o.insert("lifecycle".into(), Value::Array(lifecycle));
    }
    match resp {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn set_window(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let req: WindowRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return sim_error(StatusCode::BAD_REQUEST, &e);
        }
    };
    let Some(ch) = sim.channel(req.channel.as_deref()).cloned() else {
        return sim_error(StatusCode::NOT_FOUND, "no such channel");
    };
    let (mut contact, _) = sim.customer_wrote(&ch, &req.identity).await;
    contact.last_inbound =
        chrono::Utc::now() - chrono::TimeDelta::seconds(req.last_inbound_secs_ago);
    sim.contacts
        .lock()
        .await
        .insert((ch.app_id.clone(), req.identity), contact);
    StatusCode::NO_CONTENT.into_response()
}

async fn callback(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let req: CallbackRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return sim_error(StatusCode::BAD_REQUEST, &e);
        }
    };
    let Some(ch) = sim.channel(Some(&req.channel)).cloned() else {
        return sim_error(StatusCode::NOT_FOUND, "no such channel");
    };
    relay(&sim, &ch, req.body.to_string().as_bytes(), "").await
}

async fn relay(sim: &Sim, ch: &SimChannel, body: &[u8], message_id: &str) -> Response {
    match relay_json(sim, ch, body, message_id).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// Posts a callback; what the runtime answered, or a 502 when it could not be reached.
async fn relay_json(
    sim: &Sim,
    ch: &SimChannel,
    body: &[u8],
    message_id: &str,
) -> Result<Value, Response> {
    match sim.post_callback(ch, body).await {
        Ok((status, text)) => Ok(json!({
            "message_id": message_id,
            "runtime_status": status,
            "runtime_response": serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
        })),
        Err(e) => Err(sim_error(
            StatusCode::BAD_GATEWAY,
            format!("runtime unreachable: {e}"),
        )),
    }
}

async fn stream_progress(State(sim): State<Arc<Sim>>) -> Json<StreamProgress> {
    Json(sim.stream.lock().await.clone())
}

async fn start_stream(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let req: StreamRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return sim_error(StatusCode::BAD_REQUEST, &e);
        }
    };
    let Some(ch) = sim.channel(Some(&req.channel)).cloned() else {
        return sim_error(StatusCode::NOT_FOUND, "no such channel");
    };
    *sim.stream.lock().await = StreamProgress {
        requested: req.count,
        ..StreamProgress::default()
    };
    tokio::spawn(run_stream(sim.clone(), ch, req));
    StatusCode::ACCEPTED.into_response()
}

async fn run_stream(sim: Arc<Sim>, ch: SimChannel, req: StreamRequest) {
    let identities = req.identities.max(1);
    futures::stream::iter(0..req.count)
        .for_each_concurrent(req.concurrency.max(1), |i| {
            let sim = sim.clone();
            let ch = ch.clone();
            let prefix = req.prefix.clone();
            async move {
                let identity = format!("4670{:07}", i % identities);
                let message_id = format!("{prefix}{i:08}");
                // The stream is a load generator: it keeps the window open for its customers
                // but sends no lifecycle callbacks.
                sim.customer_wrote(&ch, &identity).await;
                let body =
                    inbound_callback(&ch, &identity, &message_id, &sample_contact_message(i))
                        .to_string();
                let mut backoff = Duration::from_millis(20);
                loop {
                    sim.stream.lock().await.attempts += 1;
                    // Each attempt is signed anew (fresh nonce), as a redelivery would be.
                    match sim.post_callback(&ch, body.as_bytes()).await {
                        Ok((status, _)) if (200..300).contains(&status) => {
                            sim.stream.lock().await.acknowledged += 1;
                            break;
                        }
                        Ok((status, text)) if (400..500).contains(&status) && status != 408 => {
                            tracing::warn!(status, %text, %message_id, "stream message refused");
                            sim.stream.lock().await.refused += 1;
                            break;
                        }
                        // Connection refused (runtime down), 5xx, timeouts: retry.
                        _ => {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_millis(500));
                        }
                    }
                }
            }
        })
        .await;
    sim.stream.lock().await.done = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whatsapp_window_fails_late_free_form_messages_only() {
        let now = chrono::Utc::now();
        let day = Some(Duration::from_secs(24 * 3600));
        let text = json!({ "text_message": { "text": "hi" } });
        let template = json!({ "template_message": { "channel_template": {} } });
        let hours_ago = |h| Some(now - chrono::TimeDelta::hours(h));
        assert!(!outside_window(day, &text, hours_ago(23), now));
        assert!(outside_window(day, &text, hours_ago(25), now));
        assert!(!outside_window(day, &template, hours_ago(25), now));
        assert!(!outside_window(day, &text, None, now), "unknown customer");
        assert!(
            !outside_window(None, &text, hours_ago(25), now),
            "check off"
        );
    }

    #[test]
    fn ulid_like_ids() {
        let a = ulid_like();
        let b = ulid_like();
        assert_eq!(a.len(), 26);
        assert!(a.bytes().all(|c| CROCKFORD.contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn generated_callbacks_parse_back() {
        let ch = SimChannel {
            name: "wa".into(),
            channel: ChannelType::Whatsapp,
            app_id: "APP".into(),
            project_id: "P".into(),
            key_id: "k".into(),
            key_secret: "s".into(),
            webhook_secret: "w".into(),
        };
        for i in 0..5 {
            let body = inbound_callback(&ch, "+4670", &format!("M{i}"), &sample_contact_message(i));
            let parsed = super::super::callbacks::parse(body.to_string().as_bytes()).unwrap();
            assert!(
                matches!(parsed, super::super::callbacks::Callback::Message(ref m) if m.identity == "4670"),
                "{parsed:?}"
            );
        }
        for body in [
            contact_create_callback(&ch, "4670", "C1"),
            conversation_start_callback(&ch, "C1", "V1"),
        ] {
            assert!(matches!(
                super::super::callbacks::parse(body.to_string().as_bytes()).unwrap(),
                super::super::callbacks::Callback::Ignored { .. }
            ));
        }
        let failed = window_failure_callback(&ch, "4670", "M", Some("C"));
        match super::super::callbacks::parse(failed.to_string().as_bytes()).unwrap() {
            super::super::callbacks::Callback::DeliveryReport(r) => {
                assert_eq!(r.status, Some(crate::domain::DeliveryStatus::Failed));
                assert!(
                    r.reason
                        .unwrap()
                        .starts_with("OUTSIDE_ALLOWED_SENDING_WINDOW: ")
                );
            }
            other => panic!("{other:?}"),
        }
        let dr = delivery_report_callback(&ch, "4670", "M", Some("C"), "DELIVERED");
        assert!(matches!(
            super::super::callbacks::parse(dr.to_string().as_bytes()).unwrap(),
            super::super::callbacks::Callback::DeliveryReport(_)
        ));
    }
}
