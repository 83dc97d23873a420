//! Settings: a YAML file (rendered by the operator into a ConfigMap) overlaid by `CONTACT_*`
//! environment variables (where Kubernetes Secrets land), with defaults that run the demo.
//!
//! | variable | setting |
//! |---|---|
//! | `CONTACT_CONFIG` | path of the YAML file (optional) |
//! | `CONTACT_LISTEN` | `listen` |
//! | `CONTACT_DATABASE_URL` | `database_url` |
//! | `CONTACT_API_TOKEN` | `api_token` |
//! | `CONTACT_WEBHOOK_MAX_SKEW_SECS` | `webhook.max_skew_secs` |
//! | `CONTACT_SINCH_AUTH_URL` | `sinch.auth_url` |
//! | `CONTACT_CHANNEL_<NAME>_KEY_SECRET` | `channels[name].key_secret` (`NAME` upper-cased, `-` → `_`) |
//! | `CONTACT_CHANNEL_<NAME>_WEBHOOK_SECRET` | `channels[name].webhook_secret` |
//! | `CONTACT_BOOTSTRAP_ADMIN_EMAIL` | `auth.bootstrap_admin_email` |
//! | `CONTACT_BOOTSTRAP_ADMIN_PASSWORD` | `auth.bootstrap_admin_password` |
//! | `CONTACT_SECURE_COOKIES` | `auth.secure_cookies` (`true`/`false`; unset: secure behind `X-Forwarded-Proto: https`) |
//! | `CONTACT_PUBLIC_URL` | `auth.public_url` (base of invite links) |
//! | `CONTACT_MAINTENANCE_START`, `CONTACT_MAINTENANCE_END` | `maintenance` (RFC 3339, the next window) |

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::domain::ChannelType;

/// Errors while loading settings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("failed to read config file {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML for [`Settings`].
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said (with line and column).
        message: String,
    },
    /// An environment variable has a value of the wrong form.
    #[error("invalid value for {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// The settings are inconsistent.
    #[error("invalid settings: {0}")]
    Invalid(String),
}

/// A secret string: never printed by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Everything the runtime needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to serve HTTP on.
    pub listen: SocketAddr,
    /// `sqlite:path` (created if missing) or `postgres://…`.
    pub database_url: String,
    /// Largest database pool.
    pub database_max_connections: u32,
    /// SQLite only: fsync every commit (default). `false` trades power-loss durability of the
    /// last commits for speed; process crashes lose nothing either way.
    pub sqlite_fsync_each_commit: bool,
    /// Bearer token protecting `/api/v1` (until login exists); `None` leaves the API open.
    pub api_token: Option<Secret>,
    /// Inbound webhook checks.
    pub webhook: WebhookSettings,
    /// Outbound delivery.
    pub outbox: OutboxSettings,
    /// Conversation API endpoints shared by all channel apps.
    pub sinch: SinchSettings,
    /// The channel apps (one per Conversation API app and channel).
    pub channels: Vec<ChannelApp>,
    /// Logins, sessions and invites.
    pub auth: AuthSettings,
    /// The next maintenance window (the operator sets it; the Workspace warns before it).
    pub maintenance: Option<MaintenanceWindow>,
    /// Retention of personal data (the tenant's `spec.retention`).
    pub retention: RetentionSettings,
    /// Who the tenant is (the operator sets it from the ContactTenant).
    pub tenant: TenantSettings,
    /// Routing defaults (the tenant's `spec.routing`).
    pub routing: RoutingDefaults,
}

/// The tenant's identity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    /// The ContactTenant's name.
    pub name: String,
    /// Its display name (shown in the Workspace).
    pub display_name: String,
}

/// Routing defaults from the tenant's spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingDefaults {
    /// New agents start with automatic allocation on.
    pub auto_allocate_by_default: bool,
    /// Concurrent conversations per agent.
    pub max_conversations_per_agent: u32,
    /// Seconds a disconnected agent keeps their conversations before they return to the queue.
    pub return_to_queue_after_disconnect_secs: u64,
    /// How long the agent who last served a contact stays preferred (0: no sticky routing).
    pub sticky_window_secs: u32,
    /// After this wait, skill minimum levels are ignored (`None`: never).
    pub relax_levels_after_secs: Option<u32>,
    /// After this wait, optional skills are no longer required (`None`: never).
    pub drop_optional_after_secs: Option<u32>,
    /// A customer who writes again within this many seconds of a close reopens that
    /// conversation (same history, back in the queue) instead of starting a new one (0: never).
    pub reopen_within_secs: u64,
    /// A conversation transferred to an agent who is away, disconnected or full waits for them
    /// this many seconds; then the pin is dropped and any eligible agent may take it
    /// (0: it waits for them until they take it or go offline).
    pub transfer_pin_fallback_secs: u64,
}

