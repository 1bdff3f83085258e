//! User stacks: fetched from the kernel's stack map once per id and symbolized once per
//! (address space, stack) with blazesym (ELF symbols, DWARF lines, PIE, Go).

use std::collections::BTreeSet;

use blazesym::{
    Pid,
    symbolize::{
        Input, Symbolized, Symbolizer,
        source::{Process, Source},
    },
};
use hashbrown::HashMap;
use serde::Serialize;

use crate::{bpf::Tracer, gopclntab::GoTable, procfs};

/// One symbolized frame. Unknown frames keep their address and, when known, their module.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frame {
    #[serde(serialize_with = "hex")]
    pub addr: u64,
    pub symbol: Option<String>,
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

fn hex<S: serde::Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// A call site as the kernel captured it: a user stack plus the caller of a frameless leaf
/// (see `SocketRecord::caller`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site {
    pub stack_id: i32,
    pub caller: u64,
}

impl Site {
    pub fn of(rec: &sockleak_common::socket::SocketRecord) -> Site {
        Site {
            stack_id: rec.stack_id,
            caller: rec.caller,
        }
    }
}

pub struct Stacks {
    symbolizer: Symbolizer,
    /// Function tables of stripped Go binaries, by (device, inode); None: not one.
    go_tables: HashMap<(u64, u64), Option<GoTable>>,
    raw: HashMap<i32, Vec<u64>>,
    /// Keyed by the process whose address space the stack belongs to.
    resolved: HashMap<(u32, Site), Vec<Frame>>,
}

/// Whether a frame is plumbing between the application and the syscall: libc wrappers, the Go
/// runtime and its syscall and net packages.
fn plumbing(f: &Frame) -> bool {
    let module = f
        .module
        .as_deref()
        .and_then(|m| m.rsplit('/').next())
        .unwrap_or("");
    if module.starts_with("libc.so")
        || module.starts_with("libc-")
        || module.starts_with("libpthread")
    {
        return true;
    }
    let Some(sym) = f.symbol.as_deref() else {
        return false;
    };
    [
        "runtime.",
        "runtime/",
        "syscall.",
        "internal/",
        "net.",
        "__libc",
        "__GI_",
    ]
    .iter()
    .any(|p| sym.starts_with(p))
}

/// "symbol (file:line)" of the first application frame: where the code that made the socket
/// lives, past libc and Go runtime/syscall/net frames.
pub fn call_site(stack: &[Frame]) -> Option<String> {
    let f = stack.iter().find(|f| f.symbol.is_some() && !plumbing(f))?;
    let sym = f.symbol.as_deref()?;
    Some(match (&f.file, f.line) {
        (Some(file), Some(line)) => {
            let short = file.rsplit('/').next().unwrap_or(file);
            format!("{sym} ({short}:{line})")
        }
        _ => sym.to_string(),
    })
}

/// Frame-pointer unwinding skips the caller of a frameless syscall wrapper (glibc's
/// `socket`, Go's `Syscall6`): put the captured return address back as frame 1 when it is
/// code and not already there.
pub fn splice_caller(ips: &[u64], caller: u64, is_code: impl Fn(u64) -> bool) -> Vec<u64> {
    let mut out = ips.to_vec();
    if caller != 0 && !ips.is_empty() && ips.get(1) != Some(&caller) && is_code(caller) {
        out.insert(1, caller);
    }
    out
}

impl Default for Stacks {
    fn default() -> Self {
        Stacks {
            symbolizer: Symbolizer::new(),
            go_tables: HashMap::new(),
            raw: HashMap::new(),
            resolved: HashMap::new(),
        }
    }
}

impl Stacks {
    pub fn is_resolved(&self, pid: u32, site: Site) -> bool {
        site.stack_id < 0 || self.resolved.contains_key(&(pid, site))
    }

    /// Symbolizes the given stacks of process `pid` that are not symbolized yet, in one batch.
    /// Call while the process is alive: its mappings are read from /proc.
    pub fn resolve(&mut self, tracer: &Tracer, pid: u32, sites: impl IntoIterator<Item = Site>) {
        let todo: BTreeSet<Site> = sites
            .into_iter()
            .filter(|s| !self.is_resolved(pid, *s))
            .collect();
        if todo.is_empty() {
            return;
        }
        for s in &todo {
            self.fetch_raw(tracer, s.stack_id);
        }
        let maps = procfs::maps(pid);
        let stacks: Vec<(Site, Vec<u64>)> = todo
            .into_iter()
            .map(|s| {
                let ips = splice_caller(&self.raw[&s.stack_id], s.caller, |a| {
                    procfs::is_code(&maps, a)
                });
                (s, ips)
            })
            .collect();
        // Return addresses point after the call; symbolize the call itself (ip - 1), except
        // for the innermost frame, which is where the syscall was made.
        let addrs: Vec<u64> = stacks
            .iter()
            .flat_map(|(_, ips)| {
                ips.iter()
                    .enumerate()
                    .map(|(i, ip)| if i == 0 { *ip } else { ip.saturating_sub(1) })
            })
            .collect();
        let src = Source::Process(Process::new(Pid::from(pid)));
        let syms = self
            .symbolizer
            .symbolize(&src, Input::AbsAddr(&addrs))
            .unwrap_or_default();
        let mut k = 0;
        for (site, ips) in stacks {
            let frames = ips
                .iter()
                .map(|ip| {
                    let sym = syms.get(k);
                    let addr = addrs[k];
                    k += 1;
                    let mut f = to_frame(*ip, sym, &maps);
                    if f.symbol.is_none() {
                        f.symbol = go_name(&mut self.go_tables, pid, &maps, addr);
                    }
                    f
                })
                .collect();
            self.resolved.insert((pid, site), frames);
        }
    }

