//! Compiling a file's CFI into kernel unwind rows (pure: bytes in, rows out).
//!
//! Every FDE of `.eh_frame` (then `.debug_frame`, for code `.eh_frame` leaves uncovered) is
//! evaluated with gimli into rows "from this address on, the caller's frame is found so". Each
//! row is classified into what the kernel walk can do (`row_kind`): CFA = rsp or rbp plus a
//! multiple of 8, the `.plt` expression, the return address undefined (the outermost frame),
//! or not expressible. Rows are sorted, holes without CFI become GAP rows (alignment padding
//! between functions does not: no return address points into it), and equal neighbours merge.

use std::collections::BTreeMap;

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, Register,
    RegisterRule, UnwindContext, UnwindSection,
};
use object::{Object, ObjectSection, ObjectSegment, ReadRef};
use sockleak_common::unwind::{UnwindRow, row_kind};

const RBP: Register = Register(6);
const RSP: Register = Register(7);
const RA: Register = Register(16);

/// Holes between FDEs shorter than this may be alignment padding (see `is_padding`).
pub const MAX_PADDING: u64 = 16;
/// Rows per file the kernel's binary search covers.
pub const MAX_ROWS: usize = sockleak_common::unwind::MAX_FILE_ROWS;

/// What the compilation found, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub fdes: u64,
    pub debug_frame_fdes: u64,
    /// Rows as gimli evaluates them.
    pub cfi_rows: u64,
    /// Rows per `row_kind` after merging.
    pub rows_by_kind: [u64; row_kind::COUNT],
    /// Code bytes each kind covers.
    pub bytes_by_kind: [u64; row_kind::COUNT],
    /// Why CFI rows were not expressible, by reason (evaluated rows).
    pub unsupported: BTreeMap<String, u64>,
}

/// A file's rows: `rows[i]` holds from `base + rows[i].pc` to the next row's pc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Lowest vaddr covered; row pcs are relative to it.
    pub base: u64,
    pub rows: Vec<UnwindRow>,
    pub stats: Stats,
}

impl Table {
    /// The row for a (file) vaddr, found as the kernel finds it: the last row at or below it.
    pub fn lookup(&self, vaddr: u64) -> Option<UnwindRow> {
        let rel = vaddr.checked_sub(self.base)?;
        if rel > u32::MAX as u64 {
            return None;
        }
        let i = self.rows.partition_point(|r| r.pc as u64 <= rel);
        (i > 0).then(|| self.rows[i - 1])
    }
}

/// Why a file has no table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileError {
    NotElf(String),
    /// Only x86_64 rows exist (the arm64 walk needs a return-address rule per row).
    Architecture(String),
    NoCfi,
    Malformed(String),
    TooLarge(String),
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompileError::NotElf(e) => write!(f, "not an ELF file ({e})"),
            CompileError::Architecture(a) => write!(f, "{a} code: kernel tables are x86_64 only"),
            CompileError::NoCfi => write!(f, "no .eh_frame or .debug_frame"),
            CompileError::Malformed(e) => write!(f, "malformed CFI ({e})"),
            CompileError::TooLarge(e) => write!(f, "too large for a kernel table ({e})"),
        }
    }
}

/// The CFI sections of a file and the addresses their pointers are relative to.
pub struct Cfi<'a> {
    /// (section address, bytes).
    pub eh_frame: Option<(u64, &'a [u8])>,
    pub eh_frame_hdr: Option<u64>,
    pub text: Option<u64>,
    pub got: Option<u64>,
    pub debug_frame: Option<&'a [u8]>,
}

/// A span of code and its row, whose `pc` holds the span's length: 16 bytes, for a file has
/// one per CFI row (1.3 million in librustc_driver) and the list is the compile's peak memory.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    row: UnwindRow,
}

impl Span {
    /// None for an empty span, or one longer than a row's pc can say (4 GiB).
    fn new(start: u64, end: u64, row: UnwindRow) -> Option<Span> {
        let len = u32::try_from(end.checked_sub(start)?).ok()?;
        (len > 0).then_some(Span {
            start,
            row: UnwindRow { pc: len, ..row },
        })
    }

    fn end(&self) -> u64 {
        self.start + self.row.pc as u64
    }
}

fn only(kind: u8) -> UnwindRow {
    UnwindRow {
        kind,
        ..UnwindRow::default()
    }
}