impl Default for RoutingDefaults {
    fn default() -> Self {
        Self {
            auto_allocate_by_default: true,
            max_conversations_per_agent: 5,
            return_to_queue_after_disconnect_secs: 60,
            sticky_window_secs: 24 * 3600,
            relax_levels_after_secs: Some(120),
            drop_optional_after_secs: Some(300),
            reopen_within_secs: 7 * 24 * 3600,
            transfer_pin_fallback_secs: 300,
        }
    }
}

/// Logins, sessions and invites.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// E-mail of the first admin (created at start when missing).
    pub bootstrap_admin_email: String,
    /// Password of the first admin (from the operator's generated Secret); unset: no bootstrap.
    pub bootstrap_admin_password: Option<Secret>,
    /// Session lifetime.
    pub session_ttl_secs: i64,
    /// Invite link lifetime.
    pub invite_ttl_secs: i64,
    /// `Secure` cookies: `Some(true)`/`Some(false)` force it; `None` sets it when the request
    /// came over TLS (`X-Forwarded-Proto: https` from the ingress).
    pub secure_cookies: Option<bool>,
    /// Public base URL used in invite links; unset: taken from the request's `Host`.
    pub public_url: Option<String>,
    /// Failed logins of one account allowed per window before 429.
    pub max_failures_per_account: u32,
    /// Failed logins from one IP address allowed per window before 429.
    pub max_failures_per_ip: u32,
    /// The rate-limit window.
    pub failure_window_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            bootstrap_admin_email: "admin@contact.local".to_owned(),
            bootstrap_admin_password: None,
            session_ttl_secs: 12 * 3600,
            invite_ttl_secs: 72 * 3600,
            secure_cookies: None,
            public_url: None,
            max_failures_per_account: 5,
            max_failures_per_ip: 20,
            failure_window_secs: 900,
        }
    }
}

/// A maintenance window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// Start.
    pub start: chrono::DateTime<chrono::Utc>,
    /// End.
    pub end: chrono::DateTime<chrono::Utc>,
}

/// Retention settings (the tenant's `spec.retention`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Closed conversations lose their content after this many days (0 = never).
    pub anonymize_conversations_after_days: i64,
    /// Closed conversations are deleted after this many days (0 = never).
    pub delete_conversations_after_days: i64,
    /// Audit entries are purged after this many days (0 = never).
    pub audit_log_days: i64,
    /// How often the job runs.
    pub interval_secs: u64,
    /// Conversations (or audit entries) per transaction.
    pub batch_size: i64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            anonymize_conversations_after_days: 90,
            delete_conversations_after_days: 365,
            audit_log_days: 365,
            interval_secs: 3600,
            batch_size: 200,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            database_url: "sqlite:contact.sqlite".to_owned(),
            database_max_connections: 16,
            sqlite_fsync_each_commit: true,
            api_token: None,
            webhook: WebhookSettings::default(),
            outbox: OutboxSettings::default(),
            sinch: SinchSettings::default(),
            channels: Vec::new(),
            auth: AuthSettings::default(),
            maintenance: None,
            retention: RetentionSettings::default(),
            tenant: TenantSettings::default(),
            routing: RoutingDefaults::default(),
        }
    }
}

/// Inbound webhook checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Largest accepted distance between a signature timestamp and now.
    pub max_skew_secs: i64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self { max_skew_secs: 300 }
    }
}

/// Outbound delivery tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSettings {
    /// Rows claimed per round.
    pub batch_size: i64,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// How long a claim lasts before another sender may take the row.
    pub lease_secs: i64,
    /// Idle poll interval (new rows also wake the sender at once).
    pub poll_interval_ms: u64,
    /// Timeout of one `messages:send` request.
    pub request_timeout_ms: u64,
    /// Attempts before a message is marked FAILED.
    pub max_attempts: i64,
    /// First retry delay; doubles per attempt.
    pub base_backoff_ms: i64,
    /// Longest retry delay.
    pub max_backoff_ms: i64,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            batch_size: 64,
            concurrency: 16,
            lease_secs: 30,
            poll_interval_ms: 250,
            request_timeout_ms: 10_000,
            max_attempts: 12,
            base_backoff_ms: 500,
            max_backoff_ms: 60_000,
        }
    }
}

/// Conversation API endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinchSettings {
    /// OAuth2 token endpoint.
    pub auth_url: String,
}

impl Default for SinchSettings {
    fn default() -> Self {
        Self {
            auth_url: "https://auth.sinch.com/oauth2/token".to_owned(),
        }
    }
}

