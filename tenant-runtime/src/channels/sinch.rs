//! The Conversation API client: `messages:send` request bodies (pure), OAuth2 client-credentials
//! tokens (cached per key and refreshed a minute before they expire) and one send attempt with
//! its outcome classified for the outbox (accepted, retry later, give up).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::config::ChannelApp;
use crate::domain::MessageContent;

/// Errors of the client itself (classified into [`SendOutcome`] by [`Client::send`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token endpoint could not be reached or answered with an error.
    #[error("failed to obtain an access token: {0}")]
    Token(String),
    /// The HTTP client could not be built; in practice: no CA certificates to verify the API's
    /// TLS certificate with (an image without a CA bundle).
    #[error(
        "cannot build the Conversation API client: {0} (it verifies the API's TLS certificate with the system's CA certificates: install them, e.g. Debian's ca-certificates, or set SSL_CERT_FILE to a bundle)"
    )]
    Http(String),
}

/// Result of one `messages:send` attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// 200: the API took it; its message id.
    Accepted {
        /// Conversation API message id.
        message_id: String,
    },
    /// 429: try again no earlier than this.
    Throttled {
        /// From `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// Network error, timeout, 5xx, 401 (token expired early): try again with backoff.
    Transient {
        /// What went wrong.
        reason: String,
    },
    /// Any other 4xx: the request itself is wrong and will not get better.
    Rejected {
        /// What the API said.
        reason: String,
    },
}

/// Builds the `messages:send` body for a message to `identity` on `app`.
///
/// The recipient is addressed by channel identity (works in CONVERSATION and DISPATCH mode);
/// `correlation_id` carries our message id, which the far side uses to dedupe retries.
pub(crate) fn send_request(
    app: &ChannelApp,
    identity: &str,
    content: &MessageContent,
    correlation_id: &str,
    agent_name: Option<&str>,
) -> Value {
    let mut message = match content {
        MessageContent::Text { text } => json!({ "text_message": { "text": text } }),
        MessageContent::Media { url, caption: None } => json!({ "media_message": { "url": url } }),
        // media_message has no caption; a card with only media and a description is what the
        // API transcodes into "image with caption" on WhatsApp and others.
        MessageContent::Media {
            url,
            caption: Some(caption),
        } => {
            json!({ "card_message": { "title": "", "description": caption, "media_message": { "url": url } } })
        }
        MessageContent::Location {
            latitude,
            longitude,
            title,
            label,
        } => json!({ "location_message": {
            "coordinates": { "latitude": latitude, "longitude": longitude },
            "title": title,
            "label": label.clone().unwrap_or_default(),
        } }),
        MessageContent::Template {
            template_id,
            language_code,
            parameters,
        } => json!({ "template_message": { "channel_template": { "WHATSAPP": {
            "template_id": template_id,
            "language_code": language_code,
            "parameters": parameters,
        } } } }),
        // Rejected by the channel rules before anything is enqueued; kept total for safety.
        MessageContent::ChoiceResponse { .. } | MessageContent::Unsupported { .. } => {
            json!({ "text_message": { "text": "" } })
        }
    };
    if let Some(name) = agent_name {
        message["agent"] = json!({ "display_name": name, "type": "HUMAN" });
    }
    json!({
        "app_id": app.app_id,
        "recipient": { "identified_by": { "channel_identities": [
            { "channel": app.channel.as_str(), "identity": identity }
        ] } },
        "message": message,
        "channel_priority_order": [app.channel.as_str()],
        "correlation_id": correlation_id,
    })
}

#[derive(Debug, Clone)]
struct CachedToken {
    token: String,
    refresh_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default = "default_expires_in")]
    expires_in: u64,
}

fn default_expires_in() -> u64 {
    3600
}

#[derive(Deserialize)]
struct SendResponse {
    message_id: String,
}

