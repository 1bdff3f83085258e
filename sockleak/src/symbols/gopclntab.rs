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
        let t = Pclntab {
            data,
            go118,
            ptr,
            nfunc: word(0)?,
            text_start,
            funcnames,
            pcln,
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

    /// The function holding `addr` (a link-time virtual address): (entry, name).
    pub fn lookup(&self, addr: u64) -> Option<(u64, &'a str)> {
        let (first, _) = self.entry(0)?;
        let (end, _) = self.entry(self.nfunc)?;
        if addr < first || addr >= end {
            return None;
        }
        // Entries ascend: the last one at or below addr.
        let (mut lo, mut hi) = (0, self.nfunc);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.entry(mid)?.0 <= addr {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some((self.entry(lo)?.0, self.name(lo)?))
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
    /// Reads `.gopclntab` and the program headers of a 64-bit ELF file; None when it has no
    /// readable Go table.
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
        let (_, tab) = sections.section_by_name(endian, b".gopclntab")?;
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
        let vaddr = self
            .loads
            .iter()
            .find(|(o, _, size)| off >= *o && off < o + size)
            .map(|(o, v, _)| off - o + v)?;
        self.table()?.lookup(vaddr)
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
}
