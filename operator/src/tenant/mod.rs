//! The validated tenant: step 2 of the pipeline turns the user's `ContactTenant` into a
//! `ValidatedTenant`, the only input of the builders. Pure: no client, no clock.
//!
//! It has a module of its own because two floors stand on it: `build` (which only reads it) and
//! `reconcile` (which makes it and hands it to `build`). Neither imports the other through it.
//!
//! Everything the builders need is parsed here once ("parse, don't validate"), so a bad field
//! becomes one precise condition instead of a half-applied tenant. The CRD's admission rules catch
//! most mistakes; this catches what needs operator configuration (hosting locations) or cross-field
//! reasoning (SQLite is single-writer, so it cannot have two replicas).

use crate::config::OperatorConfig;
use crate::maintenance::{self, WeeklyWindow};
use chrono::{DateTime, Utc};
use contact_crds::v1alpha1::{ContactTenant, DatabaseKind, RetentionSpec, RoutingSpec};
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::ResourceExt;
use std::collections::BTreeMap;

#[cfg(test)]
mod fixtures;

/// Why a tenant's spec cannot be built; each variant maps to a condition reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object lacks a namespace or uid (never true for objects read from the API server).
    #[error("tenant has no {0}")]
    MissingMetadata(&'static str),
    /// The maintenance window does not parse.
    #[error("invalid maintenance window")]
    MaintenanceWindow(#[source] maintenance::Error),
    /// `hostingLocation` is not one the operator was configured with.
    #[error("unknown hosting location {location:?}; known: {known}")]
    UnknownHostingLocation {
        /// The location asked for.
        location: String,
        /// Comma-separated known locations.
        known: String,
    },
    /// `trial.endsAt` is not RFC 3339.
    #[error("invalid trial end {0:?}: expected RFC 3339, e.g. 2027-06-13T00:00:00Z")]
    TrialEnd(String),
    /// SQLite is embedded and single-writer: more than one replica would corrupt it.
    #[error(
        "sqlite supports exactly 1 replica, got {0}; use postgres or cloudNativePG to scale out"
    )]
    SqliteReplicas(i32),
    /// Negative replica count.
    #[error("replicas must be >= 0, got {0}")]
    NegativeReplicas(i32),
    /// Two channels share a name.
    #[error("duplicate channel name {0:?}")]
    DuplicateChannel(String),
    /// `routing.returnToQueueAfterDisconnect` does not parse.
    #[error("invalid routing.returnToQueueAfterDisconnect")]
    ReturnToQueue(#[source] maintenance::Error),
    /// `backups.timeZone` is not in the time zone database.
    #[error("backups.timeZone {0:?} is not an IANA time zone (such as Europe/Berlin)")]
    BackupTimeZone(String),
    /// A channel's Conversation API or OAuth2 URL points at a host that is neither Sinch's nor
    /// on the operator's allow-list (`--conversation-api-hosts`).
    #[error(
        "channel {channel} {field} {url:?}: host {host:?} is not a Conversation API host; \
         allowed: {allowed}"
    )]
    HostNotAllowed {
        /// Channel name.
        channel: String,
        /// `apiBaseUrl` or `authUrl`.
        field: &'static str,
        /// The URL given.
        url: String,
        /// Its host (and port).
        host: String,
        /// The hosts allowed.
        allowed: String,
    },
    /// `runtime.image` is not of a repository the platform allows.
    #[error("runtime.image {image:?} is not an allowed runtime image; allowed: {allowed}")]
    ImageNotAllowed {
        /// The image asked for.
        image: String,
        /// The allowed repositories.
        allowed: String,
    },
    /// An Ingress annotation the platform does not allow (ingress-controller snippets, say).
    #[error("ingress annotation {key:?} is not allowed; allowed: {allowed}")]
    AnnotationNotAllowed {
        /// The annotation key.
        key: String,
        /// The allowed keys.
        allowed: String,
    },
    /// Channels name different OAuth2 URLs: the runtime has one token endpoint, so a channel's
    /// credentials would be sent to another channel's host.
    #[error("channels {0} and {1} name different authUrls: every channel must use the same one")]
    AuthUrlsDiffer(String, String),
}