    /// Frames of a stack: symbolized if resolved, else bare addresses.
    pub fn frames(&self, pid: u32, site: Site) -> Vec<Frame> {
        if site.stack_id < 0 {
            return Vec::new();
        }
        if let Some(f) = self.resolved.get(&(pid, site)) {
            return f.clone();
        }
        self.raw
            .get(&site.stack_id)
            .map(|ips| ips.iter().map(|ip| to_frame(*ip, None, &[])).collect())
            .unwrap_or_default()
    }

    /// Drops what was symbolized for a process no longer reported.
    pub fn forget_pid(&mut self, pid: u32) {
        self.resolved.retain(|(p, _), _| *p != pid);
    }

    /// Bare addresses of a stack fetched from the kernel, for processes already gone.
    pub fn fetch_raw(&mut self, tracer: &Tracer, id: i32) {
        if id >= 0 && !self.raw.contains_key(&id) {
            self.raw.insert(id, tracer.stack(id).unwrap_or_default());
        }
    }
}

/// Names a frame of a stripped Go binary from its `.gopclntab` (blazesym reads ELF symbols and
/// DWARF, which `-ldflags=-s -w` removes).
fn go_name(
    tables: &mut HashMap<(u64, u64), Option<GoTable>>,
    pid: u32,
    maps: &[procfs::Mapping],
    addr: u64,
) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = maps
        .iter()
        .find(|m| m.exec && m.start <= addr && addr < m.end)?;
    // Through map_files: the binary as the process sees it, in any mount namespace.
    let file = procfs::proc_path(pid, &format!("map_files/{:x}-{:x}", m.start, m.end));
    let md = std::fs::metadata(&file).ok()?;
    let table = tables
        .entry((md.dev(), md.ino()))
        .or_insert_with(|| GoTable::read(&file));
    let (_, name) = table.as_ref()?.at_file_offset(addr - m.start + m.offset)?;
    Some(name.to_string())
}

fn to_frame(ip: u64, sym: Option<&Symbolized<'_>>, maps: &[procfs::Mapping]) -> Frame {
    let module = procfs::module_of(maps, ip).map(str::to_string);
    match sym {
        Some(Symbolized::Sym(s)) => {
            let (file, line) = match &s.code_info {
                Some(ci) => (Some(ci.to_path().display().to_string()), ci.line),
                None => (None, None),
            };
            Frame {
                addr: ip,
                symbol: Some(s.name.to_string()),
                module: s
                    .module
                    .as_ref()
                    .map(|m| m.to_string_lossy().into_owned())
                    .or(module),
                file,
                line,
            }
        }
        _ => Frame {
            addr: ip,
            symbol: None,
            module,
            file: None,
            line: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(sym: &str, module: &str, file: Option<&str>, line: Option<u32>) -> Frame {
        Frame {
            addr: 1,
            symbol: Some(sym.into()),
            module: Some(module.into()),
            file: file.map(Into::into),
            line,
        }
    }

    #[test]
    fn call_site_skips_plumbing() {
        let go = vec![
            frame("runtime/internal/syscall.Syscall6", "/bin/app", None, None),
            frame("syscall.socket", "/bin/app", None, None),
            frame("net.sysSocket", "/bin/app", None, None),
            frame(
                "net/http.(*Transport).dialConn",
                "/bin/app",
                Some("/go/src/net/http/transport.go"),
                Some(1608),
            ),
        ];
        assert_eq!(
            call_site(&go).unwrap(),
            "net/http.(*Transport).dialConn (transport.go:1608)"
        );
        let c = vec![
            frame(
                "__GI_socket",
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
                None,
                None,
            ),
            frame("leak_here", "/tmp/app", Some("/tmp/app.c"), Some(5)),
        ];
        assert_eq!(call_site(&c).unwrap(), "leak_here (app.c:5)");
        assert_eq!(call_site(&[]), None);
    }

    #[test]
    fn caller_is_spliced_only_when_missing_and_code() {
        let code = |a: u64| (0x1000..0x2000).contains(&a);
        assert_eq!(
            splice_caller(&[1, 0x1500], 0x1200, code),
            vec![1, 0x1200, 0x1500]
        );
        // Already the second frame (the leaf had a frame of its own).
        assert_eq!(splice_caller(&[1, 0x1200], 0x1200, code), vec![1, 0x1200]);
        // Not code: a stack word, not a return address.
        assert_eq!(splice_caller(&[1, 0x1500], 0x9000, code), vec![1, 0x1500]);
        assert_eq!(splice_caller(&[1], 0, code), vec![1]);
        assert_eq!(splice_caller(&[], 0x1200, code), Vec::<u64>::new());
    }
}
