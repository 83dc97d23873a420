//! The desired state of a tenant: what platform teams write in their `ContactTenant` YAML.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ContactTenantStatus;

/// A DNS-1123 subdomain (what Kubernetes accepts as an Ingress host), written without
/// backslashes so it reads the same in Rust, YAML and CEL.
const DNS_SUBDOMAIN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// One contact-center tenant: an isolated runtime with its channels, data retention, daily backups
/// and a weekly maintenance window, provisioned and kept in shape by the Contact operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "contact.dev",
    version = "v1alpha1",
    kind = "ContactTenant",
    plural = "contacttenants",
    singular = "contacttenant",
    shortname = "ctn",
    category = "contact",
    namespaced,
    status = "ContactTenantStatus",
    derive = "PartialEq",
    annotation("helm.sh/resource-policy", "keep"),
    doc = "A Contact tenant: an isolated contact-center runtime with its channels, retention, backups and maintenance window.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Last Backup","type":"date","jsonPath":".status.lastBackup.time"}"#,
    printcolumn = r#"{"name":"Next Maintenance","type":"string","jsonPath":".status.nextMaintenanceWindow.start"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("size(self.metadata.name) <= 40").message("metadata.name must be at most 40 characters: the operator derives child object names from it")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(oldSelf.hostingLocation) || (has(self.hostingLocation) && self.hostingLocation == oldSelf.hostingLocation)")
        .message("hostingLocation is immutable once set: create a new tenant to move its data"),
    validation = Rule::new("!has(self.runtime) || !has(self.runtime.replicas) || self.runtime.replicas <= 1 || !has(self.database) || !has(self.database.sqlite)")
        .message("more than one runtime replica requires PostgreSQL (database.postgres or database.cloudNativePG): the embedded SQLite database serves a single replica")
)]
pub struct ContactTenantSpec {
    /// Human-readable name of the tenant, shown in the Workspace and the Configurator.
    #[schemars(length(min = 1, max = 100))]
    pub display_name: String,

    /// Where the tenant's runtime and data live (for example `eu-ireland`). The operator maps it to
    /// node affinity and storage through its own configuration. Immutable once set, because moving
    /// a tenant's data is a migration, not an edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("hostingLocation must be a lowercase name of letters, digits and '-', such as eu-ireland"))]
    pub hosting_location: Option<String>,

    /// How agents and admins reach the tenant: the host name of its Ingress.
    pub ingress: IngressSpec,

    /// The messaging channels of the tenant, each a Conversation API app.
    #[serde(default)]
    #[schemars(length(max = 50))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d.name == c.name))").message("channel names must be unique within a tenant"))]
    pub channels: Vec<ChannelSpec>,

    /// Routing defaults: how conversations are handed to agents.
    #[serde(default)]
    pub routing: RoutingSpec,

    /// How long personal data is kept before it is anonymized and deleted.
    #[serde(default)]
    pub retention: RetentionSpec,

    /// Daily backups of the tenant's data.
    #[serde(default)]
    pub backups: BackupsSpec,

    /// The weekly window in which changes that restart the runtime (image, database, resources,
    /// replicas) are applied. Changes the runtime reloads live apply at once.
    #[serde(default)]
    pub maintenance_window: MaintenanceWindowSpec,

    /// Where the tenant's data lives: the embedded SQLite database (the default), an external
    /// PostgreSQL, or a CloudNativePG cluster the operator creates.
    #[serde(default)]
    pub database: DatabaseSpec,

    /// The runtime workload: image, replicas and resources.
    #[serde(default)]
    pub runtime: RuntimeSpec,

    /// A trial: after `endsAt` the runtime is scaled to zero (data stays) until the trial is
    /// removed or extended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<TrialSpec>,

    /// What happens to the data when the tenant is deleted.
    #[serde(default)]
    pub deletion: DeletionSpec,

