//! The library's module graph has no cycles: dependencies point one way (kernels → nn → probe →
//! train/diagnose → report → yolo/lab → detect), between the top-level modules and between the
//! parts of each. Edges are read from the source: every `crate::a::b` and `super::x` path outside
//! comments, resolved to the longest module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `src/a/b/c.rs` → `["a", "b", "c"]`; `src/a/mod.rs` → `["a"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module paths a file's code names (`crate::x::y…`, `super::…`), as written.
fn referenced_paths(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (at, _) in line
            .match_indices("crate::")
            .chain(line.match_indices("super::"))
        {
            // skip `my_crate::`, and the second `super` of `super::super::`
            if at > 0 && line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
            {
                continue;
            }
            let path: String = line[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let words: Vec<&str> = path.split("::").filter(|w| !w.is_empty()).collect();
            let mut base: Vec<String> = Vec::new();
            let mut rest = words.as_slice();
            if rest.first() == Some(&"crate") {
                rest = &rest[1..];
            } else {
                // `super` is the parent of the file's own module (`a/b/c.rs` and `a/b/c/mod.rs`
                // both hold module a::b::c)
                base = module.to_vec();
                while rest.first() == Some(&"super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            let mut full = base;
            full.extend(rest.iter().map(|w| w.to_string()));
            out.push(full);
        }
    }
    out
}

/// The graph between modules at `depth` path components (1: top-level modules), restricted to
/// the modules under `within`.
fn graph(
    files: &BTreeMap<Vec<String>, Vec<Vec<String>>>,
    within: &[String],
    depth: usize,
) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<&Vec<String>> = files.keys().collect();
    let node = |m: &[String]| -> Option<String> {
        (m.len() >= depth && m.starts_with(within)).then(|| m[..depth].join("::"))
    };
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, refs) in files {
        let Some(from) = node(module) else { continue };
        g.entry(from.clone()).or_default();
        for r in refs {
            // the longest prefix that is a module
            let Some(target) = (1..=r.len())
                .rev()
                .map(|n| r[..n].to_vec())
                .find(|p| known.contains(p))
            else {
                continue;
            };
            if let Some(to) = node(&target) {
                if to != from {
                    g.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    g
}

/// One cycle of `g`, if any (depth-first search).
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

fn library() -> BTreeMap<Vec<String>, Vec<Vec<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths
        .iter()
        .filter(|p| !p.ends_with("lib.rs"))
        .map(|p| {
            let module = module_of(&src, p);
            let code = std::fs::read_to_string(p).unwrap();
            let refs = referenced_paths(&module, &code);
            (module, refs)
        })
        .collect()
}

#[test]
fn the_reader_resolves_crate_and_super_paths() {
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let code = "use crate::probe::Tap;\n// crate::ignored::path\nlet x = super::error::E;\n";
    assert_eq!(
        referenced_paths(&m("detect::run::plots"), code),
        vec![m("probe::Tap"), m("detect::run::error::E")]
    );
    assert_eq!(
        referenced_paths(&m("detect::run"), "use super::super::nn::X;"),
        vec![m("nn::X")]
    );
    let mut files = BTreeMap::new();
    files.insert(m("a"), vec![m("b::f")]);
    files.insert(m("b"), vec![m("a::g")]);
    files.insert(m("c"), vec![m("a")]);
    let g = graph(&files, &[], 1);
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".to_string(), "b".into(), "a".into()])
    );
    files.remove(&m("b"));
    files.insert(m("b"), vec![]);
    assert_eq!(find_cycle(&graph(&files, &[], 1)), None);
}

#[test]
fn no_cycles_between_modules() {
    let files = library();
    assert!(files.len() > 50, "read {} files", files.len());
    let g = graph(&files, &[], 1);
    assert!(g.len() > 8, "{g:?}");
    let mut cycles = Vec::new();
    if let Some(c) = find_cycle(&g) {
        cycles.push(format!("top-level modules: {}", c.join(" → ")));
    }
    // inside each top-level module, between its parts
    let tops: BTreeSet<String> = files
        .keys()
        .filter(|m| m.len() > 1)
        .map(|m| m[0].clone())
        .collect();
    for top in tops {
        let g = graph(&files, std::slice::from_ref(&top), 2);
        if let Some(c) = find_cycle(&g) {
            cycles.push(format!("parts of `{top}`: {}", c.join(" → ")));
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}