/// What the kernel walk can do with one evaluated CFI row.
fn classify<R: gimli::Reader>(
    row: &gimli::UnwindTableRow<R::Offset>,
    section: &impl UnwindSection<R>,
    unsupported: &mut BTreeMap<String, u64>,
) -> UnwindRow {
    let mut bad = |why: String| {
        *unsupported.entry(why).or_default() += 1;
        only(row_kind::UNSUPPORTED)
    };
    match row.register(RA) {
        Some(RegisterRule::Undefined) => return only(row_kind::STOP),
        Some(RegisterRule::Offset(-8)) => {}
        None => return bad("return address: no rule".into()),
        Some(r) => return bad(format!("return address: {r:?}")),
    }
    let mut out = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let kind = match *register {
                RSP => row_kind::RSP,
                RBP => row_kind::RBP,
                r => return bad(format!("CFA register {}", r.0)),
            };
            if *offset <= 0 || *offset % 8 != 0 || *offset / 8 > u16::MAX as i64 {
                return bad(format!("CFA offset {offset}"));
            }
            UnwindRow {
                pc: 0,
                cfa_off: (*offset / 8) as u16,
                kind,
                rbp: 0,
            }
        }
        CfaRule::Expression(e) => {
            let Ok(expr) = e.get(section) else {
                return bad("unreadable CFA expression".into());
            };
            let bytes = expr.0.to_slice().map(|c| c.to_vec()).unwrap_or_default();
            match plt_expression(&bytes) {
                Some(r) => r,
                None => return bad("CFA expression".into()),
            }
        }
    };
    // No rule: rbp is callee-saved, so unchanged.
    match row.register(RBP) {
        None | Some(RegisterRule::Undefined | RegisterRule::SameValue) => {}
        Some(RegisterRule::Offset(o)) if o != 0 && o % 8 == 0 && (-1024..=1016).contains(&o) => {
            out.rbp = (o / 8) as i8
        }
        Some(r) => return bad(format!("rbp: {r:?}")),
    }
    out
}

/// The CFA expression of x86_64 `.plt` entries: rsp + A + (((rip & 15) >= T) << 3), as
/// `DW_OP_breg7 A; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_lit<T>; DW_OP_ge;
/// DW_OP_lit3; DW_OP_shl; DW_OP_plus`.
pub fn plt_expression(b: &[u8]) -> Option<UnwindRow> {
    if b.len() == 11
        && b[0] == 0x77
        && b[1] < 0x40
        && b[1].is_multiple_of(8)
        && b[2..6] == [0x80, 0x00, 0x3f, 0x1a]
        && (0x30..0x50).contains(&b[6])
        && b[7..] == [0x2a, 0x33, 0x24, 0x22]
    {
        return Some(UnwindRow {
            pc: 0,
            cfa_off: (b[1] / 8) as u16,
            kind: row_kind::PLT,
            rbp: (b[6] - 0x30) as i8,
        });
    }
    None
}

fn collect<'a, S>(
    section: &S,
    bases: &BaseAddresses,
    spans: &mut Vec<Span>,
    stats: &mut Stats,
) -> Result<u64, CompileError>
where
    S: UnwindSection<EndianSlice<'a, LittleEndian>>,
{
    let mut fdes = 0;
    let mut ctx = Box::new(UnwindContext::new());
    let mut entries = section.entries(bases);
    loop {
        let entry = match entries.next() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            // What was read so far stands; the rest has no rows (GAP).
            Err(e) if fdes > 0 => {
                log::debug!("CFI read stopped after {fdes} FDEs: {e}");
                break;
            }
            Err(e) => return Err(CompileError::Malformed(e.to_string())),
        };
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(S::cie_from_offset) else {
            continue;
        };
        if fde.len() == 0 {
            continue;
        }
        fdes += 1;
        if fde.is_signal_trampoline() {
            spans.extend(Span::new(
                fde.initial_address(),
                fde.end_address(),
                only(row_kind::SIGNAL),
            ));
            continue;
        }
        let Ok(mut table) = fde.rows(section, bases, &mut ctx) else {
            continue;
        };
        while let Ok(Some(row)) = table.next_row() {
            stats.cfi_rows += 1;
            let r = classify(row, section, &mut stats.unsupported);
            spans.extend(Span::new(row.start_address(), row.end_address(), r));
        }
    }
    Ok(fdes)
}