/// Conversation API hosting region of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// `us.conversation.api.sinch.com`
    Us,
    /// `eu.conversation.api.sinch.com`
    #[default]
    Eu,
    /// `br.conversation.api.sinch.com`
    Br,
}

impl Region {
    /// The regional API base URL (the app's region must match, else the API answers 404).
    pub fn base_url(self) -> &'static str {
        match self {
            Region::Us => "https://us.conversation.api.sinch.com",
            Region::Eu => "https://eu.conversation.api.sinch.com",
            Region::Br => "https://br.conversation.api.sinch.com",
        }
    }
}

/// One channel app: a Conversation API app used for one channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelApp {
    /// Name used in the webhook path `/webhooks/sinch/{name}`.
    pub name: String,
    /// The channel.
    #[serde(rename = "type")]
    pub channel: ChannelType,
    /// Hosting region of the app.
    #[serde(default)]
    pub region: Region,
    /// Conversation API project id.
    pub project_id: String,
    /// Conversation API app id.
    pub app_id: String,
    /// Access key id (OAuth2 client id).
    #[serde(default)]
    pub key_id: String,
    /// Access key secret (OAuth2 client secret).
    #[serde(default)]
    pub key_secret: Secret,
    /// Secret the webhook signatures are made with.
    #[serde(default)]
    pub webhook_secret: Secret,
    /// Overrides the regional base URL (the simulator).
    #[serde(default)]
    pub base_url: Option<String>,
    /// File holding `key_id` (a mounted Secret key; the operator's way).
    #[serde(default)]
    pub key_id_file: Option<String>,
    /// File holding `key_secret`.
    #[serde(default)]
    pub key_secret_file: Option<String>,
    /// File holding `webhook_secret`.
    #[serde(default)]
    pub webhook_secret_file: Option<String>,
    /// Category name for new conversations (default: General).
    #[serde(default)]
    pub category: Option<String>,
}

impl ChannelApp {
    /// Base URL of the API for this app.
    pub fn api_base(&self) -> &str {
        self.base_url
            .as_deref()
            .unwrap_or_else(|| self.region.base_url())
            .trim_end_matches('/')
    }

    fn env_prefix(&self) -> String {
        format!(
            "CONTACT_CHANNEL_{}_",
            self.name.to_uppercase().replace(['-', '.'], "_")
        )
    }
}