impl Error {
    /// One-word CamelCase reason for the Ready condition and Events.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Error::MissingMetadata(_) => "MissingMetadata",
            Error::MaintenanceWindow(_) => "InvalidMaintenanceWindow",
            Error::UnknownHostingLocation { .. } => "UnknownHostingLocation",
            Error::TrialEnd(_) => "InvalidTrialEnd",
            Error::SqliteReplicas(_) => "SqliteReplicas",
            Error::NegativeReplicas(_) => "InvalidReplicas",
            Error::DuplicateChannel(_) => "DuplicateChannel",
            Error::ReturnToQueue(_) => "InvalidRouting",
            Error::BackupTimeZone(_) => "InvalidTimeZone",
            Error::HostNotAllowed { .. } => "ConversationApiHostNotAllowed",
            Error::AuthUrlsDiffer(..) => "AuthUrlsDiffer",
            Error::ImageNotAllowed { .. } => "RuntimeImageNotAllowed",
            Error::AnnotationNotAllowed { .. } => "IngressAnnotationNotAllowed",
        }
    }
}

/// The database a tenant runs on, with what the builders need of it.
#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    /// Embedded SQLite on a PVC of the StatefulSet.
    Sqlite {
        /// PVC size.
        size: String,
        /// Storage class, if not the cluster default.
        storage_class: Option<String>,
    },
    /// External PostgreSQL, URL read from a Secret key.
    Postgres {
        /// Secret holding the URL.
        secret_name: String,
        /// Key of the URL in that Secret.
        key: String,
    },
    /// A CloudNativePG `Cluster` the operator creates.
    CloudNativePg {
        /// Number of PostgreSQL instances.
        instances: i64,
        /// Volume size per instance.
        size: String,
    },
}

impl Database {
    /// Short name, used in labels and pending-change messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Database::Sqlite { .. } => "sqlite",
            Database::Postgres { .. } => "postgres",
            Database::CloudNativePg { .. } => "cloudnativepg",
        }
    }
}

/// One channel's Conversation API settings, as the runtime's config file describes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    /// Channel name, unique in the tenant.
    pub name: String,
    /// Channel type (SMS, WHATSAPP, ...), as the CRD spells it.
    pub channel_type: String,
    /// Conversation API region (us, eu, br).
    pub region: String,
    /// Sinch project id.
    pub project_id: String,
    /// Conversation API app id.
    pub app_id: String,
    /// Conversation API base URL (regional default unless overridden).
    pub api_base_url: String,
    /// OAuth2 token URL override, if any.
    pub auth_url: Option<String>,
    /// Secret holding the OAuth2 client credentials.
    pub credentials_secret: String,
    /// Key of the key id in that Secret.
    pub key_id_key: String,
    /// Key of the key secret in that Secret.
    pub key_secret_key: String,
    /// Secret holding the webhook signing secret.
    pub webhook_secret: String,
    /// Key of the signing secret in that Secret.
    pub webhook_key: String,
}

/// Backup settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Backups {
    /// Cron schedule (5 fields).
    pub schedule: String,
    /// IANA time zone of the schedule (CronJob `timeZone`), if not the controller's.
    pub time_zone: Option<String>,
    /// Backups paused by the user.
    pub suspend: bool,
    /// Days of backups kept.
    pub retain_days: u32,
    /// Backup PVC size.
    pub size: String,
    /// Storage class, if not the cluster default.
    pub storage_class: Option<String>,
}

