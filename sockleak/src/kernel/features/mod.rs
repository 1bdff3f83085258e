//! Start-up feature probes: before anything is loaded, ask the kernel for every program type,
//! map type and (program type, helper) pair the embedded object uses (read from the object:
//! [`object`]), then decide ([`decide`], pure): go on, go on without some programs (one
//! warning each, naming what is not seen), or refuse with one line naming what the kernel
//! lacks. Probing beats guessing from the version: distributions backport BPF features to
//! older version numbers (RHEL), and a kernel may be built without some.

pub mod object;
pub mod stack;
pub mod table;

use std::collections::{BTreeMap, BTreeSet};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};
use aya_obj::generated::{bpf_func_id, bpf_map_type};
use log::debug;

use self::{
    object::{Kind, Uses},
    table::R,
};
use crate::{
    error::UserError,
    kernel::bpf::{ON_DEMAND, PROBES},
};

/// The oldest release with everything the object uses (bpf_loop came in 5.17).
/// `cargo xtask kernel-features` fails when the object needs a newer one.
pub const MIN_KERNEL: R = R(5, 17);

/// One thing the object needs from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    Program(Kind),
    /// An `enum bpf_map_type` value.
    Map(u32),
    /// A helper id, called from a program of this kind.
    Helper(Kind, u32),
}

impl Need {
    /// How the need is named to a user, and the release that brought it.
    pub fn describe(self) -> (String, Option<R>) {
        match self {
            Need::Program(k) => {
                let (name, r) = k.describe();
                (format!("{name} programs"), r)
            }
            Need::Map(t) => match table::map(t) {
                Some((name, r)) => (format!("{name} maps"), Some(r)),
                None => (format!("map type {t}"), None),
            },
            Need::Helper(_, id) => match table::helper(id) {
                Some((name, r)) => (name.to_string(), Some(r)),
                None => (format!("BPF helper {id}"), None),
            },
        }
    }
}

/// A probe's answer; `None`: the probe itself failed, and the real load will tell.
pub type Answer = Option<bool>;

/// What sockleak can do without: program name -> what is not seen without it ("sockets from
/// accept4"). Programs not named are required.
pub type Optional = BTreeMap<String, String>;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Load, leaving out these programs (name -> the warning that says what is not seen).
    Go { without: BTreeMap<String, String> },
    /// The one line to print (after `sockleak: `).
    Refuse(String),
}

/// "5.10" from a `uname -r` release such as "5.10.0-46-amd64".
pub fn major_minor(release: &str) -> Option<R> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some(R(major, minor))
}

/// The decision from the probes' answers (pure). `kernel` is the running release.
pub fn decide(
    kernel: &str,
    uses: &Uses,
    answers: &[(Need, Answer)],
    optional: &Optional,
) -> Verdict {
    let lacks: BTreeSet<Need> = answers
        .iter()
        .filter(|(_, a)| *a == Some(false))
        .map(|(n, _)| *n)
        .collect();
    // Per program, what it needs that the kernel lacks. A missing map type fails the whole
    // object (every map is created at load): it counts against every program.
    let mut missing: BTreeMap<&str, Vec<Need>> = BTreeMap::new();
    for p in &uses.programs {
        let mut m: Vec<Need> = Vec::new();
        m.extend(lacks.iter().filter(|n| match n {
            Need::Program(k) => *k == p.kind,
            Need::Map(_) => true,
            Need::Helper(k, id) => *k == p.kind && p.helpers.contains(id),
        }));
        if !m.is_empty() {
            missing.insert(p.name.as_str(), m);
        }
    }
    let required: BTreeSet<Need> = missing
        .iter()
        .filter(|(p, _)| !optional.contains_key(**p))
        .flat_map(|(_, m)| m.iter().copied())
        .collect();
    if !required.is_empty() {
        return Verdict::Refuse(refusal(kernel, &required));
    }
    let without = missing
        .into_iter()
        .map(|(p, m)| {
            let lost = optional.get(p).map_or("its events", String::as_str);
            let line = format!(
                "program {p} cannot be loaded: this kernel lacks {}; {lost} are not tracked",
                list(&m.into_iter().collect())
            );
            (p.to_string(), line)
        })
        .collect();
    Verdict::Go { without }
}

