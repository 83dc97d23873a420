//! A real single-node Kubernetes cluster for tests: the control plane of [`crate::controlplane`]
//! plus kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy, CoreDNS and
//! Traefik, all as processes on this machine, so pods really start.
//!
//! The binaries come from `tests/cluster/build-binaries.sh` (Go modules, cached); containerd,
//! runc, the CNI plugins and iptables are Debian's (`.ci/run` installs them). What each flag is
//! for is in `/shared/reference/real-node.md` of the project notes; the comments below say why
//! where it is not obvious.
//!
//! Addresses: the node is `198.18.1.1` (a /32 on `lo`), pods get `198.18.0.0/24` on the bridge
//! `contact0`, Services `198.19.0.0/16`: the benchmarking range, never a private or public one.
//! Only loopback and these addresses carry traffic; CoreDNS answers `cluster.local` and refuses
//! everything else rather than forwarding it.
//!
//! One cluster at a time on a machine: [`Cluster::start`] takes an exclusive lock on
//! [`LOCK_FILE`] and holds it until the cluster is torn down. It lives in the fixed folder
//! [`CLUSTER_DIR`], so a run that was killed leaves its leftovers where the next one finds and
//! removes them before it starts (processes it recorded, containers, mounts, iptables chains, the
//! bridge, the `cni-*` network namespaces). Dropping the [`Cluster`] (also while a test panics)
//! removes the same things.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};

/// Where the running cluster keeps everything (fixed, so leftovers of a killed run are found).
pub const CLUSTER_DIR: &str = "/var/tmp/contact-cluster";
/// The machine-wide lock: two cluster tests never run at once.
pub const LOCK_FILE: &str = "/var/tmp/contact-cluster.lock";
/// The node's address, on `lo`; kubelet refuses a loopback one.
pub const NODE_IP: &str = "198.18.1.1";
/// The node's name.
pub const NODE_NAME: &str = "contact-node";
/// Pod addresses (the CNI bridge's subnet).
pub const POD_CIDR: &str = "198.18.0.0/24";
/// Service addresses.
pub const SERVICE_CIDR: &str = "198.19.0.0/16";
/// The CNI bridge.
pub const BRIDGE: &str = "contact0";
/// The StorageClass of the harness's PersistentVolumes (the default class).
pub const STORAGE_CLASS: &str = "contact-local";
/// How many hostPath PersistentVolumes the harness makes.
const VOLUMES: usize = 8;
/// How long the whole cluster may take to come up (two cores, maybe shared).
const START_TIMEOUT: Duration = Duration::from_secs(240);

/// Errors of starting the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A binary or a package is missing.
    #[error("{0}")]
    Missing(String),
    /// A file could not be written or a command not run.
    #[error("failed to prepare the cluster: {0}")]
    Io(#[from] std::io::Error),
    /// Certificates could not be generated.
    #[error("failed to generate certificates")]
    Certificates(#[from] rcgen::Error),
    /// A host command (ip, iptables, ctr) failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed.
        stderr: String,
    },
    /// A component exited or did not become ready in time.
    #[error(
        "{component} did not become ready: {reason}\n--- last lines of its log ---\n{log_tail}"
    )]
    NotReady {
        /// Which component.
        component: String,
        /// Why we gave up.
        reason: String,
        /// The end of its log.
        log_tail: String,
    },
    /// The apiserver refused a request.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// The kubeconfig could not be loaded.
    #[error("failed to load the kubeconfig")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// Applying the add-ons failed.
    #[error("failed to apply the cluster add-ons")]
    Apply(#[from] crate::kube_helpers::ApplyError),
}

/// The cached binaries (`tests/cluster/build-binaries.sh` and the control plane's).
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Folder of kube-apiserver and etcd.
    pub control_plane: PathBuf,
    /// Folder of kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kubectl, pause,
    /// coredns and traefik.
    pub node: PathBuf,
}

impl Binaries {
    /// Builds (or finds) them; `CONTACT_TESTBIN_DIR` is honoured for the control plane.
    pub fn locate_or_build() -> Result<Self, ClusterError> {
        let control_plane = match std::env::var("CONTACT_TESTBIN_DIR") {
            Ok(dir) => PathBuf::from(dir),
            Err(_) => crate::run_build_script("tests/controlplane/build-binaries.sh")
                .map_err(ClusterError::Missing)?,
        };
        let node = match std::env::var("CONTACT_NODEBIN_DIR") {
            Ok(dir) => PathBuf::from(dir),
            Err(_) => crate::run_build_script("tests/cluster/build-binaries.sh")
                .map_err(ClusterError::Missing)?,
        };
        Ok(Self {
            control_plane,
            node,
        })
    }

