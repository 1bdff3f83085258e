//! Go HTTP clients: finds `net/http.(*Transport).dialConn` in a traced Go binary and attaches
//! the kernel's `go_dial_conn` uprobe there, for that process only, so every socket an HTTP
//! dial makes carries its `*http.Transport` (sockleak-ebpf/src/golang.rs). Counting Transports
//! is what tells "a Transport per request" from "response bodies not closed". What could not
//! be probed (stripped binary, uprobes off or refused) is kept for the diagnosis to say.

use std::{fs::File, os::unix::fs::MetadataExt, path::Path};

use hashbrown::HashMap;
use object::{
    Endianness, ReadCache, ReadRef,
    elf::{FileHeader64, SHT_SYMTAB},
    read::elf::{FileHeader, SectionHeader, Sym},
};

use crate::{kernel::bpf::Tracer, symbols::gopclntab::Pclntab};

/// The function whose receiver is the Transport a connection is dialed for.
pub const DIAL_CONN: &str = "net/http.(*Transport).dialConn";
/// The kernel program attached there.
const PROGRAM: &str = "go_dial_conn";

/// What a binary holds, as far as this module cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binary {
    /// Built by the Go toolchain.
    pub go: bool,
    /// net/http's Transport is linked in (its dial function exists, named or not).
    pub http: bool,
    /// File offset of dialConn's first instruction.
    pub dial_conn: Option<u64>,
    /// No ELF symbol table (`-ldflags=-s`): names come from Go's own table.
    pub stripped: bool,
}

/// How well sockleak sees a Go HTTP client's Transports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The uprobe is attached: its sockets carry their Transport.
    Attached,
    /// Not attached; why, in words for the report ("could not count Transports: ...").
    Unavailable(String),
}

/// Reads a 64-bit ELF file (any other file is "not Go").
pub fn inspect<'d, R: ReadRef<'d>>(data: R) -> Binary {
    inspect_elf(data).unwrap_or_default()
}

fn inspect_elf<'d, R: ReadRef<'d>>(data: R) -> Option<Binary> {
    let header = FileHeader64::<Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;
    let named = |n: &[u8]| sections.section_by_name(endian, n).map(|(_, s)| s);
    let pclntab = named(b".gopclntab");
    let go = pclntab.is_some()
        || named(b".go.buildinfo").is_some()
        || named(b".note.go.buildid").is_some();
    if !go {
        return Some(Binary::default());
    }
    let mut out = Binary {
        go,
        ..Binary::default()
    };
    let symbols = sections.symbols(endian, data, SHT_SYMTAB).ok()?;
    out.stripped = symbols.is_empty();
    let strings = symbols.strings();
    let mut entry = symbols
        .symbols()
        .iter()
        .find(|s| s.name(endian, strings) == Ok(DIAL_CONN.as_bytes()))
        .map(|s| s.st_value(endian));
    if entry.is_none()
        && let Some(tab) = pclntab
        && let Ok(bytes) = tab.data(endian, data)
    {
        // Stripped: the runtime's own function table still names it.
        entry = Pclntab::parse(bytes).and_then(|t| t.find(DIAL_CONN));
    }
    if let Some(addr) = entry {
        out.http = true;
        // The file offset of a virtual address, through the section that holds it.
        out.dial_conn = sections.iter().find_map(|s| {
            let start = s.sh_addr(endian);
            let size = s.sh_size(endian);
            (addr >= start && addr < start + size && s.sh_offset(endian) != 0)
                .then(|| addr - start + s.sh_offset(endian))
        });
    }
    Some(out)
}

/// Reads only the parts of the file it needs (headers, the symbol table of Go binaries).
pub fn inspect_file(path: &Path) -> std::io::Result<Binary> {
    let cache = ReadCache::new(File::open(path)?);
    Ok(inspect(&cache))
}

/// The uprobes sockleak attached, per process, and what it found per binary.
pub struct GoProbes {
    enabled: bool,
    /// (device, inode) of an executable -> what it holds.
    binaries: HashMap<(u64, u64), Binary>,
    links: HashMap<u32, aya::programs::uprobe::UProbeLink>,
}

impl GoProbes {
    pub fn new(enabled: bool) -> GoProbes {
        GoProbes {
            enabled,
            binaries: HashMap::new(),
            links: HashMap::new(),
        }
    }

    /// Looks at a process that became traced or exec'd; attaches the uprobe to a Go HTTP
    /// client. None: not a Go HTTP client (or gone).
    pub fn check(&mut self, tracer: &mut Tracer, pid: u32) -> Option<Probe> {
        // After an exec the old link points at the old binary.
        self.forget(pid);
        let exe = format!("/proc/{pid}/exe");
        let md = std::fs::metadata(&exe).ok()?;
        let key = (md.dev(), md.ino());
        let bin = match self.binaries.get(&key) {
            Some(b) => b.clone(),
            None => {
                let b = inspect_file(Path::new(&exe)).ok()?;
                self.binaries.insert(key, b.clone());
                b
            }
        };
        if !bin.go || !bin.http {
            return None;
        }
        if !self.enabled {
            return Some(Probe::Unavailable(
                "uprobes are turned off (--no-uprobes)".into(),
            ));
        }
        let Some(offset) = bin.dial_conn else {
            return Some(Probe::Unavailable(format!(
                "{DIAL_CONN} has no address in the binary"
            )));
        };
        match tracer.attach_uprobe(PROGRAM, pid, Path::new(&exe), offset) {
            Ok(link) => {
                self.links.insert(pid, link);
                Some(Probe::Attached)
            }
            Err(e) => Some(Probe::Unavailable(format!(
                "the uprobe on {DIAL_CONN} could not be attached ({e:#})"
            ))),
        }
    }

    /// Detaches a process's uprobe (it exited or exec'd).
    pub fn forget(&mut self, pid: u32) {
        self.links.remove(&pid);
    }

    /// Processes with an attached uprobe.
    pub fn attached(&self) -> usize {
        self.links.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_binary_is_not_go() {
        let me = std::env::current_exe().unwrap();
        assert_eq!(inspect_file(&me).unwrap(), Binary::default());
    }

    #[test]
    fn garbage_is_not_go() {
        assert_eq!(inspect(&b"not an elf file"[..]), Binary::default());
        assert_eq!(inspect(&[][..]), Binary::default());
    }
}
