//! `cargo xtask kernel-features`: what the built kernel object asks of the kernel (program
//! types, map types, helpers, instruction features), each with the release that brought it,
//! read from the object itself; fails when one is newer than the stated minimum
//! (`features::MIN_KERNEL`) or unknown to the tables. `build-ebpf` runs the check after every
//! build, so a program that starts using a newer helper fails at build time, in CI too.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context, Result, bail};
use sockleak::kernel::features::{
    MIN_KERNEL, Need,
    object::{self, CALLBACKS, GLOBAL_DATA, Kind, SUBPROGRAM_CALLS, Uses},
    stack,
    table::R,
};

use crate::util::workspace_root;

/// One row: what, the release, and the programs (or maps) that use it.
struct Row {
    what: String,
    kind: &'static str,
    since: Option<R>,
    users: Vec<String>,
}

fn rows(u: &Uses) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut by_kind: BTreeMap<Kind, Vec<String>> = BTreeMap::new();
    for p in &u.programs {
        by_kind.entry(p.kind).or_default().push(p.name.clone());
    }
    for (k, users) in by_kind {
        let (name, since) = Need::Program(k).describe();
        rows.push(Row {
            what: name,
            kind: "program type",
            since,
            users,
        });
    }
    let mut by_map: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for (name, t) in &u.maps {
        by_map.entry(*t).or_default().push(name.clone());
    }
    for (t, users) in by_map {
        let (name, since) = Need::Map(t).describe();
        rows.push(Row {
            what: name,
            kind: "map type",
            since,
            users,
        });
    }
    let mut by_helper: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for p in &u.programs {
        for h in &p.helpers {
            by_helper.entry(*h).or_default().push(p.name.clone());
        }
    }
    for (h, users) in by_helper {
        // The tables give the release for tracing programs, which is all the object has.
        let (name, since) = Need::Helper(Kind::Tracepoint, h).describe();
        rows.push(Row {
            what: name,
            kind: "helper",
            since,
            users,
        });
    }
    let feature = |rows: &mut Vec<Row>, (what, since): (&str, R), users: Vec<String>| {
        if !users.is_empty() {
            rows.push(Row {
                what: what.to_string(),
                kind: "instructions",
                since: Some(since),
                users,
            });
        }
    };
    let names = |f: &dyn Fn(&object::Program) -> bool| {
        u.programs
            .iter()
            .filter(|p| f(p))
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
    };
    feature(&mut rows, SUBPROGRAM_CALLS, names(&|p| p.subprogram_calls));
    feature(&mut rows, CALLBACKS, names(&|p| p.callbacks));
    if u.global_data {
        feature(&mut rows, GLOBAL_DATA, vec!["(the object)".into()]);
    }
    let kfuncs = names(&|p| p.kfunc_calls > 0);
    if !kfuncs.is_empty() {
        rows.push(Row {
            what: "kfunc calls".into(),
            kind: "instructions",
            since: None,
            users: kfuncs,
        });
    }
    rows.sort_by(|a, b| (a.since, a.kind, &a.what).cmp(&(b.since, b.kind, &b.what)));
    rows
}

/// The table as Markdown.
fn markdown(object: &str, rows: &[Row]) -> String {
    let mut s = format!(
        "# Kernel features the BPF object uses\n\n\
         Written by `cargo xtask kernel-features --write` from `{object}`.\n\
         `cargo xtask build-ebpf` checks the object against the stated minimum, **Linux {MIN_KERNEL}**,\n\
         after every build. Each release is the one that brought the feature to tracing programs\n\
         (from the kernel's git history: `sockleak/src/kernel/features/table.rs`). sockleak probes\n\
         each of these at start-up and names what a kernel lacks instead of loading.\n\n\
         | since | kind | feature | used by |\n| --- | --- | --- | --- |\n"
    );
    for r in rows {
        let since = r.since.map_or("?".to_string(), |v| v.to_string());
        let users = if r.users.len() > 4 {
            let what = if r.kind == "map type" {
                "maps"
            } else {
                "programs"
            };
            format!("{} {what}", r.users.len())
        } else {
            r.users.join(", ")
        };
        let _ = writeln!(s, "| {since} | {} | {} | {users} |", r.kind, r.what);
    }
    s
}