/// Whether the bytes of a short hole between FDEs are alignment padding: nothing but the
/// bytes of `nop`, multi-byte `nop`s (`66 2e 0f 1f 84 00 ...`) and `int3`. Anything else is
/// code without CFI. Unknown bytes (no section holds them) count as padding.
pub fn is_padding(bytes: Option<&[u8]>) -> bool {
    const NOP_ALPHABET: [u8; 11] = [
        0x90, 0xcc, 0x66, 0x2e, 0x0f, 0x1f, 0x00, 0x40, 0x44, 0x80, 0x84,
    ];
    bytes.is_none_or(|b| b.iter().all(|x| NOP_ALPHABET.contains(x)))
}

/// Compiles a file's CFI. `code(start, end)` gives the bytes of code between FDEs when known
/// (to tell padding from code without CFI).
pub fn compile_cfi<'c>(
    cfi: &Cfi<'_>,
    code: impl Fn(u64, u64) -> Option<&'c [u8]>,
) -> Result<Table, CompileError> {
    let mut stats = Stats::default();
    let mut spans = Vec::new();
    if let Some((addr, bytes)) = cfi.eh_frame {
        let mut bases = BaseAddresses::default().set_eh_frame(addr);
        if let Some(t) = cfi.text {
            bases = bases.set_text(t);
        }
        if let Some(h) = cfi.eh_frame_hdr {
            bases = bases.set_eh_frame_hdr(h);
        }
        if let Some(g) = cfi.got {
            bases = bases.set_got(g);
        }
        let mut s = EhFrame::new(bytes, LittleEndian);
        s.set_address_size(8);
        stats.fdes = collect(&s, &bases, &mut spans, &mut stats)?;
    }
    if let Some(bytes) = cfi.debug_frame {
        let mut covered: Vec<(u64, u64)> = spans.iter().map(|s| (s.start, s.end())).collect();
        covered.sort_unstable();
        let mut s = DebugFrame::new(bytes, LittleEndian);
        s.set_address_size(8);
        let mut extra = Vec::new();
        stats.debug_frame_fdes =
            collect(&s, &BaseAddresses::default(), &mut extra, &mut stats).unwrap_or(0);
        // Only for code .eh_frame leaves uncovered.
        extra.retain(|sp| {
            let i = covered.partition_point(|c| c.1 <= sp.start);
            !(i < covered.len() && covered[i].0 < sp.end())
        });
        spans.extend(extra);
    }
    if spans.is_empty() {
        return Err(CompileError::NoCfi);
    }
    // Rows of one FDE have distinct starts; spans two FDEs claim alike are ordered by their
    // rule, so the winner does not depend on the sort (unstable: no buffer of half the list).
    spans.sort_unstable_by_key(|s| (s.start, s.end(), s.row.kind, s.row.cfa_off, s.row.rbp));
    let base = spans[0].start;
    let mut rows: Vec<UnwindRow> = Vec::with_capacity(spans.len());
    let mut covered_to = base;
    let push = |rows: &mut Vec<UnwindRow>, pc: u64, mut r: UnwindRow| {
        r.pc = (pc - base) as u32;
        if let Some(last) = rows.last_mut() {
            if (last.kind, last.cfa_off, last.rbp) == (r.kind, r.cfa_off, r.rbp) {
                return;
            }
            if last.pc == r.pc {
                *last = r;
                return;
            }
        }
        rows.push(r);
    };
    for s in &spans {
        if s.end() <= covered_to {
            continue; // within what earlier FDEs cover (duplicates): the first one wins
        }
        if s.start - base > u32::MAX as u64 {
            return Err(CompileError::TooLarge(
                "its code spans more than 4 GiB".into(),
            ));
        }
        let start = s.start.max(covered_to);
        if start > covered_to {
            let hole = start - covered_to;
            if hole >= MAX_PADDING || !is_padding(code(covered_to, start)) {
                push(&mut rows, covered_to, only(row_kind::GAP));
            }
        }
        push(&mut rows, start, s.row);
        covered_to = s.end();
    }
    if covered_to - base > u32::MAX as u64 {
        return Err(CompileError::TooLarge(
            "its code spans more than 4 GiB".into(),
        ));
    }
    push(&mut rows, covered_to, only(row_kind::GAP));
    if rows.len() > MAX_ROWS {
        return Err(CompileError::TooLarge(format!(
            "{} rows, at most {MAX_ROWS}",
            rows.len()
        )));
    }
    for (i, r) in rows.iter().enumerate() {
        let end = rows.get(i + 1).map_or(r.pc as u64, |n| n.pc as u64);
        let k = (r.kind as usize).min(row_kind::COUNT - 1);
        stats.rows_by_kind[k] += 1;
        stats.bytes_by_kind[k] += end - r.pc as u64;
    }
    Ok(Table { base, rows, stats })
}

