//! Writes every object the operator builds for the tenants in the given files into a folder, one
//! JSON file per object: what `.ci/checkov.sh` gives checkov besides the rendered chart, so the
//! builders' output is judged by an outside tool as the chart is.
//!
//! `cargo run -q -p contact-operator --example children -- <out-dir> examples/*.yaml`

use anyhow::Context;
use contact_crds::v1alpha1::ContactTenant;
use contact_operator::build::{self, Children, Inputs};
use contact_operator::config::OperatorConfig;
use contact_operator::tenant;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .context("usage: children <out-dir> <tenant.yaml>...")?,
    );
    std::fs::create_dir_all(&out)?;
    let mut written = 0;
    for file in args {
        let text = std::fs::read_to_string(&file).with_context(|| file.clone())?;
        let docs = contact_tests::kube_helpers::parse_documents(&text)
            .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        for doc in docs {
            if doc.types.as_ref().is_none_or(|t| t.kind != "ContactTenant") {
                continue;
            }
            let mut t: ContactTenant = serde_json::from_value(serde_json::to_value(&doc)?)?;
            t.metadata.namespace = Some("tenant-example".into());
            t.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
            written += write_children(&out, &t)?;
        }
    }
    anyhow::ensure!(written > 0, "no ContactTenant in the given files");
    println!("wrote {written} objects to {}", out.display());
    Ok(())
}

/// Writes every child of `t`; returns how many.
fn write_children(out: &Path, t: &ContactTenant) -> anyhow::Result<usize> {
    let v = tenant::validate(t, &OperatorConfig::default())?;
    let inputs = Inputs {
        existing_keys: &BTreeMap::new(),
        next_window: None,
        replicas: v.replicas,
        scaled_down: false,
        ingress_namespace: "ingress-nginx",
        cnpg_image: None,
    };
    let Children {
        service_account,
        keys,
        config_map,
        service,
        network_policy,
        ingress,
        backup_pvc,
        backup_job,
        statefulset,
        deployment,
        pdb,
        cnpg,
    } = build::all(&v, inputs, &mut rand::rng());
    let objects = [
        Some(serde_json::to_value(service_account)?),
        Some(serde_json::to_value(keys)?),
        Some(serde_json::to_value(config_map)?),
        Some(serde_json::to_value(service)?),
        Some(serde_json::to_value(network_policy)?),
        Some(serde_json::to_value(ingress)?),
        backup_pvc.map(serde_json::to_value).transpose()?,
        backup_job.map(serde_json::to_value).transpose()?,
        statefulset.map(serde_json::to_value).transpose()?,
        deployment.map(serde_json::to_value).transpose()?,
        pdb.map(serde_json::to_value).transpose()?,
        cnpg.map(serde_json::to_value).transpose()?,
    ];
    let mut n = 0;
    for o in objects.into_iter().flatten() {
        let kind = o["kind"].as_str().unwrap_or("Object").to_lowercase();
        let name = o["metadata"]["name"].as_str().unwrap_or("unnamed");
        let path = out.join(format!("{}-{kind}-{name}.json", v.name));
        std::fs::write(&path, serde_json::to_vec_pretty(&o)?)?;
        n += 1;
    }
    Ok(n)
}