/// A tenant whose spec has been checked and parsed; the only input of the builders.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedTenant {
    /// ContactTenant name (also the base name of every child).
    pub name: String,
    /// Namespace of the tenant and all its children.
    pub namespace: String,
    /// UID, for owner references.
    pub uid: String,
    /// Human name shown in the UI.
    pub display_name: String,
    /// Public host name.
    pub host: String,
    /// IngressClass, if set.
    pub ingress_class: Option<String>,
    /// TLS Secret for the host, if set.
    pub tls_secret: Option<String>,
    /// Extra annotations for the Ingress (ingress-controller settings).
    pub ingress_annotations: BTreeMap<String, String>,
    /// Channels.
    pub channels: Vec<Channel>,
    /// Routing defaults, as given.
    pub routing: RoutingSpec,
    /// `routing.returnToQueueAfterDisconnect` in seconds.
    pub return_to_queue_secs: u64,
    /// Retention, as given.
    pub retention: RetentionSpec,
    /// Backups, if enabled.
    pub backups: Option<Backups>,
    /// Maintenance window; `None` means restart-requiring changes apply at once.
    pub window: Option<WeeklyWindow>,
    /// Database.
    pub database: Database,
    /// Runtime image.
    pub image: String,
    /// Replicas asked for (before suspension/trial scale-down).
    pub replicas: i32,
    /// Runtime resources.
    pub resources: ResourceRequirements,
    /// Node labels required by the hosting location.
    pub node_labels: BTreeMap<String, String>,
    /// Hosting location name.
    pub hosting_location: String,
    /// End of the trial, if any.
    pub trial_ends_at: Option<DateTime<Utc>>,
    /// Days data is kept after deletion.
    pub data_grace_days: u32,
    /// Suspended by the platform team.
    pub suspend: bool,
    /// `contact.dev/apply-now: "true"` is set.
    pub apply_now: bool,
}

/// Default resources: a runtime must always have requests so the scheduler can place it fairly.
pub(crate) fn default_resources() -> ResourceRequirements {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("128Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("512Mi".into()),
        )])),
        ..Default::default()
    }
}

