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
