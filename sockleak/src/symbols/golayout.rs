//! What the Go origin probes (sockleak-ebpf/src/golang.rs) need to know about one Go binary:
//! its Go version (`.go.buildinfo`, kept by `-ldflags=-s -w`), the struct offsets on the way
//! from a `*persistConn` to its socket (from DWARF when present, else a table per Go version),
//! and the type descriptors of `*net.TCPConn` and `*crypto/tls.Conn` (found through the
//! `.itablink` section, which stripping keeps). Pure over the file's bytes; no process is read.

use std::{borrow::Cow, io::Read};

use object::{
    Endianness, ReadRef,
    elf::{ET_DYN, FileHeader64, SHF_COMPRESSED},
    read::elf::{FileHeader, SectionHeader, SectionTable},
};

/// Go versions whose net/http sockleak's probes were checked against (signatures, argument
/// registers and the offsets below): 1.19, 1.21, 1.22 and 1.23 were measured; 1.20 lies between
/// two identical ones.
pub const KNOWN_MINORS: std::ops::RangeInclusive<u32> = 19..=23;

/// Offsets (bytes, amd64) on the way from a `*persistConn` to its fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    /// `persistConn.t` (`*Transport`).
    pub pc_transport: u32,
    /// `persistConn.conn` (`net.Conn`).
    pub pc_conn: u32,
    /// `tls.Conn.conn` (`net.Conn`).
    pub tls_conn: u32,
    /// `net.TCPConn` -> its `*netFD` (`TCPConn.conn.fd`).
    pub tcp_netfd: u32,
    /// `netFD` -> `pfd.Sysfd`.
    pub netfd_sysfd: u32,
    /// `itab._type` (`abi.ITab.Type`).
    pub itab_type: u32,
}

/// Go 1.19 to 1.23 (measured identical in 1.19, 1.21, 1.22, 1.23).
const TABLE: Offsets = Offsets {
    pc_transport: 16,
    pc_conn: 80,
    tls_conn: 0,
    tcp_netfd: 0,
    netfd_sysfd: 16,
    itab_type: 8,
};

/// Where the offsets came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Dwarf,
    Table,
}

/// What the probes are given for a binary (type addresses at link time: add the load bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub tcp_conn_type: u64,
    /// 0 when the program has no TLS.
    pub tls_conn_type: u64,
    pub offsets: Offsets,
    pub source: Source,
}

/// A Go binary as the origin probes see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoBinary {
    /// `go1.23.5`, from `.go.buildinfo`.
    pub version: Option<String>,
    /// Position-independent (`-buildmode=pie`): type addresses move with the load address.
    pub pie: bool,
    /// The layout, or why there is none (a sentence for the report).
    pub layout: Result<Layout, String>,
}

/// The Go version string in a `.go.buildinfo` section (Go 1.18+ layout: the version inline at
/// offset 32, uvarint length first); None for an older or foreign layout.
pub fn buildinfo_version(data: &[u8]) -> Option<String> {
    if data.len() < 33 || !data.starts_with(b"\xff Go buildinf:") || data[15] & 2 == 0 {
        return None;
    }
    let (len, n) = uvarint(&data[32..])?;
    let start = 32 + n;
    let bytes = data.get(start..start.checked_add(usize::try_from(len).ok()?)?)?;
    let v = std::str::from_utf8(bytes).ok()?;
    v.starts_with("go").then(|| v.to_string())
}

