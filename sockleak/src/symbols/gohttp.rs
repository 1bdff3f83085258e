//! Go HTTP clients: finds net/http's functions in a traced Go binary (ELF symbols, or
//! `.gopclntab` when stripped) and attaches the kernel's uprobes there, for that process only
//! (sockleak-ebpf/src/golang.rs):
//!
//! - `(*Transport).dialConn`: every socket an HTTP dial makes carries its `*http.Transport`.
//!   Counting Transports is what tells "a Transport per request" from "response bodies not
//!   closed".
//! - `(*Transport).queueForDial`, `(*wantConn).tryDeliver`, `(*persistConn).roundTrip`,
//!   `(*Transport).tryPutIdleConn`: the socket's origin, the code that sent the request (Go
//!   dials on a goroutine of its own), and whether the connection went back to its pool. They
//!   read the binary's structs: its layout (`golayout`) is handed to the kernel first.
//!
//! What could not be probed (stripped of everything, uprobes off or refused, a Go version
//! whose layout is unknown) is kept for the report to say.

use std::{fs::File, os::unix::fs::MetadataExt, path::Path};

use hashbrown::HashMap;
use object::{
    Endianness, ReadCache, ReadRef,
    elf::{FileHeader64, SHT_SYMTAB},
    read::elf::{FileHeader, SectionHeader, Sym},
};
use sockleak_common::{origin::GoLayout, target::flag};

use crate::{
    host::procfs,
    kernel::bpf::Tracer,
    symbols::{
        golayout::{self, Layout},
        gopclntab::Pclntab,
    },
};

/// The function whose receiver is the Transport a connection is dialed for.
pub const DIAL_CONN: &str = "net/http.(*Transport).dialConn";
pub const QUEUE_FOR_DIAL: &str = "net/http.(*Transport).queueForDial";
pub const TRY_DELIVER: &str = "net/http.(*wantConn).tryDeliver";
pub const ROUND_TRIP: &str = "net/http.(*persistConn).roundTrip";
pub const PUT_IDLE: &str = "net/http.(*Transport).tryPutIdleConn";

/// (function, kernel program), in attach order: what the origin probes read is in place
/// before the probes that write it.
const ORIGIN_PROBES: [(&str, &str); 3] = [
    (ROUND_TRIP, "go_round_trip"),
    (PUT_IDLE, "go_put_idle"),
    (QUEUE_FOR_DIAL, "go_queue_for_dial"),
];

/// What a binary holds, as far as this module cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binary {
    /// Built by the Go toolchain.
    pub go: bool,
    /// net/http's Transport is linked in (its dial function exists, named or not).
    pub http: bool,
    /// File offsets of the probed functions' first instructions.
    pub entries: HashMap<&'static str, u64>,
    /// No ELF symbol table (`-ldflags=-s`): names come from Go's own table.
    pub stripped: bool,
    /// Go version, PIE, and the layout the origin probes read (or why there is none).
    pub facts: Option<golayout::GoBinary>,
}

impl Binary {
    /// File offset of dialConn's first instruction.
    pub fn dial_conn(&self) -> Option<u64> {
        self.entries.get(DIAL_CONN).copied()
    }
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
    // A PIE build names it .data.rel.ro.gopclntab.
    let pclntab = named(b".gopclntab").or_else(|| named(b".data.rel.ro.gopclntab"));
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
    let wanted = [DIAL_CONN, QUEUE_FOR_DIAL, TRY_DELIVER, ROUND_TRIP, PUT_IDLE];
    let mut addrs: HashMap<&'static str, u64> = HashMap::new();
    for s in symbols.symbols() {
        if let Ok(name) = s.name(endian, strings)
            && let Some(w) = wanted.iter().find(|w| w.as_bytes() == name)
        {
            addrs.insert(*w, s.st_value(endian));
        }
    }
    if addrs.len() < wanted.len()
        && let Some(tab) = pclntab
        && let Ok(bytes) = tab.data(endian, data)
        && let Some(t) = Pclntab::parse(bytes)
    {
        // Stripped: the runtime's own function table still names them.
        for w in wanted {
            if !addrs.contains_key(w)
                && let Some(a) = t.find(w)
            {
                addrs.insert(w, a);
            }
        }
    }
    out.http = addrs.contains_key(DIAL_CONN);
    // The file offset of a virtual address, through the section that holds it.
    for (name, addr) in addrs {
        let off = sections.iter().find_map(|s| {
            let start = s.sh_addr(endian);
            let size = s.sh_size(endian);
            (addr >= start && addr < start + size && s.sh_offset(endian) != 0)
                .then(|| addr - start + s.sh_offset(endian))
        });
        if let Some(off) = off {
            out.entries.insert(name, off);
        }
    }
    if out.http {
        out.facts = golayout::inspect(data);
    }
    Some(out)
}