/// The check: Ok(summary line) or the failures.
fn verdict(rows: &[Row]) -> Result<String> {
    let mut bad = Vec::new();
    for r in rows {
        match r.since {
            None => bad.push(format!(
                "{} ({}) is not in the tables: add it to sockleak/src/kernel/features/table.rs with the release that brought it",
                r.what, r.kind
            )),
            Some(v) if v > MIN_KERNEL => bad.push(format!(
                "{} ({}, used by {}) needs Linux {v}, newer than the stated minimum {MIN_KERNEL}: \
                 avoid it, or raise features::MIN_KERNEL and the README's requirement",
                r.what,
                r.kind,
                r.users.join(", ")
            )),
            Some(_) => {}
        }
    }
    if !bad.is_empty() {
        bail!(
            "the kernel object needs more than Linux {MIN_KERNEL}:\n  {}",
            bad.join("\n  ")
        );
    }
    let newest = rows
        .iter()
        .filter_map(|r| Some((r.since?, &r.what)))
        .max()
        .context("the object uses nothing")?;
    let mut line = format!(
        "kernel features: {} used, the newest {} ({}); stated minimum {MIN_KERNEL}",
        rows.len(),
        newest.1,
        newest.0
    );
    if newest.0 < MIN_KERNEL {
        line += &format!(" (could be lowered to {})", newest.0);
    }
    Ok(line)
}