    /// Scales the runtime to zero while keeping every piece of data.
    #[serde(default)]
    pub suspend: bool,
}

/// The tenant's Ingress.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// The DNS name agents and admins use, for example `acme.contact.example.com`.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DNS_SUBDOMAIN}')")).message("ingress.host must be a valid DNS name: lowercase letters, digits, '-' and '.', such as acme.contact.example.com"))]
    pub host: String,

    /// The IngressClass that serves the tenant (for example `nginx`). Unset means the cluster's
    /// default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,

    /// TLS for the host. Unset serves plain HTTP (fine behind a TLS-terminating load balancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<IngressTls>,

    /// Extra annotations for the Ingress (for example cert-manager's issuer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// TLS settings of the tenant's Ingress.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IngressTls {
    /// The Secret of type `kubernetes.io/tls` in the tenant's namespace that holds the certificate.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// One messaging channel of the tenant, reached through a Sinch Conversation API app.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSpec {
    /// The channel's name, unique within the tenant; it appears in the webhook path
    /// (`/webhooks/sinch/<name>`) and in the Configurator.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("channel name must be a lowercase DNS label (letters, digits and '-'), such as whatsapp-main"))]
    pub name: String,

    /// The kind of channel.
    #[serde(rename = "type")]
    pub channel_type: ChannelType,

    /// The Conversation API app that carries this channel.
    pub conversation_api: ConversationApiSpec,
}

/// The messaging channels Contact supports through the Conversation API.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChannelType {
    /// SMS.
    Sms,
    /// WhatsApp Business.
    Whatsapp,
    /// Facebook Messenger.
    Messenger,
    /// Instagram direct messages.
    Instagram,
    /// Viber Business Messages.
    Viber,
    /// Telegram.
    Telegram,
}

/// Where and how to reach one Conversation API app.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConversationApiSpec {
    /// The region of the app; it selects the regional API host and must match the app's region.
    pub region: Region,

    /// The Sinch project id.
    #[schemars(length(min = 1, max = 128))]
    pub project_id: String,

    /// The Conversation API app id.
    #[schemars(length(min = 1, max = 128))]
    pub app_id: String,

    /// The Secret that holds the access key (OAuth2 client credentials) for the project.
    pub credentials_secret_ref: CredentialsSecretRef,

    /// The Secret key that holds the webhook signing secret configured on the app's webhook.
    pub webhook_secret_ref: SecretKeyRef,

    /// Overrides the API base URL (for example to point at the simulator in an end-to-end test).
    /// Leave unset in production: the region picks the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("apiBaseUrl must be an http(s) URL"))]
    pub api_base_url: Option<String>,

    /// Overrides the OAuth2 token URL (for the simulator). Leave unset in production.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("authUrl must be an http(s) URL"))]
    pub auth_url: Option<String>,
}

/// Conversation API regions.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// United States (`us.conversation.api.sinch.com`).
    Us,
    /// European Union, Ireland (`eu.conversation.api.sinch.com`).
    Eu,
    /// Brazil (`br.conversation.api.sinch.com`).
    Br,
}

impl Region {
    /// The regional Conversation API base URL.
    pub fn api_base_url(self) -> &'static str {
        match self {
            Region::Us => "https://us.conversation.api.sinch.com",
            Region::Eu => "https://eu.conversation.api.sinch.com",
            Region::Br => "https://br.conversation.api.sinch.com",
        }
    }
}

/// A Secret holding an access key id and secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// The Secret's name, in the tenant's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// The key that holds the access key id.
    #[serde(default = "default_key_id_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key_id_key: String,

    /// The key that holds the access key secret.
    #[serde(default = "default_key_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key_secret_key: String,
}

fn default_key_id_key() -> String {
    "key-id".into()
}

fn default_key_secret_key() -> String {
    "key-secret".into()
}

/// One key of a Secret in the tenant's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// The key within the Secret.
    #[serde(default = "default_webhook_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_webhook_secret_key() -> String {
    "webhook-secret".into()
}