/// (major, minor) of `go1.23.5`, `go1.22rc1`, `go1.21.0 X:...`.
pub fn parse_version(v: &str) -> Option<(u32, u32)> {
    let rest = v.strip_prefix("go")?;
    let mut parts = rest.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
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

/// A runtime type name record (`abi.Name`): a flag byte, a uvarint length, the bytes.
pub fn decode_name(d: &[u8]) -> Option<&str> {
    let (len, n) = uvarint(d.get(1..)?)?;
    let start = 1 + n;
    std::str::from_utf8(d.get(start..start.checked_add(usize::try_from(len).ok()?)?)?).ok()
}

/// The ELF file as virtual-address reads.
struct Image<'d, R: ReadRef<'d>> {
    data: R,
    endian: Endianness,
    sections: SectionTable<'d, FileHeader64<Endianness>, R>,
}

impl<'d, R: ReadRef<'d>> Image<'d, R> {
    fn section(&self, name: &str) -> Option<&'d object::elf::SectionHeader64<Endianness>> {
        self.sections
            .section_by_name(self.endian, name.as_bytes())
            .map(|(_, s)| s)
    }

    /// A Go section, under its PIE name (`.data.rel.ro<name>`) too.
    fn go_section(&self, name: &str) -> Option<&'d object::elf::SectionHeader64<Endianness>> {
        self.section(name)
            .or_else(|| self.section(&format!(".data.rel.ro{name}")))
    }

    fn read(&self, va: u64, len: usize) -> Option<&'d [u8]> {
        let end = va.checked_add(len as u64)?;
        let s = self.sections.iter().find(|s| {
            let (start, size) = (s.sh_addr(self.endian), s.sh_size(self.endian));
            s.sh_type(self.endian) != object::elf::SHT_NOBITS
                && start != 0
                && va >= start
                && end <= start + size
        })?;
        let off = s.sh_offset(self.endian) + (va - s.sh_addr(self.endian));
        self.data.read_bytes_at(off, len as u64).ok()
    }

    fn u64_at(&self, va: u64) -> Option<u64> {
        Some(u64::from_le_bytes(self.read(va, 8)?.try_into().ok()?))
    }

    fn i32_at(&self, va: u64) -> Option<i32> {
        Some(i32::from_le_bytes(self.read(va, 4)?.try_into().ok()?))
    }

    /// The name of the type descriptor at `t` (`abi.Type.Str`, an offset from `types`).
    fn type_name(&self, types: u64, t: u64) -> Option<&'d str> {
        let tflag = *self.read(t + 20, 1)?.first()?;
        let off = self.i32_at(t + 40)?;
        let at = types.checked_add_signed(i64::from(off))?;
        let head = self.read(at, 11).or_else(|| self.read(at, 3))?;
        let (len, n) = uvarint(head.get(1..)?)?;
        let name = std::str::from_utf8(self.read(at + 1 + n as u64, len as usize)?).ok()?;
        // tflagExtraStar: the name is stored with a `*` to share it with the pointer type.
        Some(if tflag & 2 != 0 { name.get(1..)? } else { name })
    }

    /// The package path of a pointer type's struct element (its uncommon type).
    fn elem_pkg_path(&self, types: u64, t: u64) -> Option<&'d str> {
        let elem = self.u64_at(t + 48)?;
        let tflag = *self.read(elem + 20, 1)?.first()?;
        let kind = *self.read(elem + 23, 1)?.first()? & 31;
        // tflagUncommon; kind struct: the uncommon type follows structType (48 + 8 + 24).
        if tflag & 1 == 0 || kind != 25 {
            return None;
        }
        let off = u32::from_le_bytes(self.read(elem + 80, 4)?.try_into().ok()?);
        let at = types + u64::from(off);
        let head = self.read(at, 11).or_else(|| self.read(at, 3))?;
        let (len, n) = uvarint(head.get(1..)?)?;
        std::str::from_utf8(self.read(at + 1 + n as u64, len as usize)?).ok()
    }

    /// `*net.TCPConn` and `*crypto/tls.Conn` (0 when absent) from the itabs of `net.Conn`.
    fn conn_types(&self) -> Option<(u64, u64)> {
        let links = self.go_section(".itablink")?;
        let base = links.sh_addr(self.endian);
        let n = links.sh_size(self.endian) / 8;
        // runtime.types: the start of .rodata, or of .data.rel.ro in a PIE build.
        let candidates: Vec<u64> = [".rodata", ".data.rel.ro"]
            .iter()
            .filter_map(|s| self.section(s).map(|h| h.sh_addr(self.endian)))
            .collect();
        for types in candidates {
            let (mut tcp, mut tls) = (Vec::new(), Vec::new());
            for i in 0..n {
                let Some(itab) = self.u64_at(base + i * 8) else {
                    continue;
                };
                let (Some(inter), Some(typ)) = (self.u64_at(itab), self.u64_at(itab + 8)) else {
                    continue;
                };
                if self.type_name(types, inter) != Some("net.Conn") {
                    continue;
                }
                match (self.type_name(types, typ), self.elem_pkg_path(types, typ)) {
                    (Some("*net.TCPConn"), Some("net")) => tcp.push(typ),
                    (Some("*tls.Conn"), Some("crypto/tls")) => tls.push(typ),
                    _ => {}
                }
            }
            tcp.dedup();
            tls.dedup();
            if let [t] = tcp[..] {
                return Some((t, tls.first().copied().unwrap_or(0)));
            }
        }
        None
    }

    /// A DWARF section's bytes, inflated when compressed.
    fn dwarf_section(&self, name: &str) -> Cow<'d, [u8]> {
        let s = self
            .section(name)
            .or_else(|| self.section(&name.replacen(".debug_", ".zdebug_", 1)));
        let Some(s) = s else {
            return Cow::Borrowed(&[]);
        };
        let Ok(raw) = s.data(self.endian, self.data) else {
            return Cow::Borrowed(&[]);
        };
        if s.sh_flags(self.endian) & u64::from(SHF_COMPRESSED) != 0 {
            // Elf64_Chdr: type (u32), reserved, size (u64), align (u64); then the stream.
            let Some(header) = raw.get(..24) else {
                return Cow::Borrowed(&[]);
            };
            let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            if kind != object::elf::ELFCOMPRESS_ZLIB {
                return Cow::Borrowed(&[]);
            }
            return inflate(&raw[24..]);
        }
        if raw.starts_with(b"ZLIB") && raw.len() > 12 {
            return inflate(&raw[12..]);
        }
        Cow::Borrowed(raw)
    }
}