    fn node(&self, name: &str) -> PathBuf {
        self.node.join(name)
    }
}

/// A running single-node cluster. Everything is torn down when it drops.
pub struct Cluster {
    dir: PathBuf,
    bins: Binaries,
    processes: Vec<(String, Child)>,
    config: Config,
    ingress_port: u16,
    _lock: fs::File,
}

impl Cluster {
    /// Waits for the machine-wide lock, removes what an earlier run left, and starts a cluster.
    pub async fn start(bins: Binaries) -> Result<Self, ClusterError> {
        for tool in [
            "containerd",
            "runc",
            "ctr",
            "iptables",
            "ip6tables",
            "ip",
            "mount",
        ] {
            if which(tool).is_none() {
                return Err(ClusterError::Missing(format!(
                    "{tool} is missing: apt-get install containerd runc containernetworking-plugins iptables iproute2 (.ci/run does)"
                )));
            }
        }
        if !Path::new("/usr/lib/cni/bridge").exists() {
            return Err(ClusterError::Missing(
                "the CNI plugins are missing: apt-get install containernetworking-plugins".into(),
            ));
        }
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)?;
        // Blocking on purpose: another cluster test (a CI run, another worktree) finishes first.
        lock.lock()?;
        let dir = PathBuf::from(CLUSTER_DIR);
        teardown(&dir, Some(&bins));
        fs::create_dir_all(&dir)?;
        let mut cluster = Self {
            dir,
            bins,
            processes: Vec::new(),
            config: Config::new("https://127.0.0.1:1".parse().expect("static URL")),
            ingress_port: 0,
            _lock: lock,
        };
        // On error `cluster` drops here and tears down what was started.
        tokio::time::timeout(START_TIMEOUT, cluster.bring_up())
            .await
            .map_err(|_| ClusterError::NotReady {
                component: "cluster".into(),
                reason: format!("not up within {START_TIMEOUT:?}"),
                log_tail: String::new(),
            })??;
        Ok(cluster)
    }

    async fn bring_up(&mut self) -> Result<(), ClusterError> {
        let dir = self.dir.clone();
        run(
            "ip",
            &["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"],
        )?;
        let certs = Certs::generate(&dir)?;

        // etcd and kube-apiserver: real certificates, RBAC (and Node), the ServiceAccount
        // admission plugin on (it is in the default set), Services in 198.19.0.0/16.
        let (etcd_client, etcd_peer) = (free_port("127.0.0.1")?, free_port("127.0.0.1")?);
        self.spawn(
            "etcd",
            Command::new(self.bins.control_plane.join("etcd"))
                .arg("--name=node")
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
                .arg(format!(
                    "--listen-client-urls=http://127.0.0.1:{etcd_client}"
                ))
                .arg(format!(
                    "--advertise-client-urls=http://127.0.0.1:{etcd_client}"
                ))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"
                ))
                .arg(format!(
                    "--initial-cluster=node=http://127.0.0.1:{etcd_peer}"
                ))
                .arg("--unsafe-no-fsync=true")
                .arg("--log-level=warn"),
        )?;
        let api_port = free_port(NODE_IP)?;
        let url = format!("https://{NODE_IP}:{api_port}");
        let p = |name: &str| dir.join(name).display().to_string();
        self.spawn(
            "kube-apiserver",
            Command::new(self.bins.control_plane.join("kube-apiserver"))
                .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_client}"))
                .arg(format!("--cert-dir={}", dir.display()))
                .arg(format!("--tls-cert-file={}", p("apiserver.crt")))
                .arg(format!("--tls-private-key-file={}", p("apiserver.key")))
                .arg(format!("--client-ca-file={}", p("ca.crt")))
                .arg(format!("--secure-port={api_port}"))
                .arg(format!("--bind-address={NODE_IP}"))
                .arg(format!("--advertise-address={NODE_IP}"))
                .arg("--authorization-mode=Node,RBAC")
                .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
                .arg("--allow-privileged=true")
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!("--service-account-key-file={}", p("sa.pub")))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    p("sa.key")
                ))
                .arg(format!("--kubelet-client-certificate={}", p("admin.crt")))
                .arg(format!("--kubelet-client-key={}", p("admin.key")))
                // Or `kubectl logs/exec` resolve the node's name with the machine's resolver.
                .arg("--kubelet-preferred-address-types=InternalIP")
                .arg("--v=1"),
        )?;
        let kubeconfig = dir.join("kubeconfig");
        fs::write(&kubeconfig, certs.kubeconfig(&url))?;
        let kc = Kubeconfig::read_from(&kubeconfig)?;
        self.config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        let client = self.client();
        self.wait("kube-apiserver", || {
            let client = client.clone();
            async move {
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .expect("static request");
                matches!(client.request_text(req).await.as_deref(), Ok("ok"))
            }
        })
        .await?;

        // Controllers (ServiceAccounts, Deployments, StatefulSets, Jobs, CronJobs, garbage
        // collection) and the scheduler; no node IPAM (the bridge's subnet is static).
        let (kcm_port, sched_port) = (free_port("127.0.0.1")?, free_port("127.0.0.1")?);
        self.spawn(
            "kube-controller-manager",
            Command::new(self.bins.node("kube-controller-manager"))
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg(format!(
                    "--service-account-private-key-file={}",
                    p("sa.key")
                ))
                .arg(format!("--root-ca-file={}", p("ca.crt")))
                .arg("--controllers=*,-nodeipam")
                .arg("--leader-elect=false")
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={kcm_port}"))
                .arg("--v=1"),
        )?;
        self.spawn(
            "kube-scheduler",
            Command::new(self.bins.node("kube-scheduler"))
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg("--leader-elect=false")
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={sched_port}"))
                .arg("--v=1"),
        )?;

        // containerd with its own root, state, socket and runc root, so the machine's own (if
        // any) is untouched and teardown knows what is ours.
        let sock = dir.join("containerd/containerd.sock");
        fs::create_dir_all(dir.join("containerd"))?;
        fs::create_dir_all(dir.join("cni/net.d"))?;
        fs::write(dir.join("containerd/config.toml"), containerd_config(&dir))?;
        fs::write(dir.join("cni/net.d/10-contact.conflist"), cni_config(&dir))?;
        self.spawn(
            "containerd",
            Command::new("containerd")
                .arg("--config")
                .arg(dir.join("containerd/config.toml")),
        )?;
        let sock_path = sock.clone();
        self.wait("containerd", move || {
            let sock = sock_path.clone();
            async move {
                Command::new("ctr")
                    .arg("--address")
                    .arg(&sock)
                    .arg("version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            }
        })
        .await?;

        // kubelet: cgroup v1 with cgroupfs, swap tolerated, its server on the node address (the
        // apiserver reaches it there for logs and port-forward), pod logs in our folder. No
        // eviction and no image garbage collection: the disk is shared with other builds, and
        // when it filled up for a moment the kubelet evicted the operator and removed the pause
        // image (containerd 1.6 does not pin it), so no pod could start again.
        let kubelet_port = free_port(NODE_IP)?;
        fs::write(dir.join("resolv.conf"), "")?;
        fs::write(
            dir.join("kubelet.yaml"),
            kubelet_config(&dir, kubelet_port, &sock),
        )?;
        self.spawn(
            "kubelet",
            Command::new(self.bins.node("kubelet"))
                .arg(format!("--config={}", p("kubelet.yaml")))
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg(format!("--root-dir={}", p("kubelet")))
                .arg(format!("--cert-dir={}", p("kubelet-pki")))
                .arg(format!("--node-ip={NODE_IP}"))
                .arg(format!("--hostname-override={NODE_NAME}"))
                .arg("--v=1"),
        )?;
        // kube-proxy in iptables mode; `--conntrack-max-per-core 0` leaves conntrack alone, and
        // NodePorts only on the node address keeps route_localnet untouched.
        let (proxy_health, proxy_metrics) = (free_port("127.0.0.1")?, free_port("127.0.0.1")?);
        self.spawn(
            "kube-proxy",
            Command::new(self.bins.node("kube-proxy"))
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg("--proxy-mode=iptables")
                .arg(format!("--cluster-cidr={POD_CIDR}"))
                .arg("--conntrack-max-per-core=0")
                .arg(format!("--hostname-override={NODE_NAME}"))
                .arg(format!("--nodeport-addresses={NODE_IP}/32"))
                .arg(format!("--healthz-bind-address=127.0.0.1:{proxy_health}"))
                .arg(format!("--metrics-bind-address=127.0.0.1:{proxy_metrics}"))
                .arg("--v=1"),
        )?;
        // CoreDNS: Service names of cluster.local from the apiserver; every other name is
        // refused, never forwarded off the machine.
        let dns_ready = free_port("127.0.0.1")?;
        fs::write(
            dir.join("Corefile"),
            format!(
                "cluster.local:53 in-addr.arpa:53 {{\n  bind {NODE_IP}\n  errors\n  ready 127.0.0.1:{dns_ready}\n  kubernetes cluster.local in-addr.arpa {{\n    kubeconfig {kc} test\n    pods insecure\n  }}\n}}\n.:53 {{\n  bind {NODE_IP}\n  template ANY ANY {{\n    rcode REFUSED\n  }}\n}}\n",
                kc = kubeconfig.display()
            ),
        )?;
        self.spawn(
            "coredns",
            Command::new(self.bins.node("coredns"))
                .arg("-conf")
                .arg(p("Corefile")),
        )?;

        let nodes: Api<Node> = Api::all(client.clone());
        self.wait("kubelet (node Ready)", || {
            let nodes = nodes.clone();
            async move {
                nodes
                    .get_opt(NODE_NAME)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|n| {
                        n.status
                            .and_then(|s| s.conditions)
                            .unwrap_or_default()
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
            }
        })
        .await?;
        self.wait("coredns", move || async move {
            http_ok(&format!("http://127.0.0.1:{dns_ready}/ready")).await
        })
        .await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        self.wait("kube-controller-manager (default ServiceAccount)", || {
            let accounts = accounts.clone();
            async move { accounts.get_opt("default").await.ok().flatten().is_some() }
        })
        .await?;

        // Storage and Traefik.
        let addons = fs::read_to_string(crate::repo_root().join("tests/cluster/addons.yaml"))?;
        crate::kube_helpers::apply_yaml(&client, &addons, "default").await?;
        self.make_volumes(&client).await?;
        self.start_traefik(&client, &url).await?;
        Ok(())
    }

    async fn make_volumes(&self, client: &Client) -> Result<(), ClusterError> {
        let api: Api<PersistentVolume> = Api::all(client.clone());
        for i in 0..VOLUMES {
            let path = self.dir.join(format!("volumes/pv{i}"));
            fs::create_dir_all(&path)?;
            // hostPath ignores fsGroup: a non-root pod can write only a world-writable folder.
            run("chmod", &["0777", &path.display().to_string()])?;
            let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
                "metadata": { "name": format!("contact-pv{i}") },
                "spec": {
                    "capacity": { "storage": "50Gi" },
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": STORAGE_CLASS,
                    "hostPath": { "path": path, "type": "Directory" },
                }
            }))
            .expect("a valid PersistentVolume");
            api.create(&PostParams::default(), &pv).await?;
        }
        Ok(())
    }

    async fn start_traefik(&mut self, client: &Client, url: &str) -> Result<(), ClusterError> {
        let token = Api::<ServiceAccount>::namespaced(client.clone(), "traefik")
            .create_token_request(
                "traefik",
                &PostParams::default(),
                &TokenRequest {
                    spec: Some(TokenRequestSpec {
                        expiration_seconds: Some(4 * 3600),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await?
            .status
            .and_then(|s| s.token)
            .unwrap_or_default();
        self.ingress_port = free_port(NODE_IP)?;
        let ping = free_port("127.0.0.1")?;
        let ca = self.dir.join("ca.crt");
        self.spawn(
            "traefik",
            Command::new(self.bins.node("traefik"))
                .arg("--providers.kubernetesingress=true")
                .arg(format!("--providers.kubernetesingress.endpoint={url}"))
                .arg(format!("--providers.kubernetesingress.token={token}"))
                .arg(format!(
                    "--providers.kubernetesingress.certauthfilepath={}",
                    ca.display()
                ))
                .arg(format!(
                    "--entrypoints.websecure.address={NODE_IP}:{}",
                    self.ingress_port
                ))
                // As Traefik's own chart does: routers on this entry point are TLS routers
                // (an Ingress's spec.tls only supplies the certificates).
                .arg("--entrypoints.websecure.http.tls=true")
                .arg(format!("--entrypoints.ping.address=127.0.0.1:{ping}"))
                .arg("--ping.entrypoint=ping")
                .arg("--ping=true")
                .arg("--global.checknewversion=false")
                .arg("--global.sendanonymoususage=false")
                .arg("--log.level=INFO")
                .arg("--log.nocolor=true"),
        )?;
        self.wait("traefik", move || async move {
            http_ok(&format!("http://127.0.0.1:{ping}/ping")).await
        })
        .await
    }

    /// An admin client (`system:masters`).
    pub fn client(&self) -> Client {
        Client::try_from(self.config.clone()).expect("the kubeconfig built a client")
    }

    /// The admin kubeconfig, for kubectl and helm.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The kubectl binary built with the node.
    pub fn kubectl(&self) -> PathBuf {
        self.bins.node("kubectl")
    }

    /// The CA that signed the apiserver's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Where Traefik serves HTTPS (`NODE_IP:port`).
    pub fn ingress_https(&self) -> String {
        format!("{NODE_IP}:{}", self.ingress_port)
    }

    /// A command line that SIGKILLs a container given its id (what a crash or the OOM killer
    /// does: no signal handler runs).
    pub fn kill_container_command(&self) -> String {
        format!(
            "ctr --address {} -n k8s.io tasks kill --signal SIGKILL",
            self.dir.join("containerd/containerd.sock").display()
        )
    }

    /// The cluster's folder (logs of each component are `<name>.log` there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Imports an image archive (`podman save`) into the node's containerd, for pods to use
    /// with `imagePullPolicy: IfNotPresent` or `Never`.
    pub fn import_image(&self, archive: &Path) -> Result<(), ClusterError> {
        let sock = self.dir.join("containerd/containerd.sock");
        run(
            "ctr",
            &[
                "--address",
                &sock.display().to_string(),
                "-n",
                "k8s.io",
                "images",
                "import",
                &archive.display().to_string(),
            ],
        )
        .map(|_| ())
    }

    /// What a person needs when a run failed: pods and their phases, recent events, the last
    /// lines of every container's log and of each component's.
    pub fn diagnose(&self) -> String {
        let mut out = String::new();
        let kubectl = |args: &[&str]| -> String {
            Command::new(self.kubectl())
                .arg("--kubeconfig")
                .arg(self.kubeconfig_path())
                .args(args)
                .output()
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_else(|e| format!("kubectl failed: {e}"))
        };
        out += "=== pods\n";
        out += &kubectl(&["get", "pods", "-A", "-o", "wide"]);
        out += "=== contacttenants, jobs, pvc\n";
        out += &kubectl(&["get", "contacttenants,jobs,pvc", "-A", "-o", "wide"]);
        out += &kubectl(&["get", "contacttenants", "-A", "-o", "yaml"]);
        out += "=== events\n";
        let events = kubectl(&["get", "events", "-A", "--sort-by=.lastTimestamp"]);
        out += &last_lines(&events, 60);
        out += "\n";
        let mut logs: Vec<PathBuf> = walk(&self.dir.join("pod-logs"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        for log in logs {
            out += &format!("=== container log {}\n", log.display());
            out += &last_lines(&fs::read_to_string(&log).unwrap_or_default(), 25);
            out += "\n";
        }
        for (name, _) in &self.processes {
            out += &format!("=== {name}.log\n");
            out += &tail(&self.dir.join(format!("{name}.log")), 15);
            out += "\n";
        }
        out
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command) -> Result<(), ClusterError> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| ClusterError::Missing(format!("cannot start {name}: {e}")))?;
        // Recorded so a run killed before its teardown is cleaned up by the next one.
        let mut pids = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("pids"))?;
        std::io::Write::write_all(&mut pids, format!("{} {name}\n", child.id()).as_bytes())?;
        self.processes.push((name.to_owned(), child));
        Ok(())
    }

    /// Polls `ready` until it holds; fails at once when a started process exits.
    async fn wait<F, Fut>(&mut self, what: &str, mut ready: F) -> Result<(), ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            for (name, child) in &mut self.processes {
                if let Some(status) = child.try_wait()? {
                    return Err(ClusterError::NotReady {
                        component: name.clone(),
                        reason: format!("exited with {status} while waiting for {what}"),
                        log_tail: tail(&self.dir.join(format!("{name}.log")), 40),
                    });
                }
            }
            if ready().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                let name = what.split(' ').next().unwrap_or(what);
                return Err(ClusterError::NotReady {
                    component: what.to_owned(),
                    reason: format!("not ready within {START_TIMEOUT:?}"),
                    log_tail: tail(&self.dir.join(format!("{name}.log")), 40),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // kubelet first, so it does not restart what teardown removes.
        for (name, child) in self.processes.iter_mut().rev() {
            if name == "kubelet" {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        teardown(&self.dir, Some(&self.bins));
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Removes everything a cluster in `dir` may have left: containers, the processes it recorded
/// (and containerd's shims), mounts under the folder, iptables chains of kubelet, kube-proxy and
/// the CNI plugins, the bridge, the `cni-*` network namespaces, the node address, the folder.
/// Safe to run when nothing is there.
fn teardown(dir: &Path, bins: Option<&Binaries>) {
    let dir_str = dir.display().to_string();
    // Containers: runc's state for containerd's k8s.io namespace lives under our runc root.
    let runc_root = dir.join("runc/k8s.io");
    if runc_root.exists() {
        let root = runc_root.display().to_string();
        if let Ok(out) = Command::new("runc")
            .args(["--root", &root, "list", "-q"])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("runc")
                    .args(["--root", &root, "delete", "--force", id])
                    .output();
            }
        }
    }
    // Processes: those this harness recorded, and containerd's shims (started by our
    // containerd, named by its socket), checked against their command line before the kill.
    let mut pids: Vec<String> = fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.chars().all(|c| c.is_ascii_digit())
                && cmdline(&name)
                    .is_some_and(|c| c.contains("containerd-shim") && c.contains(&dir_str))
            {
                pids.push(name);
            }
        }
    }
    for pid in &pids {
        if cmdline(pid).is_some_and(|c| c.contains(&dir_str)) {
            let _ = Command::new("kill").args(["-KILL", pid]).output();
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    // Mounts under the folder (pod volumes, containerd's rootfs and shm), deepest first.
    let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&dir_str))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in &mounts {
        let _ = Command::new("umount").args(["-l", m]).output();
    }
    // Network namespaces the CNI plugins made for pods (containerd names them cni-*).
    if let Ok(entries) = fs::read_dir("/var/run/netns") {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("cni-") {
                let _ = Command::new("umount").arg(entry.path()).output();
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    // iptables: kube-proxy's chains, then whatever KUBE-* / CNI-* chain is left.
    if let Some(bins) = bins {
        let _ = Command::new(bins.node("kube-proxy"))
            .args(["--cleanup", "--proxy-mode=iptables"])
            .output();
    }
    for tool in ["iptables", "ip6tables"] {
        for table in ["filter", "nat", "mangle"] {
            remove_chains(tool, table);
        }
    }
    let _ = Command::new("ip").args(["link", "delete", BRIDGE]).output();
    let _ = Command::new("ip")
        .args(["addr", "del", &format!("{NODE_IP}/32"), "dev", "lo"])
        .output();
    let _ = fs::remove_dir_all(dir);
}

/// Deletes the rules that jump to `KUBE-*`/`CNI-*` chains, then those chains.
fn remove_chains(tool: &str, table: &str) {
    let Ok(out) = Command::new(tool).args(["-t", table, "-S"]).output() else {
        return;
    };
    let rules = String::from_utf8_lossy(&out.stdout).into_owned();
    let ours = |name: &str| name.starts_with("KUBE-") || name.starts_with("CNI-");
    let chains: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .filter(|c| ours(c))
        .collect();
    // Deleted by position (comments in the rules hold quoted spaces), last first.
    let mut position: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut doomed = Vec::new();
    for rule in rules.lines().filter_map(|l| l.strip_prefix("-A ")) {
        let chain = rule.split_whitespace().next().unwrap_or_default();
        let n = position.entry(chain).or_default();
        *n += 1;
        let jumps_to_ours = rule
            .split_whitespace()
            .skip_while(|w| *w != "-j")
            .nth(1)
            .is_some_and(ours);
        if !ours(chain) && jumps_to_ours {
            doomed.push((chain, *n));
        }
    }
    for (chain, n) in doomed.into_iter().rev() {
        let _ = Command::new(tool)
            .args(["-t", table, "-D", chain, &n.to_string()])
            .output();
    }
    for chain in &chains {
        let _ = Command::new(tool).args(["-t", table, "-F", chain]).output();
    }
    for chain in &chains {
        let _ = Command::new(tool).args(["-t", table, "-X", chain]).output();
    }
}

fn cmdline(pid: &str) -> Option<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
}

fn containerd_config(dir: &Path) -> String {
    let d = dir.display();
    // restrict_oom_score_adj: a container here cannot set a negative oom_score_adj (no
    // CAP_SYS_RESOURCE), and every sandbox fails without it. runc, not crun: cgroup v1 hybrid.
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{d}/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:contact"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni/net.d"
"#
    )
}

fn cni_config(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "contact",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                // A pod reaching itself through its own Service.
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": POD_CIDR, "gateway": "198.18.0.1" }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": dir.join("cni/ipam"),
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    })
    .to_string()
}

fn kubelet_config(dir: &Path, port: u16, sock: &Path) -> String {
    let d = dir.display();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: {port}
readOnlyPort: 0
healthzPort: 0
containerRuntimeEndpoint: unix://{sock}
podLogsDir: {d}/pod-logs
authentication:
  anonymous: {{ enabled: false }}
  webhook: {{ enabled: false }}
  x509: {{ clientCAFile: {d}/ca.crt }}
authorization: {{ mode: AlwaysAllow }}
tlsCertFile: {d}/kubelet.crt
tlsPrivateKeyFile: {d}/kubelet.key
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDNS: [{NODE_IP}]
clusterDomain: cluster.local
resolvConf: {d}/resolv.conf
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{ memory.available: "0%", nodefs.available: "0%", imagefs.available: "0%", nodefs.inodesFree: "0%" }}
syncFrequency: 10s
"#,
        sock = sock.display()
    )
}

