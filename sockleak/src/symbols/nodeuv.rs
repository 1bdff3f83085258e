//! Node.js: finds libuv's exported TCP functions in a traced node process (in the node
//! executable, which links libuv statically in the NodeSource and official builds, or in a
//! shared `libuv.so`/`libnode.so` it maps) and attaches the kernel's uprobes there, for that
//! process only (sockleak-ebpf/src/node.rs): a socket libuv makes on a later tick then carries
//! the stack of the `net.connect` that made its handle.

use std::{fs::File, os::unix::fs::MetadataExt, path::PathBuf};

use hashbrown::HashMap;
use object::ReadCache;

use crate::{host::procfs, kernel::bpf::Tracer, symbols::elf};

pub const TCP_INIT: &str = "uv_tcp_init";
pub const TCP_INIT_EX: &str = "uv_tcp_init_ex";
pub const TCP_CONNECT: &str = "uv_tcp_connect";
pub const TCP_BIND: &str = "uv_tcp_bind";
pub const CLOSE: &str = "uv_close";

const NAMES: [&str; 5] = [TCP_INIT, TCP_INIT_EX, TCP_CONNECT, TCP_BIND, CLOSE];

/// (function, kernel program), in attach order: handles are known before a connect looks them
/// up. Without `uv_tcp_init_ex` (a static libuv inlines it) or `uv_tcp_bind` the rest works.
const PROBES: [(&str, &str, bool); 7] = [
    (TCP_INIT, "node_tcp_init", true),
    (TCP_INIT_EX, "node_tcp_init", false),
    (CLOSE, "node_close", true),
    (TCP_CONNECT, "node_tcp_done", true),
    (TCP_CONNECT, "node_tcp_connect", true),
    (TCP_BIND, "node_tcp_done", false),
    (TCP_BIND, "node_tcp_bind", false),
];

/// Whether a mapped library may hold libuv.
fn libuv_candidate(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.starts_with("libuv.so") || base.starts_with("libnode.so")
}

pub struct NodeProbes {
    enabled: bool,
    /// (device, inode) of a file -> the libuv functions it defines (file offsets).
    files: HashMap<(u64, u64), HashMap<&'static str, u64>>,
    links: HashMap<u32, Vec<aya::programs::uprobe::UProbeLink>>,
}

impl NodeProbes {
    pub fn new(enabled: bool) -> NodeProbes {
        NodeProbes {
            enabled,
            files: HashMap::new(),
            links: HashMap::new(),
        }
    }

    /// The libuv functions a file defines (cached by file).
    fn functions(&mut self, path: &std::path::Path) -> Option<HashMap<&'static str, u64>> {
        let md = std::fs::metadata(path).ok()?;
        let key = (md.dev(), md.ino());
        if let Some(f) = self.files.get(&key) {
            return Some(f.clone());
        }
        let cache = ReadCache::new(File::open(path).ok()?);
        let found = elf::function_offsets(&cache, &NAMES).unwrap_or_default();
        self.files.insert(key, found.clone());
        Some(found)
    }

    /// The file that holds libuv's TCP functions in `pid`, as a path the kernel can open in
    /// any mount namespace.
    fn libuv_of(&mut self, pid: u32) -> Option<(PathBuf, HashMap<&'static str, u64>)> {
        let exe = procfs::proc_path(pid, "exe");
        let mut candidates = vec![exe];
        for m in procfs::maps(pid) {
            if m.offset == 0 && libuv_candidate(&m.path) {
                candidates.push(procfs::proc_path(
                    pid,
                    &format!("map_files/{:x}-{:x}", m.start, m.end),
                ));
            }
        }
        candidates.into_iter().find_map(|path| {
            let f = self.functions(&path)?;
            (f.contains_key(TCP_INIT) && f.contains_key(TCP_CONNECT) && f.contains_key(CLOSE))
                .then_some((path, f))
        })
    }

    /// Attaches the probes to a node process (`stacks`: call sites are on). Ok: origins are
    /// joined; Err: why not, for the report.
    pub fn check(&mut self, tracer: &mut Tracer, pid: u32, stacks: bool) -> Result<(), String> {
        self.forget(pid);
        if !self.enabled {
            return Err("uprobes are turned off (--no-uprobes)".into());
        }
        if !stacks {
            return Err("call sites are off (--no-stacks)".into());
        }
        let Some((path, funcs)) = self.libuv_of(pid) else {
            return Err(format!(
                "no {TCP_INIT}/{TCP_CONNECT}/{CLOSE} symbols in the node executable or a libuv it maps"
            ));
        };
        let mut links = Vec::new();
        for (func, program, required) in PROBES {
            let Some(offset) = funcs.get(func) else {
                if required {
                    return Err(format!("{func} has no address in {}", path.display()));
                }
                continue;
            };
            match tracer.attach_uprobe(program, pid, &path, *offset) {
                Ok(l) => links.push(l),
                Err(e) if required => {
                    return Err(format!(
                        "the uprobe on {func} could not be attached ({e:#})"
                    ));
                }
                Err(e) => log::debug!("pid {pid}: no uprobe on {func}: {e:#}"),
            }
        }
        self.links.insert(pid, links);
        Ok(())
    }

    /// Detaches a process's uprobes (it exited or exec'd).
    pub fn forget(&mut self, pid: u32) {
        self.links.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libuv_lives_in_these_libraries() {
        assert!(libuv_candidate("/usr/lib/x86_64-linux-gnu/libuv.so.1.0.0"));
        assert!(libuv_candidate("/usr/lib/x86_64-linux-gnu/libnode.so.108"));
        assert!(!libuv_candidate("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(!libuv_candidate("/usr/bin/node"));
    }

    #[test]
    fn functions_of_an_elf_file() {
        // This test binary defines no libuv function: found none, without error.
        let me = std::env::current_exe().unwrap();
        let cache = ReadCache::new(File::open(&me).unwrap());
        assert_eq!(elf::function_offsets(&cache, &NAMES).unwrap().len(), 0);
        let found = elf::function_offsets(&cache, &["main"]).unwrap();
        assert!(found.contains_key("main"), "{found:?}");
    }
}
