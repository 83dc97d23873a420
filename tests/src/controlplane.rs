//! A real Kubernetes control plane for tests: etcd and kube-apiserver, started as local processes
//! the way controller-runtime's envtest does it.
//!
//! The binaries are built from their Go modules by `tests/controlplane/build-binaries.sh` and
//! cached outside the repository (`~/.cache/contact-testbin`). [`ControlPlane::start`] runs that
//! script when `CONTACT_TESTBIN_DIR`'s binaries are missing (it is idempotent and serialized by a
//! lock), so `cargo test` works on a fresh machine with Go installed; without Go it fails with the
//! script's error rather than skipping, because a test that silently skips proves nothing.
//!
//! Each control plane gets its own temporary directory, its own generated certificates (a CA, a
//! serving certificate for 127.0.0.1, a client certificate in `system:masters`, a service-account
//! signing key) and its own free loopback ports, so tests in one or several processes run in
//! parallel without clashing. Everything is killed and deleted when the [`ControlPlane`] drops.
//!
//! No controller-manager, scheduler or kubelet runs: objects are stored and validated, nothing
//! schedules pods and nothing garbage-collects. Tests assert on the objects themselves.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// How long etcd plus kube-apiserver may take to become ready. Generous because CI machines have
/// two cores and several control planes may start at once.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Errors of starting a control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The binaries could not be found or built.
    #[error("could not provide kube-apiserver and etcd: {0}")]
    Binaries(String),
    /// A file in the control plane's directory could not be written.
    #[error("failed to prepare the control plane directory")]
    Io(#[from] std::io::Error),
    /// Certificates could not be generated.
    #[error("failed to generate certificates")]
    Certificates(#[from] rcgen::Error),
    /// A process exited or did not become ready in time.
    #[error("{process} did not become ready: {reason}\n--- last lines of its log ---\n{log_tail}")]
    NotReady {
        /// Which process.
        process: &'static str,
        /// Why we gave up.
        reason: String,
        /// The end of its log, to see why.
        log_tail: String,
    },
    /// The kubeconfig could not be turned into a client.
    #[error("failed to build a client")]
    Client(#[from] kube::Error),
    /// The generated kubeconfig could not be loaded.
    #[error("failed to load the generated kubeconfig")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
}

/// A running etcd + kube-apiserver pair with an admin client.
pub struct ControlPlane {
    dir: TempDir,
    url: String,
    processes: Vec<Child>,
    config: Config,
}

impl ControlPlane {
    /// Starts a fresh control plane and waits until the apiserver answers `/readyz`.
    pub async fn start() -> Result<Self, ControlPlaneError> {
        let bins = binaries()?;
        let dir = tempfile::Builder::new().prefix("contact-cp-").tempdir()?;
        let certs = Certs::generate(dir.path())?;

        // Ports are probed then released; another process may grab one in between, so a failed
        // start is retried with new ports.
        let mut last_err = None;
        for _attempt in 0..3 {
            match Self::try_start(&bins, dir.path(), &certs).await {
                Ok((url, processes, config)) => {
                    return Ok(Self {
                        dir,
                        url,
                        processes,
                        config,
                    });
                }
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.expect("at least one attempt ran"))
    }

    async fn try_start(
        bins: &Binaries,
        dir: &Path,
        certs: &Certs,
    ) -> Result<(String, Vec<Child>, Config), ControlPlaneError> {
        let (etcd_client, etcd_peer, api_port) = (free_port()?, free_port()?, free_port()?);
        let etcd_data = dir.join(format!("etcd-{etcd_client}"));
        let etcd_log = dir.join("etcd.log");
        let etcd = spawn(
            Command::new(&bins.etcd)
                .arg("--name=test")
                .arg(format!("--data-dir={}", etcd_data.display()))
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
                    "--initial-cluster=test=http://127.0.0.1:{etcd_peer}"
                ))
                // Test data is throw-away: skipping fsync makes etcd fast on slow disks.
                .arg("--unsafe-no-fsync=true")
                .arg("--log-level=warn"),
            &etcd_log,
        )?;
        let mut processes = vec![etcd];

        let api_log = dir.join("kube-apiserver.log");
        let url = format!("https://127.0.0.1:{api_port}");
        let apiserver = spawn(
            Command::new(&bins.apiserver)
                .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_client}"))
                .arg(format!("--cert-dir={}", dir.display()))
                .arg(format!("--tls-cert-file={}", certs.serving_cert.display()))
                .arg(format!(
                    "--tls-private-key-file={}",
                    certs.serving_key.display()
                ))
                .arg(format!("--client-ca-file={}", certs.ca_cert.display()))
                .arg(format!("--secure-port={api_port}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg("--authorization-mode=RBAC")
                .arg("--service-cluster-ip-range=10.0.0.0/16")
                .arg("--allow-privileged=true")
                // As envtest: no ServiceAccount admission, so objects need no default account.
                .arg("--disable-admission-plugins=ServiceAccount")
                .arg(format!("--service-account-issuer={url}/"))
                .arg(format!(
                    "--service-account-key-file={}",
                    certs.sa_pub.display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    certs.sa_key.display()
                ))
                .arg("--v=1"),
            &api_log,
        )?;
        processes.push(apiserver);

        let kubeconfig = dir.join("kubeconfig");
        fs::write(&kubeconfig, certs.kubeconfig(&url))?;
        let kc = Kubeconfig::read_from(&kubeconfig)?;
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        let client = Client::try_from(config.clone())?;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let names = [("etcd", &etcd_log), ("kube-apiserver", &api_log)];
            let mut exited = None;
            for (child, (name, log)) in processes.iter_mut().zip(names) {
                if let Some(status) = child.try_wait()? {
                    exited = Some(ControlPlaneError::NotReady {
                        process: name,
                        reason: format!("exited with {status}"),
                        log_tail: tail(log),
                    });
                    break;
                }
            }
            if let Some(err) = exited {
                kill_all(&mut processes);
                return Err(err);
            }
            let ready = client
                .request_text(
                    http::Request::get("/readyz")
                        .body(Vec::new())
                        .expect("static request"),
                )
                .await;
            if matches!(ready.as_deref(), Ok("ok")) {
                break;
            }
            if Instant::now() > deadline {
                let err = ControlPlaneError::NotReady {
                    process: "kube-apiserver",
                    reason: format!("no ready /readyz within {START_TIMEOUT:?}: {ready:?}"),
                    log_tail: tail(&api_log),
                };
                kill_all(&mut processes);
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok((url, processes, config))
    }

    /// An admin client (`system:masters`).
    pub fn client(&self) -> Client {
        Client::try_from(self.config.clone()).expect("the config built a client once already")
    }

    /// The client configuration, for building clients with extra layers.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The apiserver's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig file for this control plane, for processes started by a test.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        kill_all(&mut self.processes);
    }
}

fn kill_all(processes: &mut Vec<Child>) {
    // The apiserver first, so it does not log a storm of etcd connection errors.
    for child in processes.iter_mut().rev() {
        let _ = child.kill();
        let _ = child.wait();
    }
    processes.clear();
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Child, ControlPlaneError> {
    let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    Ok(cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn()?)
}

fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn free_port() -> Result<u16, std::io::Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Binaries {
    apiserver: PathBuf,
    etcd: PathBuf,
}

/// Finds the cached binaries, building them once per process when they are missing.
fn binaries() -> Result<Binaries, ControlPlaneError> {
    static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut cached = DIR.lock().unwrap_or_else(|p| p.into_inner());
    if cached.is_none() {
        *cached = Some(locate_or_build()?);
    }
    let dir = cached.clone().expect("set above");
    Ok(Binaries {
        apiserver: dir.join("kube-apiserver"),
        etcd: dir.join("etcd"),
    })
}

fn locate_or_build() -> Result<PathBuf, ControlPlaneError> {
    if let Ok(dir) = std::env::var("CONTACT_TESTBIN_DIR") {
        let dir = PathBuf::from(dir);
        if dir.join("kube-apiserver").is_file() && dir.join("etcd").is_file() {
            return Ok(dir);
        }
        return Err(ControlPlaneError::Binaries(format!(
            "CONTACT_TESTBIN_DIR={} does not hold kube-apiserver and etcd; run tests/controlplane/build-binaries.sh",
            dir.display()
        )));
    }
    crate::run_build_script("tests/controlplane/build-binaries.sh")
        .map_err(ControlPlaneError::Binaries)
}

/// A fresh self-signed CA named `name`, for a test's certificates.
pub(crate) fn certificate_authority(
    name: &str,
) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

/// The certificates and keys of one control plane, written as PEM files.
struct Certs {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
}

impl Certs {
    fn generate(dir: &Path) -> Result<Self, ControlPlaneError> {
        let ca = certificate_authority("contact-test-ca")?;

        let mut serving =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        // The apiserver maps a client certificate's CN to the user and O to its groups.
        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client
            .distinguished_name
            .push(DnType::CommonName, "contact-test-admin");
        client
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate()?;
        let client_cert = client.signed_by(&client_key, &ca)?;

        let sa_key = KeyPair::generate()?;

        let write = |name: &str, pem: String| -> Result<PathBuf, std::io::Error> {
            let path = dir.join(name);
            fs::write(&path, pem)?;
            Ok(path)
        };
        Ok(Self {
            ca_cert: write("ca.crt", ca.pem())?,
            serving_cert: write("apiserver.crt", serving_cert.pem())?,
            serving_key: write("apiserver.key", serving_key.serialize_pem())?,
            client_cert: write("client.crt", client_cert.pem())?,
            client_key: write("client.key", client_key.serialize_pem())?,
            sa_key: write("sa-signer.key", sa_key.serialize_pem())?,
            sa_pub: write("sa-signer.pub", sa_key.public_key_pem())?,
        })
    }

    fn kubeconfig(&self, url: &str) -> String {
        format!(
            r#"apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {url}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: test
  context:
    cluster: test
    user: admin
    namespace: default
current-context: test
"#,
            ca = self.ca_cert.display(),
            cert = self.client_cert.display(),
            key = self.client_key.display(),
        )
    }
}