/// Runs a host command; its stderr is the error.
fn run(program: &str, args: &[&str]) -> Result<String, ClusterError> {
    let out = Command::new(program).args(args).output()?;
    if !out.status.success() {
        return Err(ClusterError::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

async fn http_ok(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut stream) = tokio::net::TcpStream::connect(authority).await else {
        return false;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET /{path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut response)).await;
    response.starts_with(b"HTTP/1.0 200") || response.starts_with(b"HTTP/1.1 200")
}

fn free_port(ip: &str) -> Result<u16, std::io::Error> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

fn tail(log: &Path, n: usize) -> String {
    last_lines(&fs::read_to_string(log).unwrap_or_default(), n)
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// The cluster's certificates: one CA; the apiserver's serving certificate (node address, the
/// `kubernetes` Service's address and names); the kubelet's; an admin client in
/// `system:masters` that the components use; the ServiceAccount signing key.
struct Certs {
    ca: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
}

impl Certs {
    fn generate(dir: &Path) -> Result<Self, ClusterError> {
        let ca = crate::controlplane::certificate_authority("contact-cluster-ca")?;
        let write = |name: &str, pem: String| -> Result<PathBuf, std::io::Error> {
            let path = dir.join(name);
            fs::write(&path, pem)?;
            Ok(path)
        };
        let leaf = |cn: &str,
                    org: Option<&str>,
                    sans: Vec<String>,
                    usage: ExtendedKeyUsagePurpose|
         -> Result<(String, String), ClusterError> {
            let mut params = CertificateParams::new(sans)?;
            params.distinguished_name.push(DnType::CommonName, cn);
            if let Some(org) = org {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, org);
            }
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &ca)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (cert, key) = leaf(
            "kube-apiserver",
            None,
            [
                NODE_IP,
                "198.19.0.1",
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(str::to_owned)
            .to_vec(),
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        write("apiserver.crt", cert)?;
        write("apiserver.key", key)?;
        let (cert, key) = leaf(
            NODE_NAME,
            None,
            vec![NODE_IP.to_owned(), NODE_NAME.to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        write("kubelet.crt", cert)?;
        write("kubelet.key", key)?;
        let (cert, key) = leaf(
            "contact-cluster-admin",
            Some("system:masters"),
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let admin_cert = write("admin.crt", cert)?;
        let admin_key = write("admin.key", key)?;
        let sa = KeyPair::generate()?;
        write("sa.key", sa.serialize_pem())?;
        write("sa.pub", sa.public_key_pem())?;
        Ok(Self {
            ca: write("ca.crt", ca.pem())?,
            admin_cert,
            admin_key,
        })
    }

    fn kubeconfig(&self, url: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n    namespace: default\ncurrent-context: test\n",
            ca = self.ca.display(),
            cert = self.admin_cert.display(),
            key = self.admin_key.display(),
        )
    }
}
