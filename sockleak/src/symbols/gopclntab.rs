//! Go's own function table (`.gopclntab`), which the runtime needs and `-ldflags=-s` keeps:
//! function names and entry addresses of stripped Go binaries, where ELF symbols are gone.
//! Layouts of Go 1.16-1.17 (magic 0xfffffffa) and 1.18+ (0xfffffff0, 0xfffffff1); little-endian.

const GO116: u32 = 0xffff_fffa;
const GO118: u32 = 0xffff_fff0;
const GO120: u32 = 0xffff_fff1;

#[derive(Debug, Clone, Copy)]
pub struct Pclntab<'a> {
    data: &'a [u8],
    /// Entries are (u32 offset from text_start) pairs since Go 1.18, (uintptr, uintptr) before.
    go118: bool,
    ptr: usize,
    nfunc: usize,
    text_start: u64,
    funcnames: usize,
    pcln: usize,
    /// Go 1.18+: the compilation units' file lists, the file names, the pc-value tables.
    cutab: usize,
    filetab: usize,
    pctab: usize,
    /// Instruction size quantum (1 on x86).
    min_lc: u64,
}

fn uvarint(d: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in d.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn read_uint(d: &[u8], at: usize, size: usize) -> Option<u64> {
    let b = d.get(at..at.checked_add(size)?)?;
    Some(match size {
        4 => u64::from(u32::from_le_bytes(b.try_into().ok()?)),
        8 => u64::from_le_bytes(b.try_into().ok()?),
        _ => return None,
    })
}

impl<'a> Pclntab<'a> {
    /// Parses the section's bytes; None for an unknown layout.
    pub fn parse(data: &'a [u8]) -> Option<Pclntab<'a>> {
        let magic = read_uint(data, 0, 4)? as u32;
        let ptr = usize::from(*data.get(7)?);
        if ptr != 4 && ptr != 8 {
            return None;
        }
        let word = |i: usize| read_uint(data, 8 + i * ptr, ptr).map(|v| v as usize);
        let (go118, text_start, funcnames, pcln) = match magic {
            GO118 | GO120 => (true, word(2)? as u64, word(3)?, word(7)?),
            GO116 => (false, 0, word(2)?, word(6)?),
            _ => return None,
        };
        let (cutab, filetab, pctab) = if go118 {
            (word(4)?, word(5)?, word(6)?)
        } else {
            (0, 0, 0)
        };
        let t = Pclntab {
            data,
            go118,
            ptr,
            nfunc: word(0)?,
            text_start,
            funcnames,
            pcln,
            cutab,
            filetab,
            pctab,
            min_lc: u64::from(*data.get(6)?).max(1),
        };
        // The table must hold nfunc + 1 entries (the last one bounds the last function).
        t.entry(t.nfunc)?;
        Some(t)
    }

    pub fn len(&self) -> usize {
        self.nfunc
    }

    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    fn field(&self) -> usize {
        if self.go118 { 4 } else { self.ptr }
    }

    /// (entry address, offset of the function's `_func`) of functab entry `i`.
    fn entry(&self, i: usize) -> Option<(u64, usize)> {
        let f = self.field();
        let at = self.pcln.checked_add(i.checked_mul(2 * f)?)?;
        let entry = read_uint(self.data, at, f)?;
        let func = read_uint(self.data, at + f, f)? as usize;
        Some((
            if self.go118 {
                self.text_start + entry
            } else {
                entry
            },
            func,
        ))
    }

    /// Name of function `i`.
    pub fn name(&self, i: usize) -> Option<&'a str> {
        let (_, func) = self.entry(i)?;
        // `_func` starts with the entry (u32 or uintptr), then nameOff (int32).
        let at = self.pcln.checked_add(func)?.checked_add(self.field())?;
        let off = read_uint(self.data, at, 4)? as u32 as i32;
        let start = self.funcnames.checked_add(usize::try_from(off).ok()?)?;
        let rest = self.data.get(start..)?;
        let len = rest.iter().position(|b| *b == 0)?;
        std::str::from_utf8(&rest[..len]).ok()
    }

    /// Entry address of the function named `name`.
    pub fn find(&self, name: &str) -> Option<u64> {
        (0..self.nfunc).find_map(|i| (self.name(i)? == name).then(|| self.entry(i).map(|e| e.0))?)
    }

    /// Index of the function holding `addr` (entries ascend: the last one at or below it).
    fn index(&self, addr: u64) -> Option<usize> {
        let (first, _) = self.entry(0)?;
        let (end, _) = self.entry(self.nfunc)?;
        if addr < first || addr >= end {
            return None;
        }
        let (mut lo, mut hi) = (0, self.nfunc);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.entry(mid)?.0 <= addr {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// The value a pc-value table (at `off` in pctab) gives `addr` in a function starting at
    /// `entry` (the runtime's `pcvalue`: zigzag value deltas and pc deltas, from -1).
    fn pcvalue(&self, off: u32, entry: u64, addr: u64) -> Option<i64> {
        if off == 0 {
            return None;
        }
        let mut p = self.pctab.checked_add(off as usize)?;
        let (mut pc, mut val) = (entry, -1i64);
        let mut first = true;
        // A table ends with a zero value delta; bound the walk all the same.
        for _ in 0..1_000_000 {
            let (uv, n) = uvarint(self.data.get(p..)?)?;
            p += n;
            if uv == 0 && !first {
                return None;
            }
            first = false;
            let delta = ((uv >> 1) as i64) ^ -((uv & 1) as i64);
            let (pcd, n) = uvarint(self.data.get(p..)?)?;
            p += n;
            pc = pc.checked_add(pcd.checked_mul(self.min_lc)?)?;
            val += delta;
            if addr < pc {
                return Some(val);
            }
        }
        None
    }

    /// Source file and line of `addr` (Go 1.18+ tables), as tracebacks show them.
    pub fn line(&self, addr: u64) -> Option<(&'a str, u32)> {
        if !self.go118 {
            return None;
        }
        let i = self.index(addr)?;
        let (entry, func) = self.entry(i)?;
        // `_func`: entryOff u32, nameOff i32, args i32, deferreturn u32, pcsp u32,
        // pcfile u32, pcln u32, npcdata u32, cuOffset u32 (the same from 1.18 to 1.23).
        let f = self.pcln.checked_add(func)?;
        let field = |i: usize| read_uint(self.data, f + 4 * i, 4).map(|v| v as u32);
        let (pcfile, pcln, cu) = (field(5)?, field(6)?, field(8)?);
        let fileno = self.pcvalue(pcfile, entry, addr)?;
        let line = self.pcvalue(pcln, entry, addr)?;
        let at = self
            .cutab
            .checked_add(4 * (cu as usize).checked_add(usize::try_from(fileno).ok()?)?)?;
        let name_off = read_uint(self.data, at, 4)? as usize;
        let start = self.filetab.checked_add(name_off)?;
        let rest = self.data.get(start..)?;
        let len = rest.iter().position(|b| *b == 0)?;
        let file = std::str::from_utf8(&rest[..len]).ok()?;
        Some((file, u32::try_from(line).ok()?))
    }

    /// The function holding `addr` (a link-time virtual address): (entry, name).
    pub fn lookup(&self, addr: u64) -> Option<(u64, &'a str)> {
        let i = self.index(addr)?;
        Some((self.entry(i)?.0, self.name(i)?))
    }
}

/// A Go binary's function table, read from its file, with what maps file offsets to the
/// link-time addresses the table uses.
pub struct GoTable {
    data: Vec<u8>,
    /// (file offset, virtual address, size) of each loaded segment.
    loads: Vec<(u64, u64, u64)>,
}

impl GoTable {
    /// Reads `.gopclntab` (`.data.rel.ro.gopclntab` in a PIE build) and the program headers
    /// of a 64-bit ELF file; None when it has no readable Go table.
    pub fn read(path: &std::path::Path) -> Option<GoTable> {
        use object::{
            Endianness, ReadCache,
            elf::FileHeader64,
            read::elf::{FileHeader, SectionHeader},
        };
        let cache = ReadCache::new(std::fs::File::open(path).ok()?);
        let data = &cache;
        let header = FileHeader64::<Endianness>::parse(data).ok()?;
        let endian = header.endian().ok()?;
        let sections = header.sections(endian, data).ok()?;
        let (_, tab) = sections
            .section_by_name(endian, b".gopclntab")
            .or_else(|| sections.section_by_name(endian, b".data.rel.ro.gopclntab"))?;
        let bytes = tab.data(endian, data).ok()?.to_vec();
        Pclntab::parse(&bytes)?;
        let loads = crate::symbols::elf::loads(header, endian, data)?;
        Some(GoTable { data: bytes, loads })
    }

    pub fn table(&self) -> Option<Pclntab<'_>> {
        Pclntab::parse(&self.data)
    }

    /// The function at a file offset of the binary: (entry address, name).
    pub fn at_file_offset(&self, off: u64) -> Option<(u64, &str)> {
        self.table()?.lookup(self.vaddr(off)?)
    }

    /// Source file and line at a file offset of the binary.
    pub fn line_at_file_offset(&self, off: u64) -> Option<(&str, u32)> {
        self.table()?.line(self.vaddr(off)?)
    }

    fn vaddr(&self, off: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|(o, _, size)| off >= *o && off < o + size)
            .map(|(o, v, _)| off - o + v)
    }

    /// The file offset of a link-time address.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|(_, v, size)| vaddr >= *v && vaddr < v + size)
            .map(|(o, v, _)| vaddr - v + o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Go 1.18-layout table with two functions, `main.a` at text+0x10 and `main.bb` at
    /// text+0x40, ending at text+0x80.
    fn table() -> Vec<u8> {
        let text = 0x40_1000u64;
        let mut d = vec![0u8; 8 + 8 * 8];
        d[..4].copy_from_slice(&GO118.to_le_bytes());
        d[7] = 8;
        let funcnames = d.len();
        d.extend(b"main.a\0main.bb\0");
        let pcln = d.len();
        let put = |d: &mut Vec<u8>, i: usize, v: u64| {
            d[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes())
        };
        put(&mut d, 0, 2);
        put(&mut d, 2, text);
        put(&mut d, 3, funcnames as u64);
        put(&mut d, 7, pcln as u64);
        // functab: 3 entries of (entryoff, funcoff), then two _funcs (entryoff, nameoff).
        let funcs = 3 * 8;
        for (entry, func) in [(0x10u32, funcs), (0x40, funcs + 8), (0x80, 0)] {
            d.extend(entry.to_le_bytes());
            d.extend((func as u32).to_le_bytes());
        }
        for (entry, name) in [(0x10u32, 0u32), (0x40, 7)] {
            d.extend(entry.to_le_bytes());
            d.extend(name.to_le_bytes());
        }
        d
    }

    #[test]
    fn names_and_lookups() {
        let d = table();
        let t = Pclntab::parse(&d).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.name(0), Some("main.a"));
        assert_eq!(t.name(1), Some("main.bb"));
        assert_eq!(t.find("main.bb"), Some(0x40_1040));
        assert_eq!(t.find("main.c"), None);
        assert_eq!(t.lookup(0x40_1010), Some((0x40_1010, "main.a")));
        assert_eq!(t.lookup(0x40_103f), Some((0x40_1010, "main.a")));
        assert_eq!(t.lookup(0x40_107f), Some((0x40_1040, "main.bb")));
        assert_eq!(t.lookup(0x40_1080), None);
        assert_eq!(t.lookup(0x40_1000), None);
    }

    #[test]
    fn truncated_or_foreign_tables_are_refused() {
        let d = table();
        for cut in [0, 4, 8, 40, d.len() - 20] {
            assert!(Pclntab::parse(&d[..cut]).is_none(), "cut at {cut}");
        }
        let mut bad = d.clone();
        bad[0] = 0;
        assert!(Pclntab::parse(&bad).is_none());
        // A name offset pointing outside the table is no name, not a panic.
        let mut far = d.clone();
        let n = far.len();
        far[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        let t = Pclntab::parse(&far).unwrap();
        assert_eq!(t.name(1), None);
    }

    /// One function, `main.f` at text+0x10..text+0x80 in /src/main.go: line 10 for its first
    /// 16 bytes, line 12 after.
    fn table_with_lines() -> Vec<u8> {
        let text = 0x40_1000u64;
        let mut d = vec![0u8; 8 + 8 * 8];
        d[..4].copy_from_slice(&GO120.to_le_bytes());
        d[6] = 1;
        d[7] = 8;
        let put = |d: &mut Vec<u8>, i: usize, v: u64| {
            d[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes())
        };
        let funcnames = d.len();
        d.extend(b"main.f\0");
        let cutab = d.len();
        d.extend(0u32.to_le_bytes());
        let filetab = d.len();
        d.extend(b"/src/main.go\0");
        let pctab = d.len();
        // Offset 0 means "no table": a pad byte first. pcln: 10 for 16 bytes, then 12 for
        // 96; pcfile: file 0 for 112 bytes. Zigzag value deltas from -1, then pc deltas.
        d.push(0);
        let pcln = (d.len() - pctab) as u32;
        d.extend([22, 16, 4, 96, 0]);
        let pcfile = (d.len() - pctab) as u32;
        d.extend([2, 112, 0]);
        let funcs = d.len();
        for (i, v) in [
            1u64,
            1,
            text,
            funcnames as u64,
            cutab as u64,
            filetab as u64,
            pctab as u64,
            funcs as u64,
        ]
        .into_iter()
        .enumerate()
        {
            put(&mut d, i, v);
        }
        // functab: 2 entries of (entryoff, funcoff), then the _func.
        let func = 2 * 8u32;
        for (entry, f) in [(0x10u32, func), (0x80, 0)] {
            d.extend(entry.to_le_bytes());
            d.extend(f.to_le_bytes());
        }
        for field in [0x10u32, 0, 0, 0, 0, pcfile, pcln, 0, 0, 0] {
            d.extend(field.to_le_bytes());
        }
        d
    }

    #[test]
    fn files_and_lines_of_a_stripped_binary() {
        let d = table_with_lines();
        let t = Pclntab::parse(&d).unwrap();
        assert_eq!(t.lookup(0x40_1010), Some((0x40_1010, "main.f")));
        assert_eq!(t.line(0x40_1010), Some(("/src/main.go", 10)));
        assert_eq!(t.line(0x40_101f), Some(("/src/main.go", 10)));
        assert_eq!(t.line(0x40_1020), Some(("/src/main.go", 12)));
        assert_eq!(t.line(0x40_107f), Some(("/src/main.go", 12)));
        assert_eq!(t.line(0x40_1080), None, "past the last function");
        // A corrupt table is no line, not a panic.
        for cut in (70..d.len()).step_by(3) {
            if let Some(t) = Pclntab::parse(&d[..cut]) {
                let _ = t.line(0x40_1020);
            }
        }
        // _funcs cut short of their line tables: names only.
        let old = table();
        assert_eq!(Pclntab::parse(&old).unwrap().line(0x40_1010), None);
    }
}