/// What the tables need to know about an ELF file besides its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// GNU build id, when the file has one: the key tables are shared by.
    pub build_id: Option<Vec<u8>>,
    /// (file offset, vaddr, file size) of each PT_LOAD segment.
    pub loads: Vec<(u64, u64, u64)>,
}

/// The build id and loadable segments of an ELF file (headers and notes only).
pub fn elf_info<'d, R: ReadRef<'d>>(data: R) -> Result<ElfInfo, CompileError> {
    let file = object::File::parse(data).map_err(|e| CompileError::NotElf(e.to_string()))?;
    Ok(ElfInfo {
        build_id: file.build_id().ok().flatten().map(<[u8]>::to_vec),
        loads: file
            .segments() // PT_LOAD only, for ELF
            .map(|s| {
                let (off, size) = s.file_range();
                (off, s.address(), size)
            })
            .collect(),
    })
}

/// Compiles an ELF file's CFI. Reads only the CFI sections and the few bytes of each short
/// hole between FDEs (through `data`, which may be a read cache over the file).
pub fn compile<'d, R: ReadRef<'d>>(data: R) -> Result<Table, CompileError> {
    let file = object::File::parse(data).map_err(|e| CompileError::NotElf(e.to_string()))?;
    if file.architecture() != object::Architecture::X86_64 {
        return Err(CompileError::Architecture(format!(
            "{:?}",
            file.architecture()
        )));
    }
    let sect = |name: &str| file.section_by_name(name);
    let eh_frame = match sect(".eh_frame") {
        Some(s) => Some((
            s.address(),
            s.data()
                .map_err(|e| CompileError::Malformed(e.to_string()))?,
        )),
        None => None,
    };
    // A compressed .debug_frame (rare: distributions move it to debug packages) is skipped.
    let debug_frame = sect(".debug_frame")
        .filter(|s| {
            s.compressed_file_range()
                .is_ok_and(|r| r.format == object::CompressionFormat::None)
        })
        .and_then(|s| s.data().ok());
    let cfi = Cfi {
        eh_frame,
        eh_frame_hdr: sect(".eh_frame_hdr").map(|s| s.address()),
        text: sect(".text").map(|s| s.address()),
        got: sect(".got").map(|s| s.address()),
        debug_frame,
    };
    // (vaddr, file offset, size) of code sections, to read the bytes of holes.
    let texts: Vec<(u64, u64, u64)> = file
        .sections()
        .filter(|s| s.kind() == object::SectionKind::Text)
        .filter_map(|s| {
            let (off, size) = s.file_range()?;
            Some((s.address(), off, size))
        })
        .collect();
    let code = |start: u64, end: u64| -> Option<&'d [u8]> {
        texts.iter().find_map(|&(a, off, size)| {
            let lo = start.checked_sub(a)?;
            let hi = end.checked_sub(a)?;
            (hi <= size).then_some(())?;
            data.read_bytes_at(off + lo, hi - lo).ok()
        })
    };
    compile_cfi(&cfi, code)
}

#[cfg(test)]
mod tests {
    use gimli::{
        Encoding, Format,
        write::{
            Address, CallFrameInstruction as I, CommonInformationEntry, EndianVec, Expression,
            FrameDescriptionEntry, FrameTable,
        },
    };

    use super::*;

    const RA_W: gimli::Register = gimli::Register(16);

    fn cie(signal: bool) -> CommonInformationEntry {
        let enc = Encoding {
            format: Format::Dwarf32,
            version: 1,
            address_size: 8,
        };
        let mut c = CommonInformationEntry::new(enc, 1, -8, RA_W);
        c.add_instruction(I::Cfa(RSP, 8));
        c.add_instruction(I::Offset(RA_W, -8));
        c.signal_trampoline = signal;
        c
    }