/// Routing defaults for the tenant; admins refine them in the Configurator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoutingSpec {
    /// Whether new agents start with automatic allocation switched on.
    #[serde(default = "default_true")]
    pub auto_allocate_by_default: bool,

    /// How many conversations one agent handles at once.
    #[serde(default = "default_max_conversations")]
    #[schemars(range(min = 1, max = 100))]
    pub max_conversations_per_agent: u32,

    /// How long an agent may be disconnected before their open conversations go back to the
    /// queue, at their old place. A duration such as `60s`, `2m` or `1m30s`.
    #[serde(default = "default_return_to_queue")]
    #[schemars(length(min = 2, max = 16))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?([0-9]+s)?$')").message("returnToQueueAfterDisconnect must be a duration such as 60s, 2m or 1m30s"))]
    pub return_to_queue_after_disconnect: String,
}

impl Default for RoutingSpec {
    fn default() -> Self {
        Self {
            auto_allocate_by_default: true,
            max_conversations_per_agent: default_max_conversations(),
            return_to_queue_after_disconnect: default_return_to_queue(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_max_conversations() -> u32 {
    5
}

fn default_return_to_queue() -> String {
    "60s".into()
}

/// How long personal data is kept.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.anonymizeConversationsAfterDays <= self.deleteConversationsAfterDays")
    .message("retention.anonymizeConversationsAfterDays must not exceed retention.deleteConversationsAfterDays: data cannot be anonymized after it is deleted"))]
pub struct RetentionSpec {
    /// Closed conversations are anonymized (personal data removed, statistics kept) after this
    /// many days.
    #[serde(default = "default_anonymize_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub anonymize_conversations_after_days: u32,

    /// Closed conversations are deleted after this many days.
    #[serde(default = "default_delete_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub delete_conversations_after_days: u32,

    /// Audit log entries are kept this many days.
    #[serde(default = "default_audit_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub audit_log_days: u32,
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self {
            anonymize_conversations_after_days: default_anonymize_days(),
            delete_conversations_after_days: default_delete_days(),
            audit_log_days: default_audit_days(),
        }
    }
}

fn default_anonymize_days() -> u32 {
    90
}

fn default_delete_days() -> u32 {
    365
}

fn default_audit_days() -> u32 {
    365
}

/// Daily backups: an encrypted, consistent snapshot of the tenant's data.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupsSpec {
    /// When backups run: a standard five-field cron expression (minute 0-59, hour 0-23,
    /// day-of-month 1-31, month 1-12 or JAN-DEC, day-of-week 0-7 or SUN-SAT; each field `*`, a
    /// value, a range `a-b`, a list `a,b`, with an optional step `/n`) or a macro such as
    /// `@daily`, in `timeZone`.
    #[serde(default = "default_backup_schedule")]
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new(format!(
        "self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|{} +{} +{} +{} +{})$')",
        cron_field("[1-5]?[0-9]"),
        cron_field("(1?[0-9]|2[0-3])"),
        cron_field("([1-9]|[12][0-9]|3[01])"),
        cron_field("([1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))"),
        cron_field("([0-7]|(?i:sun|mon|tue|wed|thu|fri|sat))"),
    )).message("backups.schedule must be a five-field cron expression such as \"0 2 * * *\" (minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC, day of week 0-7 or SUN-SAT) or a macro such as @daily"))]
    pub schedule: String,

    /// The time zone of the schedule (an IANA name such as `Europe/Berlin`). Unset means UTC. The
    /// operator checks the name against its time zone database: an unknown one is a
    /// `Ready=False/InvalidTimeZone` condition, not a CronJob the API server refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self == 'UTC' || self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)+$')").message("backups.timeZone must be an IANA time zone name such as UTC or Europe/Berlin"))]
    pub time_zone: Option<String>,

    /// Backups older than this many days are pruned.
    #[serde(default = "default_retain_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub retain_days: u32,

    /// The volume that holds the backups.
    #[serde(default = "default_backup_storage")]
    pub storage: StorageSpec,

    /// Pauses scheduled backups (for example while restoring).
    #[serde(default)]
    pub suspend: bool,
}