fn inflate<'d>(stream: &[u8]) -> Cow<'d, [u8]> {
    let mut out = Vec::new();
    match flate2::read::ZlibDecoder::new(stream).read_to_end(&mut out) {
        Ok(_) => Cow::Owned(out),
        Err(_) => Cow::Borrowed(&[]),
    }
}

/// The struct members and function parameters the probes rely on, as DWARF describes them.
#[derive(Debug, Default)]
struct DwarfFacts {
    members: hashbrown::HashMap<String, u64>,
    params: hashbrown::HashMap<String, Vec<String>>,
}

/// (struct, members) read from DWARF.
const MEMBERS: &[(&str, &[&str])] = &[
    ("net/http.persistConn", &["t", "conn"]),
    ("crypto/tls.Conn", &["conn"]),
    ("net.TCPConn", &["conn"]),
    ("net.conn", &["fd"]),
    ("net.netFD", &["pfd"]),
    ("internal/poll.FD", &["Sysfd"]),
    ("runtime.itab", &["_type"]),
    ("internal/abi.ITab", &["Type"]),
];

/// Functions the probes read arguments of, and the names their first arguments must have
/// (the register ABI gives pointer argument i the i-th register).
pub const SIGNATURES: &[(&str, &[&str])] = &[
    ("net/http.(*Transport).dialConn", &["t"]),
    ("net/http.(*Transport).queueForDial", &["t", "w"]),
    ("net/http.(*wantConn).tryDeliver", &["w", "pc"]),
    ("net/http.(*persistConn).roundTrip", &["pc"]),
    ("net/http.(*Transport).tryPutIdleConn", &["t", "pconn"]),
];

/// The compilation units that hold what `MEMBERS` and `SIGNATURES` name: Go's linker puts
/// every type in the runtime's unit, and a function in its package's (go1.19-go1.23).
const UNITS: &[&str] = &["runtime", "net/http"];

fn read_dwarf<'d, R: ReadRef<'d>>(img: &Image<'d, R>) -> Option<DwarfFacts> {
    img.section(".debug_info")
        .or_else(|| img.section(".zdebug_info"))?;
    // Only what names entries and their attributes: line tables, locations and ranges are
    // large (and compressed) and not read here.
    let sections = gimli::DwarfSections::load(|id| -> Result<_, gimli::Error> {
        use gimli::SectionId::*;
        Ok(match id {
            DebugInfo | DebugAbbrev | DebugStr | DebugStrOffsets | DebugLineStr | DebugAddr => {
                img.dwarf_section(id.name())
            }
            _ => Cow::Borrowed(&[][..]),
        })
    })
    .ok()?;
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    // The units where Go puts them first (fast); every unit when that was not enough.
    let facts = walk_dwarf(&dwarf, Some(UNITS));
    if facts.offsets().is_some() && facts.params.len() == SIGNATURES.len() {
        return Some(facts);
    }
    Some(walk_dwarf(&dwarf, None))
}

type Reader<'a> = gimli::EndianSlice<'a, gimli::LittleEndian>;

