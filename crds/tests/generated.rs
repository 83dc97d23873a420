//! The committed CRD YAML is exactly what the Rust types generate (drift check), and generating
//! it does not panic (kube's schema rewriter panics on some enum shapes).

use contact_crds::{GENERATED_PATHS, crds_yaml};

#[test]
fn committed_crd_yaml_matches_the_types() {
    let generated = crds_yaml().expect("the CRD renders");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for path in GENERATED_PATHS {
        let committed = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        if committed != generated {
            let diff = similar::TextDiff::from_lines(&committed, &generated);
            let shown: String = diff
                .unified_diff()
                .context_radius(2)
                .header(path, "generated")
                .to_string()
                .lines()
                .take(80)
                .collect::<Vec<_>>()
                .join("\n");
            panic!(
                "{path} is out of date with crds/src: run `make generate` and commit the result.\n{shown}"
            );
        }
    }
}

#[test]
fn the_schema_carries_every_admission_rule() {
    let yaml = crds_yaml().unwrap();
    for message in [
        "hostingLocation is immutable once set",
        "more than one runtime replica requires PostgreSQL",
        "channel names must be unique",
        "must not exceed retention.deleteConversationsAfterDays",
        "backups.schedule must be a five-field cron expression",
        "maintenanceWindow.start must be a time of day",
        "maintenanceWindow.duration must be more than 0 and at most 24h",
        "ingress.host must be a valid DNS name",
        "database must set exactly one of sqlite, postgres or cloudNativePG",
    ] {
        // Long messages are folded over lines in YAML; compare with whitespace collapsed.
        let flat = yaml.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(message), "the CRD lacks the rule {message:?}");
    }
}
