//! notbetrieb as a library. Modules by concern; data flows one way (see `tests::layers` and
//! the README's architecture section): a write goes through `write` (rows, journal entry and
//! events in one transaction), `read` rebuilds the snapshot, `site` renders it, `http` serves it.

pub mod auth;
pub mod cli;
pub mod demo;
pub mod domain;
pub mod export;
pub mod http;
pub mod i18n;
pub mod import;
pub mod mirror;
pub mod notify;
pub mod publish;
pub mod read;
pub mod site;
pub mod store;
pub mod write;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Which top-level modules each module may use. Data flows one way: nothing may use
    /// `http` or `cli` (only `cli` starts the server), and no pair may use each other.
    const LAYERS: &[(&str, &[&str])] = &[
        ("domain", &[]),
        ("i18n", &["domain"]),
        ("auth", &["domain"]),
        ("store", &["domain", "auth"]),
        ("read", &["domain", "i18n", "store"]),
        ("write", &["domain", "i18n", "store", "read", "auth"]),
        ("site", &["domain", "i18n", "read"]),
        ("import", &["domain", "store", "write"]),
        ("demo", &["domain", "store", "auth", "read", "write", "import"]),
        ("notify", &["domain", "i18n", "store", "auth", "read", "write", "site"]),
        ("http", &["domain", "i18n", "store", "auth", "read", "write", "site", "notify"]),
        ("export", &["domain", "i18n", "store", "auth", "read", "write", "site", "http"]),
        ("publish", &["domain", "i18n"]),
        ("mirror", &["domain", "store", "read", "site", "export", "publish"]),
        (
            "cli",
            &[
                "domain", "i18n", "store", "auth", "read", "write", "site", "import", "demo", "notify", "http",
                "export", "publish", "mirror",
            ],
        ),
    ];

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The top-level modules named by `crate::x` in a source text.
    fn uses(source: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut rest = source;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if name == "{" || name.is_empty() {
                // `crate::{a, b}`: every name in the braces.
                if let Some(group) = rest.strip_prefix('{').and_then(|g| g.split_once('}')) {
                    found.extend(group.0.split(',').map(|n| n.trim().split("::").next().unwrap_or("").to_string()));
                }
            } else {
                found.insert(name);
            }
        }
        found.retain(|n| !n.is_empty());
        found
    }

    #[test]
    fn every_module_uses_only_the_layers_below_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut wrong = Vec::new();
        for file in &files {
            let relative = file.strip_prefix(&src).unwrap();
            let Some(top) = relative.components().next().and_then(|c| c.as_os_str().to_str()) else { continue };
            if top == "main.rs" || top == "lib.rs" {
                continue;
            }
            let (_, allowed) = LAYERS
                .iter()
                .find(|(name, _)| *name == top)
                .unwrap_or_else(|| panic!("src/{top} is not in LAYERS: add it with what it may use"));
            let source = std::fs::read_to_string(file).unwrap();
            for used in uses(&source) {
                if used != top && !allowed.contains(&used.as_str()) {
                    wrong.push(format!("{} uses crate::{used}", relative.display()));
                }
            }
        }
        assert!(wrong.is_empty(), "dependencies that point the wrong way:\n{}", wrong.join("\n"));
    }

    /// SQL statements and sqlx query calls, which belong in `store` only.
    fn sql_in(source: &str) -> Vec<String> {
        let needles = ["sqlx::query", "\"SELECT ", "\"INSERT INTO ", "\"UPDATE ", "\"DELETE FROM ", "\"CREATE "];
        source
            .lines()
            .enumerate()
            .filter(|(_, line)| needles.iter().any(|n| line.contains(n)))
            .map(|(i, line)| format!("{}: {}", i + 1, line.trim()))
            .collect()
    }

    #[test]
    fn sql_lives_only_in_the_store() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut found = Vec::new();
        for file in files.iter().filter(|f| !f.starts_with(src.join("store")) && !f.ends_with("lib.rs")) {
            let source = std::fs::read_to_string(file).unwrap();
            found.extend(
                sql_in(&source).into_iter().map(|l| format!("{}:{l}", file.strip_prefix(&src).unwrap().display())),
            );
        }
        assert!(found.is_empty(), "SQL outside src/store/:\n{}", found.join("\n"));
        assert_eq!(sql_in("let x = 1;\nsqlx::query(\"SELECT 1\")").len(), 1);
    }

    #[test]
    fn the_layer_table_has_no_cycle_and_the_checker_finds_uses() {
        // Each module may use only modules listed before it, so the table itself is acyclic.
        for (i, (name, allowed)) in LAYERS.iter().enumerate() {
            for a in *allowed {
                let pos = LAYERS.iter().position(|(n, _)| n == a).unwrap_or_else(|| panic!("{a} unknown"));
                assert!(pos < i, "{name} may use {a}, which comes later");
            }
        }
        let found = uses("use crate::store::Store;\nuse crate::{i18n, read::live::App};\nlet x = crate::http::send;");
        assert_eq!(found, ["http", "i18n", "read", "store"].map(String::from).into());
    }
}