fn object_path() -> Result<std::path::PathBuf> {
    let dir = workspace_root().join("target/bpfel-unknown-none");
    // The newest object, as sockleak's build.rs embeds it.
    ["release", "debug"]
        .iter()
        .map(|p| dir.join(p).join("sockleak"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .context("no kernel object: run `cargo xtask build-ebpf --release` first")
}

fn analyze(path: &Path) -> Result<(String, Vec<Row>, Uses)> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let uses = object::analyze(&data)?;
    let rel = path
        .strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string();
    Ok((rel, rows(&uses), uses))
}

/// A chain as the kernel's message would add it up: `f (224) -> g (40)`.
fn chain_text(p: &object::Program) -> String {
    p.stack_chain
        .iter()
        .map(|(f, d)| format!("{} ({d})", short_name(f)))
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// A Rust mangled name's last path element (`_RNvNtCs.._8sockleak4open13socket_traced` ->
/// `socket_traced`); other names as they are.
fn short_name(f: &str) -> String {
    if !f.starts_with("_R") {
        return f.to_string();
    }
    // v0 mangling ends in <decimal length><identifier> for the innermost name.
    let b = f.as_bytes();
    let mut end = b.len();
    while end > 0 && !b[end - 1].is_ascii_alphanumeric() {
        end -= 1;
    }
    for start in (0..end).rev() {
        let (digits, ident) = f.split_at(start);
        let n: String = digits
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        if !n.is_empty() {
            let len: usize = n.chars().rev().collect::<String>().parse().unwrap_or(0);
            if len == ident.len().min(end - start) && len > 0 {
                return ident[..len].to_string();
            }
        }
    }
    f.to_string()
}

/// The stack check: Ok(the deepest chain, one line) or the programs over the limit.
fn stack_verdict(u: &Uses) -> Result<String> {
    let over: Vec<String> = u
        .programs
        .iter()
        .filter(|p| p.stack_bytes > stack::LIMIT)
        .map(|p| format!("{}: {} bytes: {}", p.name, p.stack_bytes, chain_text(p)))
        .collect();
    if !over.is_empty() {
        bail!(
            "call chains need more than {} bytes of stack as kernels before 6.13 count them (each function's frame rounded up to 32, global functions included; 6.1 and 6.12 refuse such a program): keep big state in per-CPU maps\n  {}",
            stack::LIMIT,
            over.join("\n  ")
        );
    }
    let deepest = u
        .programs
        .iter()
        .max_by_key(|p| p.stack_bytes)
        .context("the object has no program")?;
    Ok(format!(
        "deepest call chain: {} bytes of {} ({}: {})",
        deepest.stack_bytes,
        stack::LIMIT,
        deepest.name,
        chain_text(deepest)
    ))
}

/// After a build: the check only (one line each, or the failures).
pub fn check_built(path: &Path) -> Result<()> {
    let (_, rows, uses) = analyze(path)?;
    eprintln!("xtask: {}", verdict(&rows)?);
    eprintln!("xtask: {}", stack_verdict(&uses)?);
    Ok(())
}

/// `cargo xtask kernel-features [--write]`.
pub fn kernel_features(write: bool) -> Result<()> {
    let path = object_path()?;
    let (rel, rows, uses) = analyze(&path)?;
    let mut md = markdown(&rel, &rows);
    let _ = write!(
        md,
        "\n## Stack\n\nThe deepest call chain of each program, as kernels before 6.13 add it up (each function's \
         frame rounded up to 32 bytes, global functions and callbacks included; the limit is {} bytes). \
         `cargo xtask build-ebpf` fails when one is over.\n\n| program | bytes | chain |\n| --- | ---: | --- |\n",
        stack::LIMIT
    );
    let mut progs: Vec<&object::Program> = uses.programs.iter().collect();
    progs.sort_by_key(|p| std::cmp::Reverse(p.stack_bytes));
    for p in progs {
        let _ = writeln!(md, "| {} | {} | {} |", p.name, p.stack_bytes, chain_text(p));
    }
    print!("{md}");
    let doc = workspace_root().join("docs/kernel-features.md");
    if write {
        std::fs::write(&doc, &md).with_context(|| format!("writing {}", doc.display()))?;
        eprintln!("xtask: wrote {}", doc.display());
    } else if std::fs::read_to_string(&doc).ok().as_deref() != Some(md.as_str()) {
        eprintln!(
            "xtask: note: docs/kernel-features.md differs from this object: `cargo xtask kernel-features --write` updates it"
        );
    }
    eprintln!("xtask: {}", verdict(&rows)?);
    eprintln!("xtask: {}", stack_verdict(&uses)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(what: &str, since: Option<R>) -> Row {
        Row {
            what: what.into(),
            kind: "helper",
            since,
            users: vec!["p".into()],
        }
    }

    #[test]
    fn mangled_names_are_shortened() {
        assert_eq!(
            short_name("_RNvNtCs2HR5eN0kbXb_8sockleak4open13socket_traced"),
            "socket_traced"
        );
        assert_eq!(short_name("sockleak_fp_walk"), "sockleak_fp_walk");
    }

    #[test]
    fn newer_than_the_minimum_or_unknown_fails() {
        let ok = verdict(&[row("bpf_loop", Some(MIN_KERNEL)), row("x", Some(R(4, 1)))]).unwrap();
        assert!(ok.contains("the newest bpf_loop"), "{ok}");
        let e = verdict(&[row("bpf_new", Some(R(MIN_KERNEL.0 + 1, 0)))]).unwrap_err();
        assert!(
            format!("{e}").contains("bpf_new (helper, used by p) needs Linux"),
            "{e}"
        );
        let e = verdict(&[row("BPF helper 999", None)]).unwrap_err();
        assert!(format!("{e}").contains("is not in the tables"), "{e}");
        let low = verdict(&[row("bpf_old", Some(R(4, 1)))]).unwrap();
        assert!(low.contains("could be lowered to 4.1"), "{low}");
    }
}