/// A string attribute, inline or in `.debug_str` (what Go's DWARF uses).
fn attr_str(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    v: gimli::AttributeValue<Reader<'_>>,
) -> Option<String> {
    let s = match v {
        gimli::AttributeValue::String(s) => s,
        gimli::AttributeValue::DebugStrRef(o) => dwarf.debug_str.get_str(o).ok()?,
        _ => return None,
    };
    Some(s.to_string_lossy().into_owned())
}

/// Walks the entries of the units named in `only` (every unit: None). Units are read from
/// their headers alone: a `gimli::Unit` would parse line programs, which are not loaded.
fn walk_dwarf(dwarf: &gimli::Dwarf<Reader<'_>>, only: Option<&[&str]>) -> DwarfFacts {
    let mut facts = DwarfFacts::default();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(abbrevs) = dwarf.abbreviations(&header) else {
            continue;
        };
        let mut cursor = header.entries(&abbrevs);
        if let Some(only) = only {
            let name = match cursor.next_dfs() {
                Ok(Some(root)) => root
                    .attr_value(gimli::DW_AT_name)
                    .and_then(|v| attr_str(dwarf, v)),
                _ => None,
            };
            if !name.is_some_and(|n| only.contains(&n.as_str())) {
                continue;
            }
        }
        // (depth, struct name) or (depth, function name) being read.
        let mut inside: Option<(isize, &str, bool)> = None;
        while let Ok(Some(e)) = cursor.next_dfs() {
            let depth = e.depth();
            if inside.is_some_and(|(d, _, _)| depth <= d) {
                inside = None;
            }
            let name = e
                .attr_value(gimli::DW_AT_name)
                .and_then(|v| attr_str(dwarf, v));
            match e.tag() {
                gimli::DW_TAG_structure_type => {
                    if let Some(n) = &name
                        && let Some((s, _)) = MEMBERS.iter().find(|(s, _)| s == n)
                    {
                        inside = Some((depth, s, false));
                    }
                }
                gimli::DW_TAG_subprogram => {
                    if let Some(n) = &name
                        && let Some((f, _)) = SIGNATURES.iter().find(|(f, _)| f == n)
                        && !facts.params.contains_key(*f)
                    {
                        facts.params.insert(f.to_string(), Vec::new());
                        inside = Some((depth, f, true));
                    }
                }
                gimli::DW_TAG_member => {
                    if let (Some((_, s, false)), Some(n)) = (inside, &name)
                        && MEMBERS
                            .iter()
                            .any(|(t, ms)| *t == s && ms.contains(&n.as_str()))
                        && let Some(v) = e.attr_value(gimli::DW_AT_data_member_location)
                        && let Some(off) = v.udata_value()
                    {
                        facts.members.insert(format!("{s}.{n}"), off);
                    }
                }
                gimli::DW_TAG_formal_parameter => {
                    // Results are parameters too, marked as variable parameters: inputs first.
                    let result = e
                        .attr_value(gimli::DW_AT_variable_parameter)
                        .is_some_and(|v| matches!(v, gimli::AttributeValue::Flag(true)));
                    if let (Some((d, f, true)), Some(n)) = (inside, &name)
                        && depth == d + 1
                        && !result
                        && let Some(p) = facts.params.get_mut(f)
                    {
                        p.push(n.clone());
                    }
                }
                _ => {}
            }
        }
    }
    facts
}

impl DwarfFacts {
    fn member(&self, s: &str, m: &str) -> Option<u32> {
        self.members
            .get(&format!("{s}.{m}"))
            .and_then(|v| u32::try_from(*v).ok())
    }

    fn offsets(&self) -> Option<Offsets> {
        Some(Offsets {
            pc_transport: self.member("net/http.persistConn", "t")?,
            pc_conn: self.member("net/http.persistConn", "conn")?,
            // A program without TLS has no tls.Conn: the TLS chain is then never taken.
            tls_conn: self.member("crypto/tls.Conn", "conn").unwrap_or(0),
            tcp_netfd: self.member("net.TCPConn", "conn")? + self.member("net.conn", "fd")?,
            netfd_sysfd: self.member("net.netFD", "pfd")?
                + self.member("internal/poll.FD", "Sysfd")?,
            itab_type: self
                .member("internal/abi.ITab", "Type")
                .or_else(|| self.member("runtime.itab", "_type"))?,
        })
    }