impl Default for BackupsSpec {
    fn default() -> Self {
        Self {
            schedule: default_backup_schedule(),
            time_zone: None,
            retain_days: default_retain_days(),
            storage: default_backup_storage(),
            suspend: false,
        }
    }
}

/// One cron field as a regular expression: a comma-separated list of `*` or `?` or a value or a
/// range of values, each with an optional step (what the CronJob controller's parser accepts).
fn cron_field(value: &str) -> String {
    let item = format!("([*?]|{value}(-{value})?)(/[0-9]+)?");
    format!("{item}(,{item})*")
}

fn default_backup_schedule() -> String {
    "0 2 * * *".into()
}

fn default_retain_days() -> u32 {
    14
}

fn default_backup_storage() -> StorageSpec {
    StorageSpec {
        size: Quantity("10Gi".into()),
        storage_class_name: None,
    }
}

/// A persistent volume request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
// A volume can grow in place but never shrink (Kubernetes refuses it): refuse at admission rather
// than accept a spec the operator can never apply.
#[x_kube(
    validation = Rule::new("quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0")
        .message("storage size cannot shrink: a volume can only grow (keep the current size or set a larger one)")
)]
pub struct StorageSpec {
    /// The size of the volume, such as `10Gi`.
    pub size: Quantity,

    /// The StorageClass of the volume. Unset means the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

/// The weekly maintenance window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindowSpec {
    /// The day on which the window opens.
    #[serde(default = "default_window_day")]
    pub day: Weekday,

    /// The local time at which the window opens, as `HH:MM` (24-hour clock).
    #[serde(default = "default_window_start")]
    #[schemars(length(min = 5, max = 5))]
    #[x_kube(validation = Rule::new("self.matches('^([01][0-9]|2[0-3]):[0-5][0-9]$')").message("maintenanceWindow.start must be a time of day as HH:MM, such as 22:00"))]
    pub start: String,

    /// How long the window stays open: a duration such as `4h`, `90m` or `1h30m`, at most 24h.
    #[serde(default = "default_window_duration")]
    #[schemars(length(min = 2, max = 16))]
    #[x_kube(
        validation = Rule::new("self.matches('^([0-9]+h)?([0-9]+m)?$')").message("maintenanceWindow.duration must be a duration in hours and minutes, such as 4h, 90m or 1h30m"),
        validation = Rule::new("!self.matches('^([0-9]+h)?([0-9]+m)?$') || (duration(self) > duration('0s') && duration(self) <= duration('24h'))").message("maintenanceWindow.duration must be more than 0 and at most 24h")
    )]
    pub duration: String,

    /// The IANA time zone of `day` and `start`, such as `Europe/Berlin`. Daylight saving time is
    /// followed: the window opens at the same local time all year.
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self == 'UTC' || self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)+$')").message("maintenanceWindow.timeZone must be an IANA time zone name such as UTC or Europe/Berlin"))]
    pub time_zone: String,
}

impl Default for MaintenanceWindowSpec {
    fn default() -> Self {
        Self {
            day: default_window_day(),
            start: default_window_start(),
            duration: default_window_duration(),
            time_zone: default_time_zone(),
        }
    }
}

fn default_window_day() -> Weekday {
    Weekday::Saturday
}

fn default_window_start() -> String {
    "22:00".into()
}

fn default_window_duration() -> String {
    "4h".into()
}

fn default_time_zone() -> String {
    "UTC".into()
}

/// A day of the week.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Weekday {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

