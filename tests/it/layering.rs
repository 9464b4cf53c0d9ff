//! The layering the compiler does not hold by itself: the pure core's dependencies, and the
//! shell's floors (telemetry < state < tls < server, cluster < cli), with no import loops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::repo_path;

/// What `palisade-core` must never depend on, directly or through another crate.
const BANNED: &[&str] = &[
    "tokio",
    "kube",
    "kube-client",
    "kube-runtime",
    "k8s-openapi",
    "axum",
    "hyper",
    "hyper-util",
    "hyper-rustls",
    "notify",
    "prometheus-client",
    "rustls",
    "tokio-rustls",
    "rcgen",
];

#[test]
fn the_core_names_no_runtime_network_tls_or_metrics_crate() {
    let manifest = std::fs::read_to_string(repo_path("core/Cargo.toml")).unwrap();
    let mut table = String::new();
    let mut named = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            table = line.to_owned();
            continue;
        }
        if !table.contains("dependencies") || line.starts_with('#') {
            continue;
        }
        if let Some((name, _)) = line.split_once('=') {
            named.push((table.clone(), name.trim().to_owned()));
        }
    }
    assert!(
        named.iter().any(|(_, n)| n == "regorus"),
        "the dependency tables of core/Cargo.toml were not read: {named:?}"
    );
    let banned: Vec<_> = named
        .iter()
        .filter(|(_, n)| BANNED.contains(&n.as_str()))
        .collect();
    assert!(
        banned.is_empty(),
        "core/Cargo.toml names {banned:?}: the core has no runtime, network, TLS or metrics library; put that code in the shell (src/)"
    );
}

#[test]
fn no_crate_the_core_builds_with_is_a_runtime_network_tls_or_metrics_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo_path(""))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "palisade-core",
            "--all-features",
            "-e",
            "normal,build,dev",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    let crates: BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains("regorus"), "cargo tree listed {crates:?}");
    let banned: Vec<_> = crates.iter().filter(|c| BANNED.contains(c)).collect();
    assert!(
        banned.is_empty(),
        "palisade-core builds with {banned:?} (see `cargo tree -p palisade-core -i <crate>`)"
    );
}

/// The shell's floors, bottom first; a floor imports only floors below it. `server` and
/// `cluster` share a floor and never import each other.
const FLOORS: &[&[&str]] = &[
    &["telemetry"],
    &["state"],
    &["tls"],
    &["server", "cluster"],
    &["cli"],
];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

/// Every Rust file of the shell's module `top` (`src/top.rs` and `src/top/**`).
fn files_of(top: &str) -> Vec<PathBuf> {
    let mut files = vec![repo_path(&format!("src/{top}.rs"))];
    let mut dirs = vec![repo_path(&format!("src/{top}"))];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.retain(|f| f.exists());
    files.sort();
    files
}

/// The module path of a shell file: `src/server/http.rs` → `server::http`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(repo_path("src")).unwrap();
    rel.with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("::")
}

/// The shell modules a file names: `crate::a::b` paths (the first two segments, where the
/// second is a module of the shell), and `super::x` paths resolved against the file's module.
fn imports(file: &Path, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let here = module_of(file);
    // A file's `super` is its parent module; `a.rs`'s children live in `a/`.
    let parent: Vec<&str> = here.split("::").collect();
    let parent = &parent[..parent.len().saturating_sub(1)];
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.to_vec())] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let first = ident(rest);
            let mut path: Vec<String> = base.iter().map(|s| (*s).to_owned()).collect();
            path.push(first.clone());
            let after = &rest[first.len()..];
            if let Some(second) = after.strip_prefix("::") {
                let second = ident(second);
                let deeper = format!("{}::{second}", path.join("::"));
                if modules.contains(&deeper) {
                    out.insert(deeper);
                    continue;
                }
            }
            let name = path.join("::");
            if modules.contains(&name) {
                out.insert(name);
            }
        }
    }
    out.remove(&here);
    out
}

fn shell_graph() -> BTreeMap<String, BTreeSet<String>> {
    let tops: Vec<&str> = FLOORS.iter().flat_map(|f| f.iter().copied()).collect();
    let files: Vec<PathBuf> = tops.iter().flat_map(|t| files_of(t)).collect();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    files
        .iter()
        .map(|f| (module_of(f), imports(f, &modules)))
        .collect()
}

#[test]
fn each_shell_floor_imports_only_the_floors_below_it() {
    let graph = shell_graph();
    assert!(
        graph
            .get("server::listener")
            .is_some_and(|i| i.contains("server::http")),
        "the import scan does not see server::listener's use of server::http: {graph:?}"
    );
    let mut wrong = Vec::new();
    for (module, imports) in &graph {
        let top = module.split("::").next().unwrap();
        let floor = floor_of(top).unwrap();
        for import in imports {
            let other = import.split("::").next().unwrap();
            if other == top {
                continue;
            }
            let other_floor = floor_of(other).unwrap();
            if other_floor >= floor {
                wrong.push(format!("{module} imports {import}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the floors (telemetry < state < tls < server, cluster < cli):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_shell_has_no_import_loop() {
    let graph = shell_graph();
    // Depth-first search for a back edge, reporting the loop it closes.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            // A module's own submodules are its parts, not an import loop through it.
            if next.starts_with(&format!("{node}::")) {
                continue;
            }
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("import loop: {}", cycle.join(" → "));
        }
    }
}