/// Checks and parses a tenant.
pub fn validate(tenant: &ContactTenant, config: &OperatorConfig) -> Result<ValidatedTenant, Error> {
    let spec = &tenant.spec;
    let namespace = tenant
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let uid = tenant.uid().ok_or(Error::MissingMetadata("uid"))?;

    let w = &spec.maintenance_window;
    let day = enum_str(&w.day);
    let window = WeeklyWindow::parse(&day, &w.start, &w.duration, &w.time_zone)
        .map_err(Error::MaintenanceWindow)?;

    let hosting_location = spec.hosting_location.clone().unwrap_or_default();
    // No location (or no map) means no placement constraint; a location the operator does not
    // know is refused, because placing data somewhere else than asked is worse than not running.
    let node_labels = if config.locations.is_empty() || spec.hosting_location.is_none() {
        BTreeMap::new()
    } else {
        config
            .locations
            .get(&hosting_location)
            .cloned()
            .ok_or_else(|| Error::UnknownHostingLocation {
                location: hosting_location.clone(),
                known: config
                    .locations
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?
    };

    let trial_ends_at = spec
        .trial
        .as_ref()
        .map(|t| to_chrono(&t.ends_at).ok_or_else(|| Error::TrialEnd(t.ends_at.0.to_string())))
        .transpose()?;

    let database = match spec.database.kind() {
        DatabaseKind::Sqlite(s) => Database::Sqlite {
            size: s.storage.0.clone(),
            storage_class: s.storage_class_name.clone(),
        },
        DatabaseKind::Postgres(p) => Database::Postgres {
            secret_name: p.secret_ref.name.clone(),
            key: p.secret_ref.key.clone(),
        },
        DatabaseKind::CloudNativePg(c) => Database::CloudNativePg {
            instances: i64::from(c.instances),
            size: c.storage.0.clone(),
        },
    };

    let runtime = &spec.runtime;
    let replicas = runtime.replicas;
    if replicas < 0 {
        return Err(Error::NegativeReplicas(replicas));
    }
    if matches!(database, Database::Sqlite { .. }) && replicas > 1 {
        return Err(Error::SqliteReplicas(replicas));
    }

    let mut channels: Vec<Channel> = Vec::with_capacity(spec.channels.len());
    for c in &spec.channels {
        if channels.iter().any(|x| x.name == c.name) {
            return Err(Error::DuplicateChannel(c.name.clone()));
        }
        let api = &c.conversation_api;
        channels.push(Channel {
            name: c.name.clone(),
            channel_type: enum_str(&c.channel_type),
            region: enum_str(&api.region),
            project_id: api.project_id.clone(),
            app_id: api.app_id.clone(),
            api_base_url: api
                .api_base_url
                .clone()
                .unwrap_or_else(|| api.region.api_base_url().to_string()),
            auth_url: api.auth_url.clone(),
            credentials_secret: api.credentials_secret_ref.name.clone(),
            key_id_key: api.credentials_secret_ref.key_id_key.clone(),
            key_secret_key: api.credentials_secret_ref.key_secret_key.clone(),
            webhook_secret: api.webhook_secret_ref.name.clone(),
            webhook_key: api.webhook_secret_ref.key.clone(),
        });
    }
    check_hosts(&channels, &config.conversation_api_hosts)?;
    if let Some(image) = &spec.runtime.image {
        check_image(image, config)?;
    }
    check_annotations(&spec.ingress.annotations, &config.ingress_annotations)?;
    let b = &spec.backups;
    if let Some(tz) = &b.time_zone
        && tz.parse::<chrono_tz::Tz>().is_err()
    {
        return Err(Error::BackupTimeZone(tz.clone()));
    }

    Ok(ValidatedTenant {
        name: tenant.name_any(),
        namespace,
        uid,
        display_name: spec.display_name.clone(),
        host: spec.ingress.host.clone(),
        ingress_class: spec.ingress.class_name.clone(),
        tls_secret: spec.ingress.tls.as_ref().map(|t| t.secret_name.clone()),
        ingress_annotations: spec.ingress.annotations.clone(),
        channels,
        routing: spec.routing.clone(),
        return_to_queue_secs: maintenance::parse_duration(
            &spec.routing.return_to_queue_after_disconnect,
        )
        .map_err(Error::ReturnToQueue)?
        .num_seconds()
        .unsigned_abs(),
        retention: spec.retention.clone(),
        backups: Some(Backups {
            schedule: b.schedule.clone(),
            time_zone: b.time_zone.clone(),
            retain_days: b.retain_days,
            size: b.storage.size.0.clone(),
            storage_class: b.storage.storage_class_name.clone(),
            suspend: b.suspend,
        }),
        window: Some(window),
        database,
        image: runtime
            .image
            .clone()
            .unwrap_or_else(|| config.default_image.clone()),
        replicas,
        resources: runtime.resources.clone().unwrap_or_else(default_resources),
        node_labels,
        hosting_location,
        trial_ends_at,
        data_grace_days: spec.deletion.data_grace_days,
        suspend: spec.suspend,
        apply_now: tenant
            .annotations()
            .get(crate::labels::APPLY_NOW)
            .is_some_and(|v| v == "true"),
    })
}

/// The repository of an image reference (`registry/name`, without tag or digest).
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    }
}

/// A tenant may pin a version of an allowed runtime image, not any image: the platform decides
/// what runs with the tenant's keys (`--runtime-images`; by default the default image's
/// repository).
fn check_image(image: &str, config: &OperatorConfig) -> Result<(), Error> {
    let default = [repository(&config.default_image).to_string()];
    let allowed = if config.runtime_images.is_empty() {
        &default[..]
    } else {
        &config.runtime_images[..]
    };
    let repo = repository(image);
    let ok = allowed
        .iter()
        .any(|a| repo == a || (a.ends_with('/') && repo.starts_with(a.as_str())));
    if ok {
        Ok(())
    } else {
        Err(Error::ImageNotAllowed {
            image: image.to_string(),
            allowed: allowed.join(", "),
        })
    }
}