    /// The first probed function whose arguments are not what the probes read.
    fn signature_mismatch(&self) -> Option<&'static str> {
        SIGNATURES.iter().find_map(|(f, want)| {
            let have = self.params.get(*f)?;
            (have.len() < want.len() || have.iter().zip(*want).any(|(h, w)| h != w)).then_some(*f)
        })
    }
}

/// Where the offsets come from, given the binary's DWARF (if any) and Go version: DWARF when
/// it describes them and the probed functions take the arguments sockleak reads, else the
/// table of a known version; else why not, for the report.
fn offsets(dwarf: Option<&DwarfFacts>, version: Option<&str>) -> Result<(Offsets, Source), String> {
    let shown = version.unwrap_or("an unknown Go version");
    let minor = version
        .and_then(parse_version)
        .filter(|(major, _)| *major == 1)
        .map(|(_, m)| m);
    match (dwarf, minor) {
        (Some(d), Some(m)) if m >= 17 => {
            if let Some(f) = d.signature_mismatch() {
                return Err(format!(
                    "{f} in this binary ({shown}) takes other arguments than sockleak reads"
                ));
            }
            match d.offsets() {
                Some(o) => Ok((o, Source::Dwarf)),
                None if KNOWN_MINORS.contains(&m) => Ok((TABLE, Source::Table)),
                None => Err(format!(
                    "the binary's DWARF ({shown}) lacks net/http's connection structs"
                )),
            }
        }
        (None, Some(m)) if KNOWN_MINORS.contains(&m) => Ok((TABLE, Source::Table)),
        (None, Some(_)) => Err(format!(
            "{shown} is not a Go version sockleak knows net/http's layout for (go1.{}-go1.{}), and the binary has no DWARF to read it from (built with -ldflags=-w)",
            KNOWN_MINORS.start(),
            KNOWN_MINORS.end()
        )),
        (_, _) => Err(format!(
            "{shown} is not a Go version sockleak can probe (go1.17 or newer, go1.{}-go1.{} without DWARF)",
            KNOWN_MINORS.start(),
            KNOWN_MINORS.end()
        )),
    }
}

/// Reads a Go binary (None: not a 64-bit little-endian ELF).
pub fn inspect<'d, R: ReadRef<'d>>(data: R) -> Option<GoBinary> {
    let header = FileHeader64::<Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    if endian != Endianness::Little {
        return None;
    }
    let sections = header.sections(endian, data).ok()?;
    let img = Image {
        data,
        endian,
        sections,
    };
    let version = img
        .section(".go.buildinfo")
        .and_then(|s| s.data(endian, data).ok())
        .and_then(buildinfo_version);
    let pie = header.e_type(endian) == ET_DYN;
    let layout = layout(&img, version.as_deref());
    Some(GoBinary {
        version,
        pie,
        layout,
    })
}

