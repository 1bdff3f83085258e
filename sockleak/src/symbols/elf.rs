//! What `unwind` and `gopclntab` both read from a 64-bit ELF file: its loadable segments.

use object::{
    Endianness, ReadRef,
    elf::{FileHeader64, PT_LOAD},
    read::elf::{FileHeader, ProgramHeader},
};

/// (file offset, virtual address, file size) of each PT_LOAD segment: how an address in a
/// mapping (file offset) translates to the ELF's own addresses.
pub fn loads<'d, R: ReadRef<'d>>(
    header: &FileHeader64<Endianness>,
    endian: Endianness,
    data: R,
) -> Option<Vec<(u64, u64, u64)>> {
    Some(
        header
            .program_headers(endian, data)
            .ok()?
            .iter()
            .filter(|p| p.p_type(endian) == PT_LOAD)
            .map(|p| (p.p_offset(endian), p.p_vaddr(endian), p.p_filesz(endian)))
            .collect(),
    )
}

/// File offsets of the named functions in an ELF file, from its symbol table and its dynamic
/// one (a stripped shared library keeps the exported names only there).
pub fn function_offsets<'d, R: ReadRef<'d>>(
    data: R,
    names: &[&'static str],
) -> Option<hashbrown::HashMap<&'static str, u64>> {
    use object::{
        elf::{SHT_DYNSYM, SHT_SYMTAB, STT_FUNC},
        read::elf::{SectionHeader, Sym},
    };
    let header = FileHeader64::<Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;
    let mut found = hashbrown::HashMap::new();
    for kind in [SHT_DYNSYM, SHT_SYMTAB] {
        let Ok(table) = sections.symbols(endian, data, kind) else {
            continue;
        };
        let strings = table.strings();
        for s in table.symbols() {
            if s.st_type() != STT_FUNC || s.st_value(endian) == 0 {
                continue;
            }
            if let Ok(name) = s.name(endian, strings)
                && let Some(n) = names.iter().find(|n| n.as_bytes() == name)
            {
                found.entry(*n).or_insert(s.st_value(endian));
            }
        }
        if found.len() == names.len() {
            break;
        }
    }
    // Virtual address -> file offset, through the section that holds it.
    Some(
        found
            .into_iter()
            .filter_map(|(n, addr)| {
                let off = sections.iter().find_map(|s| {
                    let (start, size) = (s.sh_addr(endian), s.sh_size(endian));
                    (addr >= start
                        && addr < start + size
                        && s.sh_type(endian) != object::elf::SHT_NOBITS)
                        .then(|| addr - start + s.sh_offset(endian))
                })?;
                Some((n, off))
            })
            .collect(),
    )
}

/// What the runtime probes read from an ELF file: some symbols, the file's type and its
/// loadable segments (to read initialized data and code from the file, and to find the load
/// bias in a process). Read lazily: a libjvm or a libpython with DWARF is tens of MiB.
#[derive(Debug)]
pub struct ElfInfo {
    file: std::fs::File,
    /// `ET_EXEC` (2) or `ET_DYN` (3).
    pub kind: u16,
    /// (file offset, virtual address, file size) of each PT_LOAD segment.
    pub loads: Vec<(u64, u64, u64)>,
    /// The wanted symbols found, by name: (value, size). `.dynsym` wins over `.symtab`.
    pub symbols: std::collections::HashMap<String, (u64, u64)>,
}

impl ElfInfo {
    /// Reads the symbols named in `wanted` (and the segments) of a 64-bit ELF file.
    pub fn read(path: &std::path::Path, wanted: &[&str]) -> Option<ElfInfo> {
        use object::{
            ReadCache,
            elf::{SHT_DYNSYM, SHT_SYMTAB},
            read::elf::Sym,
        };
        let file = std::fs::File::open(path).ok()?;
        let cache = ReadCache::new(file.try_clone().ok()?);
        let data = &cache;
        let header = FileHeader64::<Endianness>::parse(data).ok()?;
        let endian = header.endian().ok()?;
        let sections = header.sections(endian, data).ok()?;
        let mut symbols = std::collections::HashMap::new();
        for kind in [SHT_SYMTAB, SHT_DYNSYM] {
            let Ok(table) = sections.symbols(endian, data, kind) else {
                continue;
            };
            for s in table.iter() {
                if s.st_shndx(endian) == 0 {
                    continue;
                }
                let Ok(name) = s.name(endian, table.strings()) else {
                    continue;
                };
                let Ok(name) = std::str::from_utf8(name) else {
                    continue;
                };
                if wanted.contains(&name) {
                    symbols.insert(name.to_string(), (s.st_value(endian), s.st_size(endian)));
                }
            }
        }
        let loads = loads(header, endian, data)?;
        Some(ElfInfo {
            kind: header.e_type(endian),
            loads,
            symbols,
            file,
        })
    }

    /// A symbol's value (its address in the file's own address space).
    pub fn sym(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).map(|s| s.0)
    }

    /// `n` bytes of initialized data or code at `vaddr`, from the file.
    pub fn read_vaddr(&self, vaddr: u64, n: usize) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let (off, va, size) = self
            .loads
            .iter()
            .find(|(_, va, size)| *va <= vaddr && vaddr + n as u64 <= va + size)?;
        let _ = size;
        let mut buf = vec![0; n];
        self.file.read_exact_at(&mut buf, off + (vaddr - va)).ok()?;
        Some(buf)
    }

    /// The load bias in a process: where the file's address 0 lies, from the mapping of its
    /// first segment (`path` as the process's maps name it). 0 for a non-PIE executable.
    pub fn bias(&self, maps: &[crate::host::procfs::Mapping], path: &str) -> Option<u64> {
        let (off, va, _) = self.loads.iter().min_by_key(|l| l.1)?;
        let m = maps
            .iter()
            .find(|m| m.path == path && m.offset == off & !0xfff)?;
        m.start.checked_sub(va & !0xfff)
    }
}

/// The file behind a process's mapping, as the process sees it (any mount namespace).
pub fn mapped_file(pid: u32, m: &crate::host::procfs::Mapping) -> std::path::PathBuf {
    crate::host::procfs::proc_path(pid, &format!("map_files/{:x}-{:x}", m.start, m.end))
}