/// Ingress annotations reach the ingress controller, and some of them (configuration snippets)
/// are code: only keys the platform allows pass (`--ingress-annotations`).
fn check_annotations(
    annotations: &BTreeMap<String, String>,
    allowed: &[String],
) -> Result<(), Error> {
    let ok = |key: &str| {
        allowed.iter().any(|a| match a.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == a,
        })
    };
    match annotations.keys().find(|k| !ok(k)) {
        Some(key) => Err(Error::AnnotationNotAllowed {
            key: key.clone(),
            allowed: if allowed.is_empty() {
                "none".into()
            } else {
                allowed.join(", ")
            },
        }),
        None => Ok(()),
    }
}

/// Sinch's own hosts: the regional Conversation API hosts and the OAuth2 host (https only).
const SINCH_API_HOSTS: &[&str] = &[
    "us.conversation.api.sinch.com",
    "eu.conversation.api.sinch.com",
    "br.conversation.api.sinch.com",
];
const SINCH_AUTH_HOST: &str = "auth.sinch.com";

/// The authority (`host` or `host:port`) of an http(s) URL, and whether it is https.
fn authority(url: &str) -> Option<(&str, bool)> {
    let (rest, https) = match url.strip_prefix("https://") {
        Some(r) => (r, true),
        None => (url.strip_prefix("http://")?, false),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let auth = &rest[..end];
    // Credentials in the URL (`user@host`) would hide the real host from a reader.
    (!auth.is_empty() && !auth.contains('@')).then_some((auth, https))
}

/// The runtime is told where to send each channel's messages and credentials: only Sinch's hosts
/// (https), or hosts the operator was started with (`--conversation-api-hosts`: the simulator in
/// tests), so a tenant's author cannot make the runtime fetch internal URLs. Every channel must
/// use the same OAuth2 URL, since the runtime has one.
fn check_hosts(channels: &[Channel], allowed: &[String]) -> Result<(), Error> {
    let allowed_text = || {
        let mut all: Vec<String> = SINCH_API_HOSTS
            .iter()
            .chain([&SINCH_AUTH_HOST])
            .map(|h| format!("https://{h}"))
            .collect();
        all.extend(allowed.iter().cloned());
        all.join(", ")
    };
    let ok = |url: &str, sinch: &[&str]| match authority(url) {
        Some((host, https)) => {
            (https && sinch.contains(&host)) || allowed.iter().any(|a| a == host)
        }
        None => false,
    };
    for c in channels {
        let checks = [
            ("apiBaseUrl", Some(c.api_base_url.as_str()), SINCH_API_HOSTS),
            ("authUrl", c.auth_url.as_deref(), &[SINCH_AUTH_HOST][..]),
        ];
        for (field, url, sinch) in checks {
            if let Some(url) = url
                && !ok(url, sinch)
            {
                return Err(Error::HostNotAllowed {
                    channel: c.name.clone(),
                    field,
                    url: url.to_string(),
                    host: authority(url).map(|(h, _)| h).unwrap_or(url).to_string(),
                    allowed: allowed_text(),
                });
            }
        }
    }
    if let Some((a, b)) = channels
        .iter()
        .zip(channels.iter().skip(1))
        .find(|(a, b)| a.auth_url != b.auth_url)
    {
        return Err(Error::AuthUrlsDiffer(a.name.clone(), b.name.clone()));
    }
    Ok(())
}

/// Converts an API `Time` to chrono.
pub(crate) fn to_chrono(
    t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(
        t.0.as_second(),
        u32::try_from(t.0.subsec_nanosecond()).unwrap_or(0),
    )
}

/// The serde spelling of a unit enum variant (the CRD's own wire format).
fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod host_tests {
    use super::*;

    fn channel(name: &str, api: &str, auth: Option<&str>) -> Channel {
        Channel {
            name: name.into(),
            channel_type: "SMS".into(),
            region: "eu".into(),
            project_id: "p".into(),
            app_id: "a".into(),
            api_base_url: api.into(),
            auth_url: auth.map(str::to_string),
            credentials_secret: "s".into(),
            key_id_key: "key-id".into(),
            key_secret_key: "key-secret".into(),
            webhook_secret: "s".into(),
            webhook_key: "webhook-secret".into(),
        }
    }

    #[test]
    fn sinch_hosts_over_https_or_allow_listed_hosts_only() {
        let eu = "https://eu.conversation.api.sinch.com";
        let ok = |c: Channel, allowed: &[&str]| {
            let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
            check_hosts(&[c], &allowed).is_ok()
        };
        assert!(ok(channel("a", eu, None), &[]));
        assert!(ok(
            channel("a", eu, Some("https://auth.sinch.com/oauth2/token")),
            &[]
        ));
        assert!(
            !ok(
                channel("a", "http://eu.conversation.api.sinch.com", None),
                &[]
            ),
            "plain http"
        );
        assert!(!ok(
            channel("a", "https://eu.conversation.api.sinch.com.evil.io", None),
            &[]
        ));
        assert!(
            !ok(channel("a", "https://x@10.0.0.1/", None), &["10.0.0.1"]),
            "userinfo"
        );
        assert!(!ok(channel("a", "http://10.0.0.1:8080", None), &[]));
        assert!(ok(
            channel("a", "http://10.0.0.1:8080/v1", None),
            &["10.0.0.1:8080"]
        ));
        assert!(
            !ok(
                channel("a", "http://10.0.0.1:9999", None),
                &["10.0.0.1:8080"]
            ),
            "port"
        );
        assert!(!ok(
            channel("a", eu, Some("http://169.254.169.254/token")),
            &[]
        ));
    }

    #[test]
    fn every_channel_uses_the_same_token_endpoint() {
        let eu = "https://eu.conversation.api.sinch.com";
        let a = channel("a", eu, None);
        let b = channel("b", eu, Some("https://auth.sinch.com/oauth2/token"));
        assert!(matches!(
            check_hosts(&[a.clone(), b], &[]),
            Err(Error::AuthUrlsDiffer(x, y)) if x == "a" && y == "b"
        ));
        assert!(check_hosts(&[a.clone(), a], &[]).is_ok());
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn a_version_of_an_allowed_repository_only() {
        let mut config = OperatorConfig {
            default_image: "ghcr.io/contact-dev/contact-runtime:1.0.0".into(),
            ..OperatorConfig::default()
        };
        let ok = |i: &str, c: &OperatorConfig| check_image(i, c).is_ok();
        assert!(ok("ghcr.io/contact-dev/contact-runtime:2.0.0", &config));
        assert!(ok(
            "ghcr.io/contact-dev/contact-runtime@sha256:abcd",
            &config
        ));
        assert!(!ok("ghcr.io/contact-dev/contact-runtime-evil:1", &config));
        assert!(!ok("example.com/evil:1", &config));
        config.runtime_images = vec!["registry.internal:5000/contact/".into()];
        assert!(ok("registry.internal:5000/contact/runtime:3", &config));
        assert!(!ok("ghcr.io/contact-dev/contact-runtime:2.0.0", &config));
    }

    #[test]
    fn annotations_by_key_or_prefix() {
        let allowed = vec!["cert-manager.io/*".to_string(), "a.io/b".to_string()];
        let check = |k: &str| {
            let a = BTreeMap::from([(k.to_string(), "v".to_string())]);
            check_annotations(&a, &allowed).is_ok()
        };
        assert!(check("cert-manager.io/cluster-issuer"));
        assert!(check("a.io/b"));
        assert!(!check("a.io/bc"));
        assert!(!check("nginx.ingress.kubernetes.io/server-snippet"));
        let any = vec!["*".to_string()];
        let a = BTreeMap::from([("x".to_string(), "v".to_string())]);
        assert!(check_annotations(&a, &any).is_ok());
        assert!(check_annotations(&a, &[]).is_err());
    }
}
