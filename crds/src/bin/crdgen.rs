//! Writes the generated CRD YAML to its committed locations, or prints it with `--stdout`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let yaml = contact_crds::crds_yaml()?;
    if std::env::args().any(|a| a == "--stdout") {
        print!("{yaml}");
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for path in contact_crds::GENERATED_PATHS {
        let path = root.join(path);
        std::fs::write(&path, &yaml)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