    fn fde(at: u64, len: u32, ins: &[(u32, I)]) -> FrameDescriptionEntry {
        let mut f = FrameDescriptionEntry::new(Address::Constant(at), len);
        for (off, i) in ins {
            f.add_instruction(*off, i.clone());
        }
        f
    }

    /// An .eh_frame at address 0x10000 holding `fdes` (under a plain CIE, or a signal one).
    fn eh_frame(fdes: Vec<(bool, FrameDescriptionEntry)>) -> Vec<u8> {
        let mut t = FrameTable::default();
        let plain = t.add_cie(cie(false));
        let signal = t.add_cie(cie(true));
        for (s, f) in fdes {
            t.add_fde(if s { signal } else { plain }, f);
        }
        let mut w = gimli::write::EhFrame(EndianVec::new(LittleEndian));
        t.write_eh_frame(&mut w).unwrap();
        w.0.into_vec()
    }

    fn table(bytes: &[u8], code: &dyn Fn(u64, u64) -> Option<&'static [u8]>) -> Table {
        let cfi = Cfi {
            eh_frame: Some((0x10000, bytes)),
            eh_frame_hdr: None,
            text: None,
            got: None,
            debug_frame: None,
        };
        compile_cfi(&cfi, code).unwrap()
    }

    fn row(pc: u32, kind: u8, cfa_off: u16, rbp: i8) -> UnwindRow {
        UnwindRow {
            pc,
            cfa_off,
            kind,
            rbp,
        }
    }

    #[test]
    fn prologue_rows_rsp_then_rbp_based() {
        // push %rbp; mov %rsp,%rbp; ... leave; ret
        let bytes = eh_frame(vec![(
            false,
            fde(
                0x1000,
                0x40,
                &[
                    (1, I::CfaOffset(16)),
                    (1, I::Offset(RBP, -16)),
                    (4, I::CfaRegister(RBP)),
                    (0x3e, I::Cfa(RSP, 8)),
                ],
            ),
        )]);
        let t = table(&bytes, &|_, _| None);
        assert_eq!(t.base, 0x1000);
        assert_eq!(
            t.rows,
            vec![
                row(0, row_kind::RSP, 1, 0),
                row(1, row_kind::RSP, 2, -2),
                row(4, row_kind::RBP, 2, -2),
                // rbp is still saved at CFA-16 per the CFI (no restore instruction here).
                row(0x3e, row_kind::RSP, 1, -2),
                row(0x40, row_kind::GAP, 0, 0),
            ]
        );
        assert_eq!(t.lookup(0x1002), Some(row(1, row_kind::RSP, 2, -2)));
        assert_eq!(t.lookup(0xfff), None, "below the table");
        assert_eq!(t.lookup(0x1040).map(|r| r.kind), Some(row_kind::GAP));
        assert_eq!(t.stats.fdes, 1);
    }

    #[test]
    fn holes_padding_gaps_and_special_rows() {
        // PLT expression: rsp + 8 + (((rip & 15) >= 11) << 3).
        let plt = Expression::raw(vec![
            0x77, 8, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
        ]);
        let bytes = eh_frame(vec![
            (false, fde(0x1000, 0x20, &[])),
            // 0x1020..0x1028: nop padding, no row.
            (false, fde(0x1028, 0x10, &[(0, I::CfaExpression(plt))])),
            // 0x1038..0x1040: 8 bytes of real code without CFI: a gap row.
            (false, fde(0x1040, 0x10, &[(0, I::Undefined(RA_W))])),
            // 0x1050..0x1100: a long hole: a gap row whatever its bytes.
            (
                false,
                fde(0x1100, 0x10, &[(2, I::CfaRegister(gimli::Register(10)))]),
            ),
            (true, fde(0x1110, 0x10, &[])),
            // An FDE inside another: the first one wins.
            (false, fde(0x1004, 0x8, &[(0, I::CfaOffset(64))])),
        ]);
        let nops: &'static [u8] = &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0x90, 0xcc];
        let code: &'static [u8] = &[0x48, 0x89, 0xe5, 0xe8, 0x00, 0x00, 0x00, 0xc3];
        let t = table(&bytes, &move |s, _| match s {
            0x1020 => Some(nops),
            0x1038 => Some(code),
            _ => None,
        });
        assert_eq!(
            t.rows,
            vec![
                row(0, row_kind::RSP, 1, 0),
                row(0x28, row_kind::PLT, 1, 11),
                row(0x38, row_kind::GAP, 0, 0),
                row(0x40, row_kind::STOP, 0, 0),
                row(0x50, row_kind::GAP, 0, 0),
                row(0x100, row_kind::RSP, 1, 0),
                row(0x102, row_kind::UNSUPPORTED, 0, 0),
                row(0x110, row_kind::SIGNAL, 0, 0),
                row(0x120, row_kind::GAP, 0, 0),
            ]
        );
        // The padding belongs to the row before it.
        assert_eq!(t.lookup(0x1024).map(|r| r.kind), Some(row_kind::RSP));
        assert_eq!(t.stats.unsupported.get("CFA register 10"), Some(&1));
        assert_eq!(t.stats.rows_by_kind[row_kind::GAP as usize], 3);
    }