/// Where the tenant's data lives. Exactly one of `sqlite`, `postgres` and `cloudNativePG` is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.sqlite), has(self.postgres), has(self.cloudNativePG)].filter(x, x).size() == 1")
    .message("database must set exactly one of sqlite, postgres or cloudNativePG"))]
pub struct DatabaseSpec {
    /// The embedded SQLite database on a volume of the runtime: simplest, one replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<SqliteSpec>,

    /// An external PostgreSQL database, reached with the connection URI in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSpec>,

    /// A CloudNativePG cluster the operator creates for the tenant (requires the CloudNativePG
    /// operator in the cluster).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "cloudNativePG"
    )]
    pub cloud_native_pg: Option<CloudNativePgSpec>,
}

impl Default for DatabaseSpec {
    fn default() -> Self {
        Self {
            sqlite: Some(SqliteSpec::default()),
            postgres: None,
            cloud_native_pg: None,
        }
    }
}

/// A borrowed view of the one database choice of a [`DatabaseSpec`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DatabaseKind<'a> {
    /// The embedded SQLite database.
    Sqlite(&'a SqliteSpec),
    /// An external PostgreSQL.
    Postgres(&'a PostgresSpec),
    /// A CloudNativePG cluster.
    CloudNativePg(&'a CloudNativePgSpec),
}

impl DatabaseSpec {
    /// The database choice. Admission guarantees exactly one is set; should an object bypass it,
    /// the first set wins in the order sqlite, postgres, cloudNativePG, and none means SQLite.
    pub fn kind(&self) -> DatabaseKind<'_> {
        static DEFAULT_SQLITE: std::sync::LazyLock<SqliteSpec> =
            std::sync::LazyLock::new(SqliteSpec::default);
        match (&self.sqlite, &self.postgres, &self.cloud_native_pg) {
            (Some(s), _, _) => DatabaseKind::Sqlite(s),
            (None, Some(p), _) => DatabaseKind::Postgres(p),
            (None, None, Some(c)) => DatabaseKind::CloudNativePg(c),
            (None, None, None) => DatabaseKind::Sqlite(&DEFAULT_SQLITE),
        }
    }

    /// Whether the choice allows more than one runtime replica.
    pub fn supports_replicas(&self) -> bool {
        !matches!(self.kind(), DatabaseKind::Sqlite(_))
    }
}

/// The embedded SQLite database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.storage) || !has(oldSelf.storage) || quantity(string(self.storage)).compareTo(quantity(string(oldSelf.storage))) >= 0")
        .message("database.sqlite.storage cannot shrink: a volume can only grow (keep the current size or set a larger one)")
)]
pub struct SqliteSpec {
    /// The size of the volume that holds the database, such as `5Gi`.
    #[serde(default = "default_sqlite_size")]
    pub storage: Quantity,

    /// The StorageClass of the volume. Unset means the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

impl Default for SqliteSpec {
    fn default() -> Self {
        Self {
            storage: default_sqlite_size(),
            storage_class_name: None,
        }
    }
}

fn default_sqlite_size() -> Quantity {
    Quantity("5Gi".into())
}

/// An external PostgreSQL database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    /// The Secret key that holds the connection URI (`postgres://user:password@host:5432/db`).
    pub secret_ref: UriSecretRef,
}

/// A Secret key holding a connection URI.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UriSecretRef {
    /// The Secret's name, in the tenant's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// The key within the Secret.
    #[serde(default = "default_uri_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_uri_key() -> String {
    "uri".into()
}

/// A CloudNativePG cluster created for the tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.storage) || !has(oldSelf.storage) || quantity(string(self.storage)).compareTo(quantity(string(oldSelf.storage))) >= 0")
        .message("database.cloudNativePG.storage cannot shrink: a volume can only grow (keep the current size or set a larger one)")
)]
pub struct CloudNativePgSpec {
    /// The number of PostgreSQL instances (one primary, the rest standbys).
    #[serde(default = "default_cnpg_instances")]
    #[schemars(range(min = 1, max = 9))]
    pub instances: u32,