fn layout<'d, R: ReadRef<'d>>(img: &Image<'d, R>, version: Option<&str>) -> Result<Layout, String> {
    let (offsets, source) = offsets(read_dwarf(img).as_ref(), version)?;
    let (tcp_conn_type, tls_conn_type) = img
        .conn_types()
        .ok_or_else(|| "no *net.TCPConn type descriptor in the binary's itabs".to_string())?;
    Ok(Layout {
        tcp_conn_type,
        tls_conn_type,
        offsets,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buildinfo(v: &str) -> Vec<u8> {
        let mut d = b"\xff Go buildinf:".to_vec();
        d.push(8);
        d.push(2);
        d.resize(32, 0);
        d.push(v.len() as u8);
        d.extend(v.as_bytes());
        d.push(0);
        d
    }

    #[test]
    fn versions_from_buildinfo() {
        assert_eq!(
            buildinfo_version(&buildinfo("go1.23.5")).as_deref(),
            Some("go1.23.5")
        );
        let mut old = buildinfo("go1.17");
        old[15] = 0;
        assert_eq!(buildinfo_version(&old), None, "pre-1.18 pointer layout");
        assert_eq!(buildinfo_version(b"\xff Go buildinf:"), None);
        let mut cut = buildinfo("go1.23.5");
        cut.truncate(36);
        assert_eq!(buildinfo_version(&cut), None);
        assert_eq!(parse_version("go1.23.5"), Some((1, 23)));
        assert_eq!(parse_version("go1.22rc1"), Some((1, 22)));
        assert_eq!(
            parse_version("go1.21.0 X:nocoverageredesign"),
            Some((1, 21))
        );
        assert_eq!(parse_version("devel go1.24-abc"), None);
        assert_eq!(parse_version("go2"), None);
    }

    #[test]
    fn names_decode() {
        assert_eq!(decode_name(b"\x03\x0c*net.TCPConn"), Some("*net.TCPConn"));
        assert_eq!(decode_name(b"\x03\x0c*net.TCP"), None, "short");
        assert_eq!(decode_name(b"\x00"), None);
        // A two-byte uvarint length.
        let mut long = vec![1u8, 0x81, 0x01];
        long.extend(std::iter::repeat_n(b'a', 129));
        assert_eq!(decode_name(&long).map(str::len), Some(129));
    }

    #[test]
    fn foreign_files_are_not_go() {
        assert_eq!(inspect(&b"not an elf"[..]), None);
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let b = inspect(&me[..]).unwrap();
        assert_eq!(b.version, None);
        assert!(b.layout.is_err());
    }

    fn dwarf(members: &[(&str, u64)], params: &[(&str, &[&str])]) -> DwarfFacts {
        DwarfFacts {
            members: members.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            params: params
                .iter()
                .map(|(f, p)| (f.to_string(), p.iter().map(|s| s.to_string()).collect()))
                .collect(),
        }
    }

    /// What go1.23's DWARF says (measured).
    fn go123() -> DwarfFacts {
        dwarf(
            &[
                ("net/http.persistConn.t", 16),
                ("net/http.persistConn.conn", 80),
                ("crypto/tls.Conn.conn", 0),
                ("net.TCPConn.conn", 0),
                ("net.conn.fd", 0),
                ("net.netFD.pfd", 0),
                ("internal/poll.FD.Sysfd", 16),
                ("internal/abi.ITab.Type", 8),
            ],
            &[
                (
                    "net/http.(*wantConn).tryDeliver",
                    &["w", "pc", "err", "idleAt"],
                ),
                ("net/http.(*Transport).queueForDial", &["t", "w"]),
            ],
        )
    }

    #[test]
    fn offsets_from_dwarf_or_the_table_or_why_not() {
        let d = go123();
        assert_eq!(
            offsets(Some(&d), Some("go1.23.5")),
            Ok((TABLE, Source::Dwarf))
        );
        // A newer Go with DWARF: read from it.
        assert_eq!(
            offsets(Some(&d), Some("go1.26.1")).map(|o| o.1),
            Ok(Source::Dwarf)
        );
        // Stripped: the table of a known version, and only of one.
        assert_eq!(offsets(None, Some("go1.19.8")), Ok((TABLE, Source::Table)));
        let e = offsets(None, Some("go1.26.1")).unwrap_err();
        assert!(
            e.contains("go1.26.1 is not a Go version sockleak knows"),
            "{e}"
        );
        assert!(
            e.contains("go1.19-go1.23") && e.contains("-ldflags=-w"),
            "{e}"
        );
        let e = offsets(None, None).unwrap_err();
        assert!(e.starts_with("an unknown Go version is not"), "{e}");
        assert!(
            offsets(Some(&d), Some("go1.16.15")).is_err(),
            "no register ABI"
        );
        // A function whose arguments moved: not probed, whatever the version.
        let mut moved = go123();
        moved.params.insert(
            "net/http.(*wantConn).tryDeliver".into(),
            vec!["w".into(), "err".into(), "pc".into()],
        );
        let e = offsets(Some(&moved), Some("go1.27")).unwrap_err();
        assert!(
            e.contains("tryDeliver") && e.contains("other arguments"),
            "{e}"
        );
        // DWARF without the structs: a known version falls back to its table.
        let empty = dwarf(&[], &[]);
        assert_eq!(
            offsets(Some(&empty), Some("go1.21.13")),
            Ok((TABLE, Source::Table))
        );
        assert!(offsets(Some(&empty), Some("go1.26")).is_err());
        // go1.21's itab field name.
        let mut old = go123();
        old.members.remove("internal/abi.ITab.Type");
        old.members.insert("runtime.itab._type".into(), 8);
        assert_eq!(
            offsets(Some(&old), Some("go1.21.13")).map(|o| o.0),
            Ok(TABLE)
        );
    }
}