    #[test]
    fn what_rows_cannot_express_is_unsupported() {
        let bytes = eh_frame(vec![
            // Return address in a register (glibc's __vfork).
            (
                false,
                fde(0x1000, 0x10, &[(0, I::Register(RA_W, gimli::Register(1)))]),
            ),
            // rbp saved in another register.
            (
                false,
                fde(0x1010, 0x10, &[(0, I::Register(RBP, gimli::Register(3)))]),
            ),
            // A CFA offset not a multiple of 8.
            (false, fde(0x1020, 0x10, &[(0, I::CfaOffset(12))])),
            // A dereferencing CFA expression (GCC's realigned stacks).
            (
                false,
                fde(
                    0x1030,
                    0x10,
                    &[(0, I::CfaExpression(Expression::raw(vec![0x76, 0x78, 0x06])))],
                ),
            ),
        ]);
        let t = table(&bytes, &|_, _| None);
        let kinds: Vec<u8> = t.rows.iter().map(|r| r.kind).collect();
        // Neighbours merge: one UNSUPPORTED row for all four, then the end.
        assert_eq!(kinds, vec![row_kind::UNSUPPORTED, row_kind::GAP]);
        assert_eq!(t.stats.unsupported.values().sum::<u64>(), 4);
        assert_eq!(t.stats.bytes_by_kind[row_kind::UNSUPPORTED as usize], 0x40);
    }

    #[test]
    fn debug_frame_fills_what_eh_frame_leaves_uncovered() {
        let eh = eh_frame(vec![(false, fde(0x1000, 0x20, &[]))]);
        let mut t = FrameTable::default();
        let c = t.add_cie(cie(false));
        t.add_fde(c, fde(0x1000, 0x20, &[(0, I::CfaOffset(48))])); // covered: ignored
        t.add_fde(c, fde(0x1040, 0x20, &[(1, I::CfaOffset(16))]));
        let mut w = gimli::write::DebugFrame(EndianVec::new(LittleEndian));
        t.write_debug_frame(&mut w).unwrap();
        let df = w.0.into_vec();
        let cfi = Cfi {
            eh_frame: Some((0x10000, &eh)),
            eh_frame_hdr: None,
            text: None,
            got: None,
            debug_frame: Some(&df),
        };
        let t = compile_cfi(&cfi, |_, _| None).unwrap();
        assert_eq!(
            t.rows,
            vec![
                row(0, row_kind::RSP, 1, 0),
                row(0x20, row_kind::GAP, 0, 0),
                row(0x40, row_kind::RSP, 1, 0),
                row(0x41, row_kind::RSP, 2, 0),
                row(0x60, row_kind::GAP, 0, 0),
            ]
        );
        assert_eq!(t.stats.debug_frame_fdes, 2);
    }

    #[test]
    fn no_cfi_is_an_error_and_padding_is_recognised() {
        let cfi = Cfi {
            eh_frame: None,
            eh_frame_hdr: None,
            text: None,
            got: None,
            debug_frame: None,
        };
        assert_eq!(compile_cfi(&cfi, |_, _| None), Err(CompileError::NoCfi));
        assert!(is_padding(Some(&[0x90, 0x90, 0xcc])));
        assert!(is_padding(Some(&[
            0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0
        ])));
        assert!(is_padding(None));
        assert!(!is_padding(Some(&[0x90, 0xc3])), "a ret is code");
        assert!(plt_expression(&[0x77, 8]).is_none());
    }