    /// The size of each instance's volume, such as `10Gi`.
    #[serde(default = "default_cnpg_size")]
    pub storage: Quantity,

    /// The StorageClass of the volumes. Unset means the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

fn default_cnpg_instances() -> u32 {
    3
}

fn default_cnpg_size() -> Quantity {
    Quantity("10Gi".into())
}

/// The runtime workload.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSpec {
    /// The runtime image. Unset means the image the operator is configured with, so operator
    /// upgrades roll tenants forward (in their maintenance windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// The number of runtime pods. More than one requires PostgreSQL.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 20))]
    pub replicas: i32,

    /// CPU and memory for each runtime pod. Unset means the operator's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for RuntimeSpec {
    fn default() -> Self {
        Self {
            image: None,
            replicas: default_replicas(),
            resources: None,
        }
    }
}

fn default_replicas() -> i32 {
    1
}

/// A trial period.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrialSpec {
    /// When the trial ends (RFC 3339). After it the runtime is scaled to zero; data stays.
    pub ends_at: Time,
}

/// What happens to the data when the tenant is deleted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeletionSpec {
    /// Days the data (database volume or database, backups) is kept after the tenant is deleted.
    /// Re-creating the tenant with the same name and namespace within this time re-attaches it.
    /// 0 purges at once.
    #[serde(default = "default_grace_days")]
    #[schemars(range(min = 0, max = 365))]
    pub data_grace_days: u32,
}

impl Default for DeletionSpec {
    fn default() -> Self {
        Self {
            data_grace_days: default_grace_days(),
        }
    }
}

fn default_grace_days() -> u32 {
    30
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_renders_without_panicking() {
        let crd = ContactTenant::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("contacttenants.contact.dev")
        );
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
    }

    #[test]
    fn a_minimal_spec_gets_the_documented_defaults() {
        let spec: ContactTenantSpec = serde_json::from_value(serde_json::json!({
            "displayName": "Acme",
            "ingress": {"host": "acme.example.com"},
        }))
        .unwrap();
        assert_eq!(
            spec.retention,
            RetentionSpec {
                anonymize_conversations_after_days: 90,
                delete_conversations_after_days: 365,
                audit_log_days: 365
            }
        );
        assert_eq!(spec.backups.schedule, "0 2 * * *");
        assert_eq!(spec.backups.retain_days, 14);
        assert_eq!(spec.maintenance_window.day, Weekday::Saturday);
        assert_eq!(spec.maintenance_window.start, "22:00");
        assert_eq!(spec.maintenance_window.duration, "4h");
        assert_eq!(spec.maintenance_window.time_zone, "UTC");
        assert_eq!(spec.deletion.data_grace_days, 30);
        assert!(matches!(spec.database.kind(), DatabaseKind::Sqlite(s) if s.storage.0 == "5Gi"));
        assert!(!spec.database.supports_replicas());
        assert_eq!(spec.runtime.replicas, 1);
        assert!(!spec.suspend);
    }

    #[test]
    fn database_kind_follows_the_one_choice() {
        let db = DatabaseSpec {
            sqlite: None,
            postgres: Some(PostgresSpec {
                secret_ref: UriSecretRef {
                    name: "db".into(),
                    key: "uri".into(),
                },
            }),
            cloud_native_pg: None,
        };
        assert!(matches!(db.kind(), DatabaseKind::Postgres(p) if p.secret_ref.name == "db"));
        assert!(db.supports_replicas());
    }

    #[test]
    fn regions_map_to_their_hosts() {
        assert_eq!(
            Region::Eu.api_base_url(),
            "https://eu.conversation.api.sinch.com"
        );
        assert_eq!(serde_json::to_value(Region::Br).unwrap(), "br");
        assert_eq!(
            serde_json::to_value(ChannelType::Whatsapp).unwrap(),
            "WHATSAPP"
        );
    }
}
