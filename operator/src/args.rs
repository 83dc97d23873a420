//! Command-line flags, each also settable by environment variable (the Helm chart sets the
//! `CONTACT_*` variables).

use crate::config::OperatorConfig;
use crate::leader::{Timing, TimingError};
use crate::run::{LeaseSettings, Settings};
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The Contact operator.
#[derive(Debug, Parser)]
#[command(name = "contact-operator", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (with leader election unless disabled).
    Run(RunArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Runtime image for tenants that do not pin `spec.runtime.image`.
    #[arg(
        long,
        env = "CONTACT_RUNTIME_IMAGE",
        default_value = concat!("ghcr.io/contact-dev/contact-runtime:", env!("CARGO_PKG_VERSION"))
    )]
    pub runtime_image: String,
    /// Elect a leader through a Lease so several replicas are safe.
    #[arg(long, env = "CONTACT_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "CONTACT_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "CONTACT_LEASE_NAME", default_value = "contact-operator")]
    pub lease_name: String,
    /// Seconds followers wait, from the last change they saw, before they may take the lease.
    #[arg(long, env = "CONTACT_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds the leader keeps leading without a successful renewal (below the lease duration).
    #[arg(
        long,
        env = "CONTACT_LEASE_RENEW_DEADLINE_SECONDS",
        default_value_t = 10
    )]
    pub lease_renew_deadline_seconds: u64,
    /// Seconds between renewals by the leader and looks by the followers.
    #[arg(long, env = "CONTACT_LEASE_RETRY_PERIOD_SECONDS", default_value_t = 2)]
    pub lease_retry_period_seconds: u64,
    /// This replica's identity (the pod name).
    #[arg(long, env = "CONTACT_POD_NAME")]
    pub pod_name: Option<String>,
    /// Only reconcile tenants in these namespaces (comma-separated; empty: all).
    #[arg(
        long,
        env = "CONTACT_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub watch_namespaces: Vec<String>,
    /// Conversation API hosts (`host` or `host:port`, comma-separated) tenants may point
    /// `apiBaseUrl`/`authUrl` at besides Sinch's own https hosts (the simulator in tests).
    #[arg(
        long,
        env = "CONTACT_CONVERSATION_API_HOSTS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub conversation_api_hosts: Vec<String>,
    /// Runtime images tenants may pin (comma-separated repositories, or prefixes ending in `/`;
    /// empty: only the repository of `--runtime-image`).
    #[arg(
        long,
        env = "CONTACT_RUNTIME_IMAGES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub runtime_images: Vec<String>,
    /// Ingress annotation keys tenants may set (comma-separated; `prefix/*` for a prefix, `*`
    /// for any).
    #[arg(
        long,
        env = "CONTACT_INGRESS_ANNOTATIONS",
        value_delimiter = ',',
        default_value = "cert-manager.io/*"
    )]
    pub ingress_annotations: Vec<String>,
    /// JSON map of hosting location to required node labels.
    #[arg(long, env = "CONTACT_HOSTING_LOCATIONS", default_value = "{}")]
    pub hosting_locations: String,
    /// Namespace of the ingress controller (admitted by tenants' NetworkPolicies).
    #[arg(
        long,
        env = "CONTACT_INGRESS_CONTROLLER_NAMESPACE",
        default_value = "ingress-nginx"
    )]
    pub ingress_controller_namespace: String,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "CONTACT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "CONTACT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Seconds between reconciles of an unchanged tenant.
    #[arg(long, env = "CONTACT_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
    /// Seconds between sweeps of data past its deletion grace period.
    #[arg(long, env = "CONTACT_SWEEP_INTERVAL_SECONDS", default_value_t = 600)]
    pub sweep_interval_seconds: u64,
    /// PostgreSQL image for CloudNativePG clusters (CloudNativePG's default if unset).
    #[arg(long, env = "CONTACT_CNPG_IMAGE")]
    pub cnpg_image: Option<String>,
    /// Tenants reconciled at once (each reconcile is a few round trips to the API server).
    #[arg(long, env = "CONTACT_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
}

