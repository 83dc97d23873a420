//! The runtime's floors, checked: every `crate::` reference in `src/` (and every `super::` that
//! climbs to the crate root) points to a module on the same floor or below, and modules on one
//! floor never import each other in a circle.
//!
//! The floors are not written here but read from the table in `src/lib.rs`'s module doc, so the
//! table is the rule. References are found in the code with comments and literals blanked out:
//! `use crate::{a, b::{c}}` groups over several lines, inline paths (`crate::storage::now_ms()`)
//! and `$crate::` in macros all count; a doc comment that names a module does not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One source file: its path below the crate (`src/http/mod.rs`) and its text.
struct Source {
    path: String,
    text: String,
}

/// A reference from one top-level module to another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Reference {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// The floor of each top-level module, from the `| n | `a`, `b` | … |` rows of the table.
fn floors(lib_rs: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for line in lib_rs.lines() {
        let Some(row) = line.trim().strip_prefix("//!") else {
            continue;
        };
        let cells: Vec<&str> = row.trim().split('|').map(str::trim).collect();
        // `| 3 | `live`, `channels` | what |` splits into ["", "3", "`live`, …", "what", ""].
        let (Some(floor), Some(modules)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Ok(floor) = floor.parse::<u32>() else {
            continue;
        };
        for name in modules.split(',') {
            out.insert(name.trim().trim_matches('`').to_owned(), floor);
        }
    }
    out
}

/// The files the `Pure files … :` paragraph of the doc names (`src/`-relative, in backticks).
fn pure_files(lib_rs: &str) -> BTreeSet<String> {
    let doc: Vec<&str> = lib_rs
        .lines()
        .filter_map(|l| l.trim().strip_prefix("//!"))
        .map(str::trim)
        .collect();
    let Some(start) = doc.iter().position(|l| l.starts_with("Pure files")) else {
        return BTreeSet::new();
    };
    doc[start..]
        .iter()
        .take_while(|l| !l.is_empty())
        .flat_map(|l| l.split('`').skip(1).step_by(2))
        .filter(|name| name.ends_with(".rs"))
        .map(|name| format!("src/{name}"))
        .collect()
}

/// The top-level modules `src/lib.rs` declares.
fn declared(lib_rs: &str) -> BTreeSet<String> {
    blank(lib_rs)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

/// `text` with comments, string literals and char literals replaced by spaces (lines kept).
fn blank(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let keep = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    while i < c.len() {
        if c[i] == '/' && at(&c, i + 1) == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && at(&c, i + 1) == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(&c, i + 1) == Some('*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && at(&c, i + 1) == Some('/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(keep(c[i]));
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (at(&c, i + 1) == Some('"') || at(&c, i + 1) == Some('#'))
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
        {
            // Raw string r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            while j < c.len() {
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.extend(c[i..j.min(c.len())].iter().map(|ch| keep(*ch)));
            i = j;
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(keep(c[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a): only the first ends
            // with a quote close by.
            let end = if at(&c, i + 1) == Some('\\') {
                (i + 2..c.len().min(i + 12)).find(|&j| c[j] == '\'')
            } else if at(&c, i + 2) == Some('\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    out.extend(std::iter::repeat_n(' ', e + 1 - i));
                    i = e + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The char at `i`, if any.
fn at(c: &[char], i: usize) -> Option<char> {
    c.get(i).copied()
}

/// A token of the blanked text with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

fn tokens(blanked: &str) -> Vec<(Token, usize)> {
    let mut out = Vec::new();
    for (n, line) in blanked.lines().enumerate() {
        let c: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < c.len() {
            let ch = c[i];
            if ch.is_alphabetic() || ch == '_' || ch == '$' {
                let start = i;
                i += 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                let word: String = c[start..i].iter().collect();
                out.push((Token::Ident(word.trim_start_matches('$').to_owned()), n + 1));
                continue;
            }
            let token = match ch {
                ':' if c.get(i + 1) == Some(&':') => {
                    i += 1;
                    Token::PathSep
                }
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                c if c.is_whitespace() => {
                    i += 1;
                    continue;
                }
                _ => Token::Other,
            };
            out.push((token, n + 1));
            i += 1;
        }
    }
    out
}

/// The module path of a file below `src/` (`src/http/routes/mod.rs` → `http::routes`).
fn module_path(path: &str) -> Vec<String> {
    let rel = path.strip_prefix("src/").unwrap_or(path);
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = rel.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The names a path continues with after `::` at token `i`: one name, or every first name of a
/// `{…}` group (nested groups name deeper items, not modules). Returns `(name, line)`s.
fn first_names(t: &[(Token, usize)], i: usize) -> Vec<(String, usize)> {
    match t.get(i) {
        Some((Token::Ident(name), line)) => vec![(name.clone(), *line)],
        Some((Token::Open, _)) => {
            let mut out = Vec::new();
            let mut depth = 0;
            let mut expect_name = true;
            for (token, line) in &t[i..] {
                match token {
                    Token::Open => {
                        depth += 1;
                        expect_name = depth == 1;
                    }
                    Token::Close => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Token::Comma if depth == 1 => expect_name = true,
                    Token::Ident(name) if depth == 1 && expect_name => {
                        out.push((name.clone(), *line));
                        expect_name = false;
                    }
                    _ => {}
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// Every reference of `source` to a top-level module in `tops` other than its own.
fn references(source: &Source, tops: &BTreeSet<String>) -> Vec<Reference> {
    let file_path = module_path(&source.path);
    let Some(own) = file_path.first().cloned() else {
        return Vec::new();
    };
    let t = tokens(&blank(&source.text));
    let mut out = Vec::new();
    // Inline `mod name { … }` blocks deepen the module path (for `super::`).
    let mut inline: Vec<(String, i32)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < t.len() {
        match &t[i].0 {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Token::Ident(w) if w == "mod" => {
                if let (Some((Token::Ident(name), _)), Some((Token::Open, _))) =
                    (t.get(i + 1), t.get(i + 2))
                {
                    inline.push((name.clone(), depth));
                }
            }
            Token::Ident(w)
                if w == "crate" && t.get(i + 1).map(|x| &x.0) == Some(&Token::PathSep) =>
            {
                out.extend(first_names(&t, i + 2));
                i += 2;
                continue;
            }
            Token::Ident(w) if w == "super" => {
                // Count the `super::` steps; only a path that climbs to the crate root can name
                // another top-level module.
                let previous_is_sep = i > 0 && t[i - 1].0 == Token::PathSep;
                let mut k = 0;
                let mut j = i;
                while matches!(&t.get(j).map(|x| &x.0), Some(Token::Ident(w)) if w == "super")
                    && t.get(j + 1).map(|x| &x.0) == Some(&Token::PathSep)
                {
                    k += 1;
                    j += 2;
                }
                let here = file_path.len() + inline.len();
                if !previous_is_sep && k > 0 && k >= here {
                    out.extend(first_names(&t, j));
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.into_iter()
        .filter(|(to, _)| tops.contains(to) && *to != own)
        .map(|(to, line)| Reference {
            file: source.path.clone(),
            line,
            from: own.clone(),
            to,
        })
        .collect()
}

/// Every broken rule, each naming its file and line: modules on no floor, upward imports, and
/// imports that run in a circle between modules of one floor.
fn violations(lib_rs: &str, sources: &[Source]) -> Vec<String> {
    let floor = floors(lib_rs);
    let tops = declared(lib_rs);
    let mut out: Vec<String> = tops
        .iter()
        .filter(|m| !floor.contains_key(*m))
        .map(|m| format!("src/lib.rs: module `{m}` stands on no floor of the table"))
        .collect();
    let refs: Vec<Reference> = sources.iter().flat_map(|s| references(s, &tops)).collect();
    let pure = pure_files(lib_rs);
    for file in &pure {
        if !sources.iter().any(|s| s.path == *file) {
            out.push(format!("src/lib.rs: pure file `{file}` does not exist"));
        }
    }
    for r in refs
        .iter()
        .filter(|r| pure.contains(&r.file) && r.to != "domain")
    {
        out.push(format!(
            "{}:{}: a pure file imports `{}` (only `domain` is allowed)",
            r.file, r.line, r.to
        ));
    }
    let mut same_floor: BTreeMap<(String, String), Vec<&Reference>> = BTreeMap::new();
    for r in &refs {
        let (Some(from), Some(to)) = (floor.get(&r.from), floor.get(&r.to)) else {
            continue;
        };
        if to > from {
            out.push(format!(
                "{}:{}: `{}` (floor {from}) imports `{}` (floor {to}): an upward import",
                r.file, r.line, r.from, r.to
            ));
        } else if to == from {
            same_floor
                .entry((r.from.clone(), r.to.clone()))
                .or_default()
                .push(r);
        }
    }
    // A circle exists where `a` reaches `b` and `b` reaches `a`.
    let reaches = |a: &str, b: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![a.to_owned()];
        while let Some(m) = todo.pop() {
            for (from, to) in same_floor.keys() {
                if *from == m && seen.insert(to.clone()) {
                    todo.push(to.clone());
                }
            }
        }
        seen.contains(b)
    };
    for ((from, to), uses) in &same_floor {
        if reaches(to, from) {
            for r in uses {
                out.push(format!(
                    "{}:{}: `{from}` imports `{to}`, which imports `{from}` back: a circle",
                    r.file, r.line
                ));
            }
        }
    }
    out
}

/// Every `.rs` file below `dir`, with paths relative to `root`.
fn sources(root: &Path, dir: &Path, out: &mut Vec<Source>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("below root");
            out.push(Source {
                path: rel.to_string_lossy().replace('\\', "/"),
                text: std::fs::read_to_string(&path).expect("read source"),
            });
        }
    }
}

#[test]
fn the_runtime_imports_only_from_its_floor_or_below() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib_rs = std::fs::read_to_string(root.join("src/lib.rs")).expect("lib.rs");
    let mut all = Vec::new();
    sources(root, &root.join("src"), &mut all);
    // main.rs is the binary: it sees the library from outside.
    all.retain(|s| s.path != "src/main.rs");
    assert!(all.len() > 50, "found only {} files", all.len());
    let floor = floors(&lib_rs);
    assert_eq!(
        floor.keys().cloned().collect::<BTreeSet<_>>(),
        declared(&lib_rs),
        "the table names exactly the declared modules"
    );
    let refs: usize = all
        .iter()
        .map(|s| references(s, &declared(&lib_rs)).len())
        .sum();
    assert!(refs > 100, "found only {refs} cross-module references");
    let broken = violations(&lib_rs, &all);
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

const TABLE: &str = "//! | floor | modules | what |\n//! |---|---|---|\n//! | 0 | `domain` | words |\n//! | 1 | `storage`, `cache` | rows |\n//! | 2 | `http` | routes |\n//!\n//! Pure files import `domain` only:\n//! `cache/pure.rs`.\n\npub mod cache;\npub mod domain;\npub mod http;\npub mod storage;\n";

/// The violations of `files` under [`TABLE`] (with an empty `src/cache/pure.rs` unless given).
fn check(files: &[(&str, &str)]) -> Vec<String> {
    let mut sources: Vec<Source> = files
        .iter()
        .map(|(path, text)| Source {
            path: (*path).to_owned(),
            text: (*text).to_owned(),
        })
        .collect();
    if !sources.iter().any(|s| s.path == "src/cache/pure.rs") {
        sources.push(Source {
            path: "src/cache/pure.rs".to_owned(),
            text: String::new(),
        });
    }
    violations(TABLE, &sources)
}

#[test]
fn the_table_is_read_from_the_doc() {
    assert_eq!(
        floors(TABLE),
        [("cache", 1), ("domain", 0), ("http", 2), ("storage", 1)]
            .map(|(m, f)| (m.to_owned(), f))
            .into()
    );
    let pure = Source {
        path: "src/cache/pure.rs".to_owned(),
        text: String::new(),
    };
    let missing = violations(&format!("{TABLE}pub mod app;\n"), &[pure]);
    assert_eq!(
        missing,
        ["src/lib.rs: module `app` stands on no floor of the table"]
    );
}

#[test]
fn an_upward_import_is_named_with_its_file_and_line() {
    let broken = check(&[(
        "src/storage/rows.rs",
        "//! Rows.\n\nuse crate::domain::Word;\nuse crate::http::Error;\n",
    )]);
    assert_eq!(
        broken,
        ["src/storage/rows.rs:4: `storage` (floor 1) imports `http` (floor 2): an upward import"]
    );
}

#[test]
fn groups_over_several_lines_inline_paths_and_macros_count() {
    let broken = check(&[
        (
            "src/domain/mod.rs",
            "use crate::{\n    storage::Store,\n    http::{self, Error},\n};\n",
        ),
        (
            "src/cache.rs",
            "fn f() { let _ = crate::http::router(); }\nmacro_rules! m { () => { $crate::http::x() } }\n",
        ),
    ]);
    let mut broken = broken;
    broken.sort();
    assert_eq!(
        broken,
        [
            "src/cache.rs:1: `cache` (floor 1) imports `http` (floor 2): an upward import",
            "src/cache.rs:2: `cache` (floor 1) imports `http` (floor 2): an upward import",
            "src/domain/mod.rs:2: `domain` (floor 0) imports `storage` (floor 1): an upward import",
            "src/domain/mod.rs:3: `domain` (floor 0) imports `http` (floor 2): an upward import",
        ]
    );
}

#[test]
fn comments_strings_and_downward_imports_do_not_count() {
    let broken = check(&[(
        "src/http/mod.rs",
        "//! Uses [`crate::storage`].\n// use crate::http;\n/* crate::http */\nconst S: &str = \"crate::http::x\";\nconst R: &str = r#\"use crate::http\"#;\nfn f<'a>(c: char) -> bool { c == '\"' }\nuse crate::storage::Store;\nuse super::domain::Word;\n",
    )]);
    assert!(broken.is_empty(), "{broken:?}");
}

#[test]
fn super_paths_that_climb_to_the_root_count() {
    let broken = check(&[
        ("src/storage.rs", "use super::http::Error;\n"),
        (
            "src/cache/mod.rs",
            "use super::cache::X;\nmod tests {\n    use super::super::http::Y;\n    use super::*;\n}\n",
        ),
    ]);
    assert_eq!(
        broken,
        [
            "src/storage.rs:1: `storage` (floor 1) imports `http` (floor 2): an upward import",
            "src/cache/mod.rs:3: `cache` (floor 1) imports `http` (floor 2): an upward import",
        ]
    );
}

#[test]
fn a_pure_file_may_import_the_vocabulary_only() {
    assert_eq!(pure_files(TABLE), ["src/cache/pure.rs".to_owned()].into());
    let broken = check(&[
        (
            "src/cache/pure.rs",
            "use crate::domain::Word;\nuse crate::storage::Row;\n",
        ),
        ("src/cache/mod.rs", "use crate::storage::Row;\n"),
    ]);
    assert_eq!(
        broken,
        ["src/cache/pure.rs:2: a pure file imports `storage` (only `domain` is allowed)"]
    );
    let gone = violations(TABLE, &[]);
    assert_eq!(
        gone,
        ["src/lib.rs: pure file `src/cache/pure.rs` does not exist"]
    );
}

#[test]
fn a_circle_on_one_floor_is_named_both_ways() {
    let broken = check(&[
        ("src/storage/mod.rs", "use crate::cache::Cache;\n"),
        ("src/cache.rs", "\nuse crate::storage::Store;\n"),
    ]);
    assert_eq!(
        broken,
        [
            "src/cache.rs:2: `cache` imports `storage`, which imports `cache` back: a circle",
            "src/storage/mod.rs:1: `storage` imports `cache`, which imports `storage` back: a circle",
        ]
    );
    // One way only is fine.
    assert!(check(&[("src/storage/mod.rs", "use crate::cache::Cache;\n")]).is_empty());
}