impl Settings {
    /// Loads the file named by `path` or `CONTACT_CONFIG` (if any) and overlays the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| env.get("CONTACT_CONFIG").map(Into::into));
        let base = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Self::from_yaml(&text).map_err(|message| Error::Parse {
                    path: path.display().to_string(),
                    message,
                })?
            }
            None => Settings::default(),
        };
        base.with_env(&env)
    }

    /// Parses YAML settings.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Settings::default());
        }
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    /// Overlays `CONTACT_*` variables from `env` and validates.
    pub fn with_env(mut self, env: &HashMap<String, String>) -> Result<Self, Error> {
        fn parse<T: std::str::FromStr>(var: &str, v: &str) -> Result<T, Error>
        where
            T::Err: fmt::Display,
        {
            v.parse().map_err(|e: T::Err| Error::Env {
                var: var.to_owned(),
                message: e.to_string(),
            })
        }
        if let Some(v) = env.get("CONTACT_LISTEN") {
            self.listen = parse("CONTACT_LISTEN", v)?;
        }
        if let Some(v) = env.get("CONTACT_DATABASE_URL") {
            self.database_url = v.clone();
        }
        if let Some(v) = env.get("CONTACT_API_TOKEN") {
            self.api_token = Some(Secret(v.clone())).filter(|s| !s.0.is_empty());
        }
        if let Some(v) = env.get("CONTACT_WEBHOOK_MAX_SKEW_SECS") {
            self.webhook.max_skew_secs = parse("CONTACT_WEBHOOK_MAX_SKEW_SECS", v)?;
        }
        if let Some(v) = env.get("CONTACT_SINCH_AUTH_URL") {
            self.sinch.auth_url = v.clone();
        }
        if let Some(v) = env.get("CONTACT_BOOTSTRAP_ADMIN_EMAIL") {
            self.auth.bootstrap_admin_email = v.clone();
        }
        if let Some(v) = env.get("CONTACT_BOOTSTRAP_ADMIN_PASSWORD") {
            self.auth.bootstrap_admin_password =
                Some(Secret(v.clone())).filter(|s| !s.0.is_empty());
        }
        if let Some(v) = env.get("CONTACT_SECURE_COOKIES") {
            self.auth.secure_cookies = Some(parse("CONTACT_SECURE_COOKIES", v)?);
        }
        if let Some(v) = env.get("CONTACT_PUBLIC_URL") {
            self.auth.public_url = Some(v.trim_end_matches('/').to_owned());
        }
        if let (Some(start), Some(end)) = (
            env.get("CONTACT_MAINTENANCE_START"),
            env.get("CONTACT_MAINTENANCE_END"),
        ) {
            self.maintenance = Some(MaintenanceWindow {
                start: parse("CONTACT_MAINTENANCE_START", start)?,
                end: parse("CONTACT_MAINTENANCE_END", end)?,
            });
        }
        for app in &mut self.channels {
            // Mounted Secret files first, so an explicit variable still wins.
            let read = |path: &Option<String>| -> Result<Option<String>, Error> {
                let Some(path) = path else { return Ok(None) };
                std::fs::read_to_string(path)
                    .map(|v| Some(v.trim_end_matches(['\n', '\r']).to_owned()))
                    .map_err(|source| Error::Read {
                        path: path.clone(),
                        source,
                    })
            };
            if let Some(v) = read(&app.key_id_file)? {
                app.key_id = v;
            }
            if let Some(v) = read(&app.key_secret_file)? {
                app.key_secret = Secret(v);
            }
            if let Some(v) = read(&app.webhook_secret_file)? {
                app.webhook_secret = Secret(v);
            }
            let prefix = app.env_prefix();
            if let Some(v) = env.get(&format!("{prefix}KEY_SECRET")) {
                app.key_secret = Secret(v.clone());
            }
            if let Some(v) = env.get(&format!("{prefix}WEBHOOK_SECRET")) {
                app.webhook_secret = Secret(v.clone());
            }
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks what serde cannot: unique names, secrets present.
    pub fn validate(&self) -> Result<(), Error> {
        let mut seen = std::collections::HashSet::new();
        for app in &self.channels {
            if app.name.is_empty()
                || !app
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::Invalid(format!(
                    "channel name `{}` must be non-empty and use only letters, digits, `-` and `_`",
                    app.name
                )));
            }
            if !seen.insert(app.name.as_str()) {
                return Err(Error::Invalid(format!(
                    "channel name `{}` is used twice",
                    app.name
                )));
            }
            if app.webhook_secret.expose().is_empty() {
                return Err(Error::Invalid(format!(
                    "channel `{}` has no webhook_secret (set it in the file or {}WEBHOOK_SECRET)",
                    app.name,
                    app.env_prefix()
                )));
            }
        }
        if self.webhook.max_skew_secs <= 0 {
            return Err(Error::Invalid(
                "webhook.max_skew_secs must be positive".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
listen: 127.0.0.1:9000
database_url: postgres://contact@db/contact
api_token: t0ken
webhook:
  max_skew_secs: 120
channels:
  - name: whatsapp-main
    type: WHATSAPP
    region: us
    project_id: p1
    app_id: a1
    key_id: k1
    webhook_secret: from-file
"#;

    #[test]
    fn file_then_environment() {
        let settings = Settings::from_yaml(YAML).unwrap();
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(settings.webhook.max_skew_secs, 120);
        assert_eq!(settings.outbox.max_attempts, 12, "defaults fill the rest");
        let env = HashMap::from([
            ("CONTACT_LISTEN".to_owned(), "0.0.0.0:8081".to_owned()),
            (
                "CONTACT_CHANNEL_WHATSAPP_MAIN_WEBHOOK_SECRET".to_owned(),
                "from-env".to_owned(),
            ),
            (
                "CONTACT_CHANNEL_WHATSAPP_MAIN_KEY_SECRET".to_owned(),
                "s3".to_owned(),
            ),
        ]);
        let settings = settings.with_env(&env).unwrap();
        assert_eq!(settings.listen.port(), 8081);
        let app = &settings.channels[0];
        assert_eq!(app.webhook_secret.expose(), "from-env");
        assert_eq!(app.key_secret.expose(), "s3");
        assert_eq!(app.api_base(), "https://us.conversation.api.sinch.com");
        assert!(
            !format!("{settings:?}").contains("s3"),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = Settings::from_yaml("listen: 1.2.3.4:5\nlisten_port: 3\n").unwrap_err();
        assert!(err.contains("listen_port"), "{err}");
        let err = Settings::from_yaml(&YAML.replace("webhook_secret: from-file", ""))
            .unwrap()
            .with_env(&HashMap::new())
            .unwrap_err();
        assert!(err.to_string().contains("WEBHOOK_SECRET"), "{err}");
        let err = Settings::default()
            .with_env(&HashMap::from([(
                "CONTACT_LISTEN".to_owned(),
                "nowhere".to_owned(),
            )]))
            .unwrap_err();
        assert!(err.to_string().contains("CONTACT_LISTEN"), "{err}");
    }
}
