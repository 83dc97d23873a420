//! The production path on a real single-node cluster made on this machine
//! ([`contact_tests::cluster`]): both images built from their Dockerfiles with podman, the chart
//! installed with helm, a tenant with the Conversation API simulator as a pod, a conversation
//! through Traefik over HTTPS, backups, leader failover, `kubectl get contacttenants`. The steps
//! are `tests/e2e/scenario.sh`, the same script `tests/e2e/kind.sh` runs on kind.
//!
//! The browser path is checked with an HTTPS client (curl in the scenario) rather than Chromium:
//! what the Ingress changes is TLS and the `Secure` session cookie, which curl sees exactly; the
//! Workspace itself is driven by the browser suite against the same binary.

use std::path::Path;
use std::process::Command;

use contact_tests::cluster::{Binaries, Cluster};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// The images `tests/cluster/build-images.sh` tags, as the scenario's helm values name them.
const TAG: &str = "dev";

#[tokio::test(flavor = "multi_thread")]
async fn the_production_path_runs_on_a_real_node() {
    let bins = Binaries::locate_or_build().unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::Builder::new()
        .prefix("contact-cluster-test-")
        .tempdir()
        .expect("tempdir");
    let images = work.path().join("images");
    contact_tests::run_build_script_with(
        "tests/cluster/build-images.sh",
        &[images.to_str().expect("utf-8 path")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "images (name, bytes, build seconds):\n{}",
        std::fs::read_to_string(images.join("images.txt")).unwrap_or_default()
    );

    let cluster = Cluster::start(bins).await.unwrap_or_else(|e| panic!("{e}"));
    for image in ["pause", "contact-operator", "contact-runtime"] {
        cluster
            .import_image(&images.join(format!("{image}.tar")))
            .unwrap_or_else(|e| panic!("{e}\n{}", cluster.diagnose()));
    }
    let tls = tls_files(work.path());

    let helm = contact_tests::tools::helm();
    let out = Command::new("bash")
        .arg(contact_tests::repo_root().join("tests/e2e/scenario.sh"))
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .env("KUBECTL", cluster.kubectl())
        .env("HELM", &helm)
        .env("HELM_CACHE_HOME", work.path().join("helm-cache"))
        .env("HELM_CONFIG_HOME", work.path().join("helm-config"))
        .env(
            "OPERATOR_IMAGE",
            format!("localhost/contact-operator:{TAG}"),
        )
        .env("RUNTIME_IMAGE", format!("localhost/contact-runtime:{TAG}"))
        .env("IMAGE_PULL_POLICY", "Never")
        .env("INGRESS_CLASS", "traefik")
        .env("INGRESS_NAMESPACE", "traefik")
        .env("INGRESS_HTTPS", cluster.ingress_https())
        .env("TLS_CERT", &tls.cert)
        .env("TLS_KEY", &tls.key)
        .env("TLS_CA", &tls.ca)
        .env("KILL_CONTAINER", cluster.kill_container_command())
        .output()
        .expect("bash runs scenario.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}\n{stderr}");
    assert!(
        out.status.success() && stderr.contains("scenario: ok"),
        "the scenario failed ({}); what the cluster looked like:\n{}",
        out.status,
        cluster.diagnose()
    );
}

/// The Ingress's TLS: a CA the test makes and a certificate for the tenant's host.
struct Tls {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn tls_files(dir: &Path) -> Tls {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name
        .push(DnType::CommonName, "contact-ingress-test-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
    let leaf = CertificateParams::new(vec!["e2e.contact.test".to_owned()]).expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = leaf.signed_by(&key, &ca).expect("certificate");
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    };
    Tls {
        ca: write("ingress-ca.crt", ca.pem()),
        cert: write("ingress.crt", cert.pem()),
        key: write("ingress.key", key.serialize_pem()),
    }
}