/// A flag value that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--hosting-locations` is not a JSON map of maps of strings.
    #[error(
        "invalid --hosting-locations (expected JSON like {{\"eu-ireland\":{{\"topology.kubernetes.io/region\":\"eu-west-1\"}}}})"
    )]
    HostingLocations(#[source] serde_json::Error),
    /// The lease timings would let two replicas lead at once.
    #[error("invalid --lease-* timings")]
    LeaseTiming(#[source] TimingError),
}

impl RunArgs {
    /// Turns the flags into run settings.
    pub fn settings(self) -> Result<Settings, Error> {
        let RunArgs {
            runtime_image,
            leader_election,
            lease_namespace,
            lease_name,
            lease_duration_seconds,
            lease_renew_deadline_seconds,
            lease_retry_period_seconds,
            pod_name,
            watch_namespaces,
            conversation_api_hosts,
            runtime_images,
            ingress_annotations,
            hosting_locations,
            ingress_controller_namespace,
            metrics_addr,
            log_format: _,
            resync_seconds,
            sweep_interval_seconds,
            cnpg_image,
            concurrency,
        } = self;
        let locations: BTreeMap<String, BTreeMap<String, String>> =
            serde_json::from_str(&hosting_locations).map_err(Error::HostingLocations)?;
        let timing = Timing::new(
            Duration::from_secs(lease_duration_seconds),
            Duration::from_secs(lease_renew_deadline_seconds),
            Duration::from_secs(lease_retry_period_seconds),
        )
        .map_err(Error::LeaseTiming)?;
        let identity =
            pod_name.unwrap_or_else(|| format!("contact-operator-{}", std::process::id()));
        Ok(Settings {
            config: OperatorConfig {
                default_image: runtime_image,
                ingress_namespace: ingress_controller_namespace,
                locations,
                cnpg_image,
                resync: Duration::from_secs(resync_seconds.max(1)),
                concurrency,
                watch_namespaces: watch_namespaces
                    .into_iter()
                    .filter(|n| !n.is_empty())
                    .collect(),
                own_namespace: lease_namespace.clone(),
                conversation_api_hosts: conversation_api_hosts
                    .into_iter()
                    .filter(|h| !h.is_empty())
                    .collect(),
                runtime_images: runtime_images
                    .into_iter()
                    .filter(|i| !i.is_empty())
                    .collect(),
                ingress_annotations: ingress_annotations
                    .into_iter()
                    .filter(|a| !a.is_empty())
                    .collect(),
            },
            lease: leader_election.then(|| LeaseSettings {
                namespace: lease_namespace,
                name: lease_name,
                identity: identity.clone(),
                timing,
            }),
            http_addr: metrics_addr,
            sweep_interval: Duration::from_secs(sweep_interval_seconds.max(1)),
            instance: Some(identity),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_env_parse_into_settings() {
        let cli = Cli::try_parse_from([
            "contact-operator",
            "run",
            "--leader-election=false",
            "--hosting-locations",
            r#"{"eu-ireland":{"topology.kubernetes.io/region":"eu-west-1"}}"#,
            "--watch-namespaces",
            "a,b",
            "--metrics-addr",
            "127.0.0.1:9090",
            "--concurrency",
            "64",
            "--conversation-api-hosts",
            "simulator.tests.svc:9090,10.0.0.7",
        ])
        .expect("parses");
        let Command::Run(args) = cli.command;
        let s = args.settings().expect("settings");
        assert!(s.lease.is_none());
        assert_eq!(
            s.config.locations["eu-ireland"]["topology.kubernetes.io/region"],
            "eu-west-1"
        );
        assert_eq!(
            s.config.watch_namespaces,
            vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!(s.http_addr.port(), 9090);
        assert_eq!(s.config.concurrency, 64);
        assert_eq!(
            s.config.conversation_api_hosts,
            vec![
                "simulator.tests.svc:9090".to_string(),
                "10.0.0.7".to_string()
            ]
        );
        assert!(
            Cli::try_parse_from(["contact-operator", "run"])
                .map(|c| {
                    let Command::Run(a) = c.command;
                    a.settings()
                        .expect("settings")
                        .config
                        .conversation_api_hosts
                })
                .expect("parses")
                .is_empty(),
            "Sinch's hosts only by default"
        );
        let Command::Run(defaults) = Cli::try_parse_from(["contact-operator", "run"])
            .expect("parses")
            .command;
        let config = defaults.settings().expect("settings").config;
        assert_eq!(
            config.ingress_annotations,
            vec!["cert-manager.io/*".to_string()]
        );
        assert!(
            config.runtime_images.is_empty(),
            "the default image's repository only"
        );
    }

    #[test]
    fn zero_concurrency_is_refused() {
        let Err(err) = Cli::try_parse_from(["contact-operator", "run", "--concurrency", "0"])
        else {
            panic!("--concurrency 0 was accepted");
        };
        assert!(err.to_string().contains("--concurrency"), "{err}");
    }

    #[test]
    fn lease_timings_default_to_client_go_and_unsafe_ones_are_refused() {
        let cli = Cli::try_parse_from(["contact-operator", "run"]).expect("parses");
        let Command::Run(args) = cli.command;
        let lease = args.settings().expect("settings").lease.expect("elects");
        assert_eq!(lease.timing, Timing::DEFAULT);

        let cli = Cli::try_parse_from([
            "contact-operator",
            "run",
            "--lease-duration-seconds",
            "10",
            "--lease-renew-deadline-seconds",
            "10",
        ])
        .expect("parses");
        let Command::Run(args) = cli.command;
        let Err(err) = args.settings() else {
            panic!("a renew deadline equal to the lease duration was accepted");
        };
        assert!(matches!(
            err,
            Error::LeaseTiming(TimingError::DeadlineNotShorterThanLease { .. })
        ));
    }

    #[test]
    fn bad_locations_are_refused() {
        let cli = Cli::try_parse_from(["contact-operator", "run", "--hosting-locations", "[1]"])
            .expect("parses");
        let Command::Run(args) = cli.command;
        assert!(args.settings().is_err());
    }
}