/// Reads only the parts of the file it needs (headers, the symbol table of Go binaries, DWARF
/// when there is some).
pub fn inspect_file(path: &Path) -> std::io::Result<Binary> {
    let cache = ReadCache::new(File::open(path)?);
    Ok(inspect(&cache))
}

/// What one check of a process found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Its Transports are counted (or why not).
    pub probe: Probe,
    /// Its connections' origins are joined (or why not).
    pub origins: Result<(), String>,
    /// `target::flag` bits for the kernel.
    pub flags: u8,
}

/// The uprobes sockleak attached, per process, and what it found per binary.
pub struct GoProbes {
    enabled: bool,
    /// (device, inode) of an executable -> what it holds.
    binaries: HashMap<(u64, u64), Binary>,
    links: HashMap<u32, Vec<aya::programs::uprobe::UProbeLink>>,
}

impl GoProbes {
    pub fn new(enabled: bool) -> GoProbes {
        GoProbes {
            enabled,
            binaries: HashMap::new(),
            links: HashMap::new(),
        }
    }

    /// Looks at a process that became traced or exec'd; attaches the uprobes to a Go HTTP
    /// client (origins only when `stacks`: they are stacks). None: not a Go HTTP client (or
    /// gone).
    pub fn check(&mut self, tracer: &mut Tracer, pid: u32, stacks: bool) -> Option<Check> {
        // After an exec the old links point at the old binary.
        self.forget(tracer, pid);
        let exe = format!("/proc/{pid}/exe");
        let md = std::fs::metadata(&exe).ok()?;
        let key = (md.dev(), md.ino());
        let bin = match self.binaries.get(&key) {
            Some(b) => b.clone(),
            None => {
                let t = std::time::Instant::now();
                let b = inspect_file(Path::new(&exe)).ok()?;
                if b.go {
                    log::debug!(
                        "pid {pid}: Go binary read in {} ms ({:?})",
                        t.elapsed().as_millis(),
                        b.facts
                            .as_ref()
                            .map(|f| (&f.version, f.layout.as_ref().map(|l| l.source)))
                    );
                }
                self.binaries.insert(key, b.clone());
                b
            }
        };
        if !bin.go || !bin.http {
            return None;
        }
        if !self.enabled {
            let off = "uprobes are turned off (--no-uprobes)".to_string();
            return Some(Check {
                probe: Probe::Unavailable(off.clone()),
                origins: Err(off),
                flags: 0,
            });
        }
        let exe = Path::new(&exe);
        let mut links = Vec::new();
        let mut flags = 0;
        let probe = match bin.dial_conn() {
            None => Probe::Unavailable(format!("{DIAL_CONN} has no address in the binary")),
            Some(offset) => match tracer.attach_uprobe("go_dial_conn", pid, exe, offset) {
                Ok(link) => {
                    links.push(link);
                    flags |= flag::GO_HTTP;
                    Probe::Attached
                }
                Err(e) => Probe::Unavailable(format!(
                    "the uprobe on {DIAL_CONN} could not be attached ({e:#})"
                )),
            },
        };
        // The end of a dial, whatever the layout: read off the goroutine alone.
        if flags & flag::GO_HTTP != 0
            && let Some(offset) = bin.entries.get(TRY_DELIVER)
            && let Ok(link) = tracer.attach_uprobe("go_try_deliver", pid, exe, *offset)
        {
            links.push(link);
            flags |= flag::GO_DELIVER;
        }
        let origins = if !stacks {
            Err("call sites are off (--no-stacks)".to_string())
        } else if flags & flag::GO_DELIVER == 0 {
            Err(match &probe {
                Probe::Unavailable(why) => why.clone(),
                Probe::Attached => format!("{TRY_DELIVER} could not be probed"),
            })
        } else {
            self.attach_origins(tracer, pid, exe, &bin, &mut links)
        };
        self.links.insert(pid, links);
        Some(Check {
            probe,
            origins,
            flags,
        })
    }

