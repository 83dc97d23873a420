//! The crate's floors import one way only (the layout in `lib.rs`): a module may name modules on
//! its own floor or below, never above. This test reads the sources and fails on an import that
//! points up, e.g. `build` reaching into `reconcile` for a type, which is how the two once came
//! to import each other through `ValidatedTenant`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The floors, lowest first. A module not listed here fails the test: place it.
const FLOORS: &[&[&str]] = &[
    &["labels", "clock", "config", "metrics", "instrument"],
    &["maintenance"],
    &["tenant"],
    &["build"],
    &["lifecycle"],
    &["reconcile"],
    &["http"],
    &["leader"],
    &["run"],
    &["args"],
];

fn floor_of(module: &str) -> usize {
    FLOORS
        .iter()
        .position(|f| f.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is on no floor: add it to FLOORS"))
}

/// The `.rs` files of `path` (a file, or a folder and everything below it).
fn sources(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).expect("readable source folder") {
        files.extend(sources(&entry.expect("dir entry").path()));
    }
    files.retain(|f| f.extension().is_some_and(|e| e == "rs"));
    files
}

/// The leading identifier of `s`.
fn ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The crate modules `text` names through `crate::<module>` or `crate::{<module>, ..}`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for (i, m) in text.match_indices("crate::") {
        let rest = &text[i + m.len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                named.extend(group.split(',').map(ident));
            }
            None => {
                named.insert(ident(rest));
            }
        }
    }
    named.retain(|m| !m.is_empty());
    named
}

#[test]
fn no_module_imports_a_floor_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut upward = Vec::new();
    let mut modules = 0;
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("dir entry").path();
        let module = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_string();
        if ["lib", "main", "floors"].contains(&module.as_str()) {
            continue;
        }
        modules += 1;
        let floor = floor_of(&module);
        for file in sources(&path) {
            let text = std::fs::read_to_string(&file).expect("readable source");
            for named in named_modules(&text) {
                if named != module && floor_of(&named) > floor {
                    upward.push(format!("{} names crate::{named}", file.display()));
                }
            }
        }
    }
    assert!(modules >= 14, "read the crate's modules ({modules})");
    assert!(
        upward.is_empty(),
        "imports up a floor:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    let named = named_modules("use crate::reconcile::Ctx;\nuse crate::{labels};");
    assert!(named.contains("reconcile") && named.contains("labels"));
    assert!(floor_of("reconcile") > floor_of("build"));
}