    /// Every CFI row of a real file, looked up in its table as the kernel would, gives what
    /// that row says (addresses two FDEs claim aside).
    fn agrees_with_gimli(path: &std::path::Path) -> Table {
        let data = std::fs::read(path).unwrap();
        let t = compile(&data[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = object::File::parse(&data[..]).unwrap();
        let eh = file.section_by_name(".eh_frame").unwrap();
        let mut bases = BaseAddresses::default().set_eh_frame(eh.address());
        if let Some(s) = file.section_by_name(".text") {
            bases = bases.set_text(s.address());
        }
        if let Some(s) = file.section_by_name(".got") {
            bases = bases.set_got(s.address());
        }
        let mut s = EhFrame::new(eh.data().unwrap(), LittleEndian);
        s.set_address_size(8);
        let mut ranges = Vec::new();
        let mut rows = Vec::new();
        let mut ctx = Box::new(UnwindContext::new());
        let mut entries = s.entries(&bases);
        let mut scratch = BTreeMap::new();
        while let Ok(Some(e)) = entries.next() {
            let CieOrFde::Fde(p) = e else { continue };
            let Ok(f) = p.parse(EhFrame::cie_from_offset) else {
                continue;
            };
            ranges.push((f.initial_address(), f.end_address()));
            if f.is_signal_trampoline() {
                rows.push((f.initial_address(), only(row_kind::SIGNAL)));
                continue;
            }
            let mut tbl = f.rows(&s, &bases, &mut ctx).unwrap();
            while let Ok(Some(r)) = tbl.next_row() {
                if r.start_address() < r.end_address() {
                    rows.push((r.start_address(), classify(r, &s, &mut scratch)));
                }
            }
        }
        ranges.sort_unstable();
        let overlapped = |a: u64| ranges.iter().filter(|r| r.0 <= a && a < r.1).count() > 1;
        let mut checked = 0;
        for (addr, want) in rows {
            if overlapped(addr) {
                continue;
            }
            let got = t
                .lookup(addr)
                .unwrap_or_else(|| panic!("{addr:#x}: no row"));
            assert_eq!(
                (got.kind, got.cfa_off, got.rbp),
                (want.kind, want.cfa_off, want.rbp),
                "{}: {addr:#x}",
                path.display()
            );
            checked += 1;
        }
        assert!(checked > 100, "{}: only {checked} rows", path.display());
        t
    }

    #[test]
    fn real_files_agree_with_their_cfi() {
        // The C library this test runs with, and the test binary itself (Rust).
        let libc = crate::host::procfs::maps(std::process::id())
            .into_iter()
            .find(|m| {
                m.exec
                    && m.path
                        .rsplit('/')
                        .next()
                        .is_some_and(|n| n.starts_with("libc.so"))
            })
            .map(|m| std::path::PathBuf::from(m.path))
            .expect("this test links the C library");
        let t = agrees_with_gimli(&libc);
        // Almost all of libc's code is walkable (measured: 0.02% is not).
        let unsupported = t.stats.bytes_by_kind[row_kind::UNSUPPORTED as usize];
        let total: u64 = t.stats.bytes_by_kind.iter().sum();
        assert!(unsupported * 100 < total, "{:?}", t.stats);
        assert!(
            t.stats.rows_by_kind[row_kind::STOP as usize] > 0,
            "_start/clone end stacks"
        );
        let info = elf_info(&std::fs::read(&libc).unwrap()[..]).unwrap();
        assert!(
            info.build_id.is_some(),
            "distribution libraries carry a build id"
        );
        assert!(!info.loads.is_empty());
        // The dynamic loader: hand-written assembly among C.
        let ld = crate::host::procfs::maps(std::process::id())
            .into_iter()
            .find(|m| m.exec && m.path.contains("ld-linux"))
            .map(|m| std::path::PathBuf::from(m.path))
            .expect("a dynamically linked test binary");
        agrees_with_gimli(&ld);
    }

    #[test]
    fn not_elf_and_not_x86() {
        assert!(matches!(
            compile(&b"hello"[..]),
            Err(CompileError::NotElf(_))
        ));
    }
}
