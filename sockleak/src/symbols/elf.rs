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
