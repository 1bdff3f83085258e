//! The layering of `src/` as a test: every `crate::` path in a module names a module of its
//! own layer or a lower one (lib.rs lists the layers, lowest first).

use std::{fs, path::Path};

/// Layers, lowest first; modules in one entry are one layer.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["kernel"],
    &["host"],
    &["symbols"],
    &["tracker"],
    &["model"],
    &["diagnose"],
    &["report"],
    &["serve"],
    &["cli", "config", "output"],
    &["trace"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level modules a file's `crate::` paths name (grouped `use crate::{a, b::c}` too).
fn named_modules(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Heads of the group's items at depth 0.
            let mut depth = 0usize;
            let mut head = true;
            let mut word = String::new();
            for c in group.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        head = false;
                    }
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => head = true,
                    c if head && (c.is_alphanumeric() || c == '_') => word.push(c),
                    _ => {
                        if !word.is_empty() {
                            out.push(std::mem::take(&mut word));
                            head = false;
                        }
                    }
                }
                if !head && !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            if !word.is_empty() {
                out.push(word);
            }
        } else {
            let w: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(w);
        }
    }
    out
}

fn visit(dir: &Path, root: &Path, bad: &mut Vec<String>, seen: &mut usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            visit(&path, root, bad, seen);
            continue;
        }
        let rel = path.strip_prefix(root).unwrap_or(&path);
        let first = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("")
            .trim_end_matches(".rs")
            .to_string();
        let Some(own) = layer_of(&first) else {
            continue; // lib.rs, main.rs and test helpers of the crate root
        };
        *seen += 1;
        let src = fs::read_to_string(&path).unwrap_or_default();
        for m in named_modules(&src) {
            if let Some(l) = layer_of(&m)
                && l > own
            {
                bad.push(format!("{} uses crate::{m}", rel.display()));
            }
        }
    }
}

#[test]
fn imports_run_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (mut bad, mut seen) = (Vec::new(), 0);
    visit(&root, &root, &mut bad, &mut seen);
    assert!(seen > 50, "walked {seen} files");
    bad.sort();
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

#[test]
fn every_top_level_module_has_a_layer() {
    let lib = include_str!("lib.rs");
    for line in lib.lines() {
        if let Some(m) = line.strip_prefix("pub mod ") {
            let m = m.trim_end_matches(';');
            assert!(layer_of(m).is_some(), "{m} has no layer in layers.rs");
        }
    }
}

#[test]
fn grouped_paths_are_read() {
    let src =
        "use crate::{trace::x, host::{procfs, netns}, model::names};\nlet _ = crate::serve::y;";
    assert_eq!(named_modules(src), ["trace", "host", "model", "serve"]);
}