/// "bpf_task_pt_regs (5.15), bpf_loop (5.17)": oldest first.
fn list(needs: &BTreeSet<Need>) -> String {
    let mut v: Vec<(Option<R>, String)> = needs
        .iter()
        .map(|n| {
            let (name, r) = n.describe();
            (r, name)
        })
        .collect();
    v.sort();
    v.dedup();
    v.into_iter()
        .map(|(r, name)| match r {
            Some(r) => format!("{name} ({r})"),
            None => name,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn refusal(kernel: &str, lacks: &BTreeSet<Need>) -> String {
    let shown = major_minor(kernel).map_or_else(|| kernel.to_string(), |r| r.to_string());
    let what = list(lacks);
    match major_minor(kernel) {
        // A new enough kernel built without something (or one that forbids it).
        Some(r) if r >= MIN_KERNEL => format!(
            "kernel {kernel} lacks {what}, which {MIN_KERNEL} and later normally have: it was built or configured without it; nothing was attached"
        ),
        _ => format!(
            "kernel {shown} lacks {what} (sockleak needs {MIN_KERNEL} or later); nothing was attached"
        ),
    }
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: uname fills the struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    // SAFETY: uname NUL-terminates its fields.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn program_type(k: Kind) -> Option<ProgramType> {
    match k {
        Kind::Kprobe | Kind::Uprobe => Some(ProgramType::KProbe),
        Kind::Tracepoint => Some(ProgramType::TracePoint),
        Kind::RawTracepoint => Some(ProgramType::RawTracePoint),
        Kind::PerfEvent => Some(ProgramType::PerfEvent),
        // Their helpers cannot be probed without an attach target; the load decides.
        Kind::Tracing | Kind::Other => None,
    }
}

fn helper_id(id: u32) -> Option<BpfHelper> {
    // SAFETY: bpf_func_id is a repr(u32) enum whose values are exactly 0..__BPF_FUNC_MAX_ID.
    (id < bpf_func_id::__BPF_FUNC_MAX_ID as u32)
        .then(|| unsafe { std::mem::transmute::<u32, bpf_func_id>(id) })
}

fn map_type(t: u32) -> Option<MapType> {
    // SAFETY: bpf_map_type is a repr(u32) enum whose values are exactly 0..__MAX_BPF_MAP_TYPE.
    let raw = (t < bpf_map_type::__MAX_BPF_MAP_TYPE as u32)
        .then(|| unsafe { std::mem::transmute::<u32, bpf_map_type>(t) })?;
    MapType::try_from(raw).ok()
}

/// Asks the kernel about everything the object uses (a few dozen tiny loads: milliseconds).
pub fn probe(uses: &Uses) -> Vec<(Need, Answer)> {
    let mut out = Vec::new();
    let kinds: BTreeSet<Kind> = uses.programs.iter().map(|p| p.kind).collect();
    for k in kinds {
        let a = program_type(k).and_then(|t| is_program_supported(t).ok());
        out.push((Need::Program(k), a));
    }
    let maps: BTreeSet<u32> = uses.maps.values().copied().collect();
    for t in maps {
        let a = map_type(t).and_then(|m| is_map_supported(m).ok());
        out.push((Need::Map(t), a));
    }
    for (k, id) in uses.helper_pairs() {
        let a = match (program_type(k), helper_id(id)) {
            (Some(t), Some(h)) => match is_helper_supported(t, h) {
                Ok(a) => Some(a),
                Err(e) => {
                    debug!("probing helper {id} from {k:?}: {e}");
                    None
                }
            },
            _ => None,
        };
        out.push((Need::Helper(k, id), a));
    }
    out
}

/// The programs sockleak can run without: the optional tracepoints and every uprobe.
pub fn optional(uses: &Uses) -> Optional {
    let mut o: Optional = PROBES
        .iter()
        .filter_map(|p| Some((p.name.to_string(), p.optional?.to_string())))
        .collect();
    for p in &uses.programs {
        if matches!(p.kind, Kind::Uprobe | Kind::Kprobe) && !o.contains_key(&p.name) {
            let lost = ON_DEMAND.iter().find(|(n, _)| *n == p.name).map_or_else(
                || format!("the events of {} {}", p.kind.describe().0, p.name),
                |(_, l)| l.to_string(),
            );
            o.insert(p.name.clone(), lost);
        }
    }
    o
}

/// Reads the embedded object, probes the kernel and decides, before anything is loaded. Ok:
/// the programs to leave out, each with the warning that says what is not seen.
pub fn check(object: &[u8]) -> Result<BTreeMap<String, String>, UserError> {
    let t0 = std::time::Instant::now();
    let uses = match object::analyze(object) {
        Ok(u) => u,
        Err(e) => {
            // The loader will say what is wrong with the object.
            debug!("reading the BPF object for feature probes: {e:#}");
            return Ok(BTreeMap::new());
        }
    };
    let answers = probe(&uses);
    debug!(
        "feature probes: {} answers ({} no) in {:?}",
        answers.len(),
        answers.iter().filter(|(_, a)| *a == Some(false)).count(),
        t0.elapsed()
    );
    match decide(&kernel_release(), &uses, &answers, &optional(&uses)) {
        Verdict::Go { without } => Ok(without),
        Verdict::Refuse(line) => Err(UserError::KernelLacks(line)),
    }
}

#[cfg(test)]
mod tests;
