//! What a BPF object asks of the kernel, read from its instructions: per program its type,
//! the helpers it calls (subprograms and callbacks linked in, as the loader links them),
//! bpf-to-bpf calls, callbacks and kfunc calls; the map types; global data. Both the start-up
//! probes and `cargo xtask kernel-features` read it from the object itself, so a program or
//! helper added later is covered without a list to keep.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::{Context, Result};
use aya_obj::{
    EbpfSectionKind, Object, ProgramSection,
    generated::{BPF_CALL, BPF_DW, BPF_IMM, BPF_JMP, BPF_LD, BPF_PSEUDO_CALL, BPF_PSEUDO_FUNC},
};

use super::table::R;

/// The program types sockleak can probe and check, as the kernel names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// BPF_PROG_TYPE_KPROBE attached to a kprobe.
    Kprobe,
    /// BPF_PROG_TYPE_KPROBE attached to a uprobe.
    Uprobe,
    Tracepoint,
    RawTracepoint,
    PerfEvent,
    /// BPF_PROG_TYPE_TRACING (fentry, fexit, tp_btf) and the other BTF-attached types: the
    /// loader cannot probe their helpers without a real attach target.
    Tracing,
    /// Anything else (networking, cgroup, ...): not a tracing program.
    Other,
}

impl Kind {
    fn of(s: &ProgramSection) -> Kind {
        match s {
            ProgramSection::KProbe | ProgramSection::KRetProbe => Kind::Kprobe,
            ProgramSection::UProbe { .. } | ProgramSection::URetProbe { .. } => Kind::Uprobe,
            ProgramSection::TracePoint => Kind::Tracepoint,
            ProgramSection::RawTracePoint => Kind::RawTracepoint,
            ProgramSection::PerfEvent => Kind::PerfEvent,
            ProgramSection::BtfTracePoint
            | ProgramSection::FEntry { .. }
            | ProgramSection::FExit { .. }
            | ProgramSection::Lsm { .. }
            | ProgramSection::Iter { .. } => Kind::Tracing,
            _ => Kind::Other,
        }
    }

    /// The kernel name of the type, and the release BPF programs of it came in (uprobes: when
    /// BPF programs could be attached to them).
    pub fn describe(self) -> (&'static str, Option<R>) {
        match self {
            Kind::Kprobe => ("kprobe (BPF_PROG_TYPE_KPROBE)", Some(R(4, 1))),
            Kind::Uprobe => ("uprobe (BPF_PROG_TYPE_KPROBE)", Some(R(4, 3))),
            Kind::Tracepoint => ("tracepoint (BPF_PROG_TYPE_TRACEPOINT)", Some(R(4, 7))),
            Kind::RawTracepoint => (
                "raw tracepoint (BPF_PROG_TYPE_RAW_TRACEPOINT)",
                Some(R(4, 17)),
            ),
            Kind::PerfEvent => ("perf event (BPF_PROG_TYPE_PERF_EVENT)", Some(R(4, 9))),
            Kind::Tracing => ("BTF tracing (BPF_PROG_TYPE_TRACING)", Some(R(5, 5))),
            Kind::Other => ("a non-tracing program type", None),
        }
    }
}

/// Instruction-level features, with the release each came in.
pub const SUBPROGRAM_CALLS: (&str, R) = ("bpf-to-bpf calls", R(4, 16));
pub const CALLBACKS: (&str, R) = ("callback functions (BPF_PSEUDO_FUNC)", R(5, 13));
pub const GLOBAL_DATA: (&str, R) = ("global data (.rodata/.data/.bss maps)", R(5, 2));

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub name: String,
    /// The deepest call chain's stack, as kernels before 6.13 count it (`super::stack`), with
    /// the functions along it.
    pub stack_bytes: u32,
    pub stack_chain: Vec<(String, u32)>,
    pub kind: Kind,
    /// Helper ids called by the program or anything it calls.
    pub helpers: BTreeSet<u32>,
    pub subprogram_calls: bool,
    pub callbacks: bool,
    pub kfunc_calls: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uses {
    /// By name.
    pub programs: Vec<Program>,
    /// Map name -> `enum bpf_map_type` value (global-data maps excluded).
    pub maps: BTreeMap<String, u32>,
    pub global_data: bool,
}

impl Uses {
    /// Every (program kind, helper) pair, each once.
    pub fn helper_pairs(&self) -> BTreeSet<(Kind, u32)> {
        self.programs
            .iter()
            .flat_map(|p| p.helpers.iter().map(move |h| (p.kind, *h)))
            .collect()
    }

    /// Programs that call helper `id` from a program of `kind`.
    pub fn callers(&self, kind: Kind, id: u32) -> impl Iterator<Item = &Program> {
        self.programs
            .iter()
            .filter(move |p| p.kind == kind && p.helpers.contains(&id))
    }
}

const CALL: u8 = (BPF_JMP | BPF_CALL) as u8;
const LD_IMM64: u8 = (BPF_LD | BPF_IMM | BPF_DW) as u8;

/// Reads what the object uses.
pub fn analyze(object: &[u8]) -> Result<Uses> {
    let mut obj = Object::parse(object).context("parsing the BPF object")?;
    // Link subprograms and callbacks into each program, as the loader does before loading.
    let text: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_calls(&text)
        .context("linking the BPF object's functions")?;
    let mut uses = Uses::default();
    for (name, prog) in &obj.programs {
        let f = obj
            .functions
            .get(&prog.function_key())
            .with_context(|| format!("program {name} has no code"))?;
        let starts: Vec<usize> = f
            .func_info
            .func_info
            .iter()
            .map(|i| i.insn_off as usize)
            .collect();
        let chain = super::stack::deepest(&f.instructions, &starts);
        let name_at = |at: usize, depth: u32| {
            if at == 0 {
                return (name.clone(), depth);
            }
            // The linked copy of a function has its instructions: find it by them.
            let rest = &f.instructions[at.min(f.instructions.len())..];
            let fname = obj
                .functions
                .values()
                .filter(|g| {
                    g.instructions.len() <= rest.len()
                        && g.instructions
                            .iter()
                            .zip(rest)
                            .all(|(a, b)| a.code == b.code)
                })
                .max_by_key(|g| g.instructions.len())
                .map_or_else(|| format!("insn {at}"), |g| g.name.clone());
            (fname, depth)
        };
        let mut p = Program {
            name: name.clone(),
            stack_bytes: chain.bytes,
            stack_chain: chain.frames.iter().map(|&(at, d)| name_at(at, d)).collect(),
            kind: Kind::of(&prog.section),
            helpers: BTreeSet::new(),
            subprogram_calls: false,
            callbacks: false,
            kfunc_calls: 0,
        };
        for insn in &f.instructions {
            match (insn.code, u32::from(insn.src_reg())) {
                (CALL, 0) => {
                    p.helpers.insert(insn.imm as u32);
                }
                (CALL, BPF_PSEUDO_CALL) => p.subprogram_calls = true,
                (CALL, _) => p.kfunc_calls += 1,
                (LD_IMM64, BPF_PSEUDO_FUNC) => p.callbacks = true,
                _ => {}
            }
        }
        uses.programs.push(p);
    }
    uses.programs.sort_by(|a, b| a.name.cmp(&b.name));
    for (name, m) in &obj.maps {
        match m.section_kind() {
            EbpfSectionKind::Data | EbpfSectionKind::Rodata | EbpfSectionKind::Bss => {
                uses.global_data = true;
            }
            _ => {
                uses.maps.insert(name.clone(), m.map_type());
            }
        }
    }
    Ok(uses)
}