/// reqwest's error when a client cannot be built, with its cause: its own message is only
/// "builder error".
pub(crate) fn build_error(e: &reqwest::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The most of a response body the client reads. A Conversation API answer is a few hundred
/// bytes; a host that sends more is not one, and must not cost the runtime memory.
const MAX_BODY: usize = 64 * 1024;

/// How much of a refused request's body a reason keeps. Reasons are stored with the message and
/// shown in the Configurator: enough to name the API's error, never a page of someone's server.
const REASON_CHARS: usize = 200;

/// The body of `resp`, at most [`MAX_BODY`] bytes of it (lossy UTF-8); the rest is not read.
async fn read_bounded(mut resp: reqwest::Response) -> Result<String, String> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        let room = MAX_BODY - buf.len();
        if chunk.len() >= room {
            buf.extend_from_slice(&chunk[..room]);
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `body` as it may appear in a reason: control characters and runs of whitespace become one
/// space, and at most [`REASON_CHARS`] characters are kept (an ellipsis says that more was cut).
fn excerpt(body: &str) -> String {
    let folded = body
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match folded.char_indices().nth(REASON_CHARS) {
        Some((at, _)) => format!("{}…", &folded[..at]),
        None => folded,
    }
}

/// Conversation API client shared by every channel app.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    auth_url: String,
    tokens: Mutex<HashMap<String, CachedToken>>,
}

impl Client {
    /// A client using `auth_url` for tokens and `timeout` per request. Fails, naming what is
    /// missing, when the system has no CA certificates.
    pub fn new(auth_url: &str, timeout: Duration) -> Result<Self, Error> {
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::Http(build_error(&e)))?;
        Ok(Self {
            http,
            auth_url: auth_url.to_owned(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// A bearer token for `app`'s access key, from cache when still fresh.
    pub async fn token(&self, app: &ChannelApp) -> Result<String, Error> {
        let mut tokens = self.tokens.lock().await;
        if let Some(t) = tokens.get(&app.key_id)
            && t.refresh_at > Instant::now()
        {
            return Ok(t.token.clone());
        }
        // Holding the lock while fetching means concurrent senders wait for one fetch instead
        // of stampeding the token endpoint.
        let resp = self
            .http
            .post(&self.auth_url)
            .basic_auth(&app.key_id, Some(app.key_secret.expose()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| Error::Token(e.to_string()))?;
        let status = resp.status();
        let body = read_bounded(resp).await.map_err(Error::Token)?;
        if !status.is_success() {
            return Err(Error::Token(format!("{status}: {}", excerpt(&body))));
        }
        let token: TokenResponse =
            serde_json::from_str(&body).map_err(|e| Error::Token(e.to_string()))?;
        // Refresh a minute early (or halfway for very short-lived tokens).
        let lifetime = Duration::from_secs(token.expires_in);
        let margin = Duration::from_secs(60).min(lifetime / 2);
        tokens.insert(
            app.key_id.clone(),
            CachedToken {
                token: token.access_token.clone(),
                refresh_at: Instant::now() + lifetime - margin,
            },
        );
        Ok(token.access_token)
    }

    async fn forget_token(&self, app: &ChannelApp) {
        self.tokens.lock().await.remove(&app.key_id);
    }

    /// One `messages:send` attempt with `body` for `app`.
    pub async fn send(&self, app: &ChannelApp, body: &str) -> SendOutcome {
        let token = match self.token(app).await {
            Ok(t) => t,
            Err(e) => {
                return SendOutcome::Transient {
                    reason: e.to_string(),
                };
            }
        };
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            app.api_base(),
            app.project_id
        );
        let resp = match self
            .http
            .post(&url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_owned())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else {
                    "network error"
                };
                return SendOutcome::Transient {
                    reason: format!("{kind}: {e}"),
                };
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match read_bounded(resp).await {
            Ok(t) => t,
            Err(e) => {
                return SendOutcome::Transient {
                    reason: format!("{status}, body unreadable: {e}"),
                };
            }
        };
        match status.as_u16() {
            200..=299 => match serde_json::from_str::<SendResponse>(&text) {
                Ok(r) => SendOutcome::Accepted {
                    message_id: r.message_id,
                },
                Err(e) => SendOutcome::Transient {
                    reason: format!("unreadable 2xx response: {e}"),
                },
            },
            429 => SendOutcome::Throttled { retry_after },
            401 => {
                self.forget_token(app).await;
                SendOutcome::Transient {
                    reason: format!("401: {}", excerpt(&text)),
                }
            }
            408 | 500..=599 => SendOutcome::Transient {
                reason: format!("{status}: {}", excerpt(&text)),
            },
            _ => SendOutcome::Rejected {
                reason: format!("{status}: {}", excerpt(&text)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Region, Secret};
    use crate::domain::ChannelType;

    fn app() -> ChannelApp {
        ChannelApp {
            name: "wa".into(),
            channel: ChannelType::Whatsapp,
            region: Region::Eu,
            project_id: "p".into(),
            app_id: "APP".into(),
            key_id: "k".into(),
            key_secret: Secret("s".into()),
            webhook_secret: Secret("w".into()),
            base_url: None,
            key_id_file: None,
            key_secret_file: None,
            webhook_secret_file: None,
            category: None,
        }
    }

    #[test]
    fn text_request_shape() {
        let body = send_request(
            &app(),
            "46701234567",
            &MessageContent::Text {
                text: "Hello".into(),
            },
            "m-1",
            Some("Alice"),
        );
        assert_eq!(body["app_id"], "APP");
        assert_eq!(body["correlation_id"], "m-1");
        assert_eq!(body["message"]["text_message"]["text"], "Hello");
        assert_eq!(body["message"]["agent"]["display_name"], "Alice");
        assert_eq!(
            body["recipient"]["identified_by"]["channel_identities"][0]["identity"],
            "46701234567"
        );
        assert_eq!(body["channel_priority_order"][0], "WHATSAPP");
    }

    #[test]
    fn media_template_location_shapes() {
        let a = app();
        let media = send_request(
            &a,
            "1",
            &MessageContent::Media {
                url: "https://x/y.jpg".into(),
                caption: Some("box".into()),
            },
            "m",
            None,
        );
        assert_eq!(
            media["message"]["card_message"]["media_message"]["url"],
            "https://x/y.jpg"
        );
        assert_eq!(media["message"]["card_message"]["description"], "box");
        let tpl = send_request(
            &a,
            "1",
            &MessageContent::Template {
                template_id: "case_followup".into(),
                language_code: "en_US".into(),
                parameters: [("body[1]text".to_owned(), "T-1".to_owned())].into(),
            },
            "m",
            None,
        );
        assert_eq!(
            tpl["message"]["template_message"]["channel_template"]["WHATSAPP"]["parameters"]["body[1]text"],
            "T-1"
        );
        let loc = send_request(
            &a,
            "1",
            &MessageContent::Location {
                latitude: 1.5,
                longitude: 2.5,
                title: "HQ".into(),
                label: None,
            },
            "m",
            None,
        );
        assert_eq!(
            loc["message"]["location_message"]["coordinates"]["longitude"],
            2.5
        );
    }

    #[test]
    fn an_excerpt_is_short_and_on_one_line() {
        assert_eq!(
            excerpt("  {\"error\":\n\t\"bad\"}\r\n"),
            "{\"error\": \"bad\"}"
        );
        let long = "é".repeat(REASON_CHARS + 50);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), REASON_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt(&"x".repeat(REASON_CHARS)), "x".repeat(REASON_CHARS));
    }

    /// A host that answers a refusal with a megabyte of HTML costs the runtime at most
    /// `MAX_BODY` and leaves a one-line reason, not the page.
    #[tokio::test]
    async fn a_huge_refusal_is_read_bounded_and_kept_short() {
        use axum::{Json, Router, routing::post};
        let page = format!("<html>{}</html>", "<p>internal</p>\n".repeat(70_000));
        let router = Router::new()
            .route(
                "/token",
                post(|| async {
                    Json(serde_json::json!({ "access_token": "t", "expires_in": 3600 }))
                }),
            )
            .route(
                "/v1/projects/p/messages:send",
                post(move || async move { (axum::http::StatusCode::BAD_REQUEST, page) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });

        let client = Client::new(&format!("http://{addr}/token"), Duration::from_secs(5)).unwrap();
        let mut a = app();
        a.base_url = Some(format!("http://{addr}"));
        match client.send(&a, "{}").await {
            SendOutcome::Rejected { reason } => {
                assert!(
                    reason.starts_with("400 Bad Request: <html><p>internal</p>"),
                    "{reason}"
                );
                assert!(reason.chars().count() <= REASON_CHARS + 20, "{reason}");
                assert!(!reason.contains('\n'), "{reason}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        let resp = reqwest::Client::new()
            .post(format!("http://{addr}/v1/projects/p/messages:send"))
            .send()
            .await
            .unwrap();
        assert_eq!(read_bounded(resp).await.unwrap().len(), MAX_BODY);
    }
}