    fn attach_origins(
        &mut self,
        tracer: &mut Tracer,
        pid: u32,
        exe: &Path,
        bin: &Binary,
        links: &mut Vec<aya::programs::uprobe::UProbeLink>,
    ) -> Result<(), String> {
        let facts = bin
            .facts
            .as_ref()
            .ok_or_else(|| "the binary could not be read".to_string())?;
        let layout = facts.layout.clone()?;
        let bias = if facts.pie {
            load_bias(pid).ok_or_else(|| {
                "where the position-independent binary is loaded is not in /proc".to_string()
            })?
        } else {
            0
        };
        tracer
            .set_go_layout(pid, &kernel_layout(&layout, bias))
            .map_err(|e| format!("the kernel refused the binary's layout ({e:#})"))?;
        let mut attached = Vec::new();
        for (func, program) in ORIGIN_PROBES {
            let Some(offset) = bin.entries.get(func) else {
                tracer.remove_go_layout(pid);
                return Err(format!("{func} has no address in the binary"));
            };
            match tracer.attach_uprobe(program, pid, exe, *offset) {
                Ok(l) => attached.push(l),
                Err(e) => {
                    tracer.remove_go_layout(pid);
                    return Err(format!(
                        "the uprobe on {func} could not be attached ({e:#})"
                    ));
                }
            }
        }
        links.extend(attached);
        Ok(())
    }

    /// Detaches a process's uprobes (it exited or exec'd).
    pub fn forget(&mut self, tracer: &mut Tracer, pid: u32) {
        if self.links.remove(&pid).is_some() {
            tracer.remove_go_layout(pid);
        }
    }
}

/// The kernel's copy of a layout, type addresses moved by the load bias.
pub fn kernel_layout(l: &Layout, bias: u64) -> GoLayout {
    let moved = |a: u64| if a == 0 { 0 } else { a.wrapping_add(bias) };
    GoLayout {
        tcp_conn_type: moved(l.tcp_conn_type),
        tls_conn_type: moved(l.tls_conn_type),
        pc_transport: l.offsets.pc_transport,
        pc_conn: l.offsets.pc_conn,
        tls_conn: l.offsets.tls_conn,
        tcp_netfd: l.offsets.tcp_netfd,
        netfd_sysfd: l.offsets.netfd_sysfd,
        itab_type: l.offsets.itab_type,
    }
}

/// How far a position-independent executable was moved from its link-time addresses.
fn load_bias(pid: u32) -> Option<u64> {
    let exe = std::fs::read_link(procfs::proc_path(pid, "exe")).ok()?;
    let exe = exe.to_string_lossy();
    let maps = procfs::maps(pid);
    let loads = {
        let cache = ReadCache::new(File::open(procfs::proc_path(pid, "exe")).ok()?);
        let header = FileHeader64::<Endianness>::parse(&cache).ok()?;
        let endian = header.endian().ok()?;
        crate::symbols::elf::loads(header, endian, &cache)?
    };
    bias_of(&maps, &exe, &loads)
}

/// The bias from a mapping of the executable: the segment holding its file offset.
pub fn bias_of(maps: &[procfs::Mapping], exe: &str, loads: &[(u64, u64, u64)]) -> Option<u64> {
    maps.iter().filter(|m| m.path == exe).find_map(|m| {
        let (off, vaddr, _) = loads
            .iter()
            .find(|(o, _, size)| m.offset >= *o && m.offset < o + size.max(&1))?;
        Some(m.start.wrapping_sub(vaddr + (m.offset - off)))
    })
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

    #[test]
    fn pie_bias_from_the_mapping() {
        let m = |start, offset| procfs::Mapping {
            start,
            end: start + 0x1000,
            exec: false,
            offset,
            path: "/app".into(),
        };
        // Segments: file 0 at vaddr 0, file 0x1e4000 at vaddr 0x1e5000.
        let loads = [(0, 0, 0x1e3000), (0x1e4000, 0x1e5000, 0x2000)];
        let maps = [m(0x5555_0000_0000, 0), m(0x5555_001e_5000, 0x1e4000)];
        assert_eq!(bias_of(&maps, "/app", &loads), Some(0x5555_0000_0000));
        assert_eq!(bias_of(&maps[1..], "/app", &loads), Some(0x5555_0000_0000));
        assert_eq!(bias_of(&maps, "/other", &loads), None);
        let l = Layout {
            tcp_conn_type: 0x7bb900,
            tls_conn_type: 0,
            offsets: golayout::Offsets {
                pc_transport: 16,
                pc_conn: 80,
                tls_conn: 0,
                tcp_netfd: 0,
                netfd_sysfd: 16,
                itab_type: 8,
            },
            source: golayout::Source::Table,
        };
        let k = kernel_layout(&l, 0x55a1_e144_6000);
        assert_eq!(k.tcp_conn_type, 0x55a1_e1c0_1900, "measured at run time");
        assert_eq!(k.tls_conn_type, 0, "no TLS stays none");
        assert_eq!((k.pc_conn, k.netfd_sysfd), (80, 16));
    }
}
