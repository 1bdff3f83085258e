//! JIT perf maps (`/tmp/perf-PID.map`): how Node (`--perf-basic-prof`), Java (`jcmd PID
//! Compiler.perfmap`) and Python 3.12 (`-X perf`) name code they generate. Read here rather than
//! by blazesym: blazesym refuses the JDK's `0x`-prefixed lines and then fails the whole batch,
//! native frames included. A map is re-read whenever it changed since it was last read, so a
//! stack is named with the code as it was when the stack was new.

use std::{collections::BTreeMap, path::PathBuf, time::SystemTime};

use hashbrown::HashMap;

use crate::host::procfs;

/// One line: start address, size, name. Addresses and sizes are hex, with or without `0x`.
pub fn parse_line(line: &str) -> Option<(u64, u64, &str)> {
    let line = line.trim_end();
    let (start, rest) = line.split_once(' ')?;
    let (size, name) = rest.trim_start().split_once(' ')?;
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let name = name.trim();
    (!name.is_empty()).then_some(())?;
    Some((hex(start)?, hex(size)?, name))
}

/// Code ranges of one map; a later line replaces the earlier ones it overlaps (code moved).
#[derive(Debug, Default)]
pub struct Ranges {
    by_start: BTreeMap<u64, (u64, String)>,
}

impl Ranges {
    pub fn parse(text: &str) -> Ranges {
        let mut r = Ranges::default();
        for (start, size, name) in text.lines().filter_map(parse_line) {
            r.insert(start, size.max(1), name);
        }
        r
    }

    fn insert(&mut self, start: u64, size: u64, name: &str) {
        let end = start.saturating_add(size);
        // An earlier range that starts below and reaches into this one.
        if let Some((&s, &(len, _))) = self.by_start.range(..start).next_back()
            && s + len > start
        {
            self.by_start.remove(&s);
        }
        let inside: Vec<u64> = self.by_start.range(start..end).map(|(s, _)| *s).collect();
        for s in inside {
            self.by_start.remove(&s);
        }
        self.by_start.insert(start, (size, name.to_string()));
    }

    pub fn name(&self, addr: u64) -> Option<&str> {
        let (s, (len, name)) = self.by_start.range(..=addr).next_back()?;
        (addr < s + len).then_some(name.as_str())
    }

    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }
}

struct Cached {
    stamp: (u64, Option<SystemTime>),
    ranges: Ranges,
}

/// Perf maps of traced processes, re-read when they change.
#[derive(Default)]
pub struct PerfMaps {
    maps: HashMap<u32, Cached>,
}

/// Where process `pid` writes its map, seen from here: its own /tmp, named by its pid in its
/// PID namespace.
fn path(pid: u32) -> PathBuf {
    let ns_pid = procfs::status(pid).and_then(|s| s.ns_pid).unwrap_or(pid);
    procfs::proc_path(pid, &format!("root/tmp/perf-{ns_pid}.map"))
}

impl PerfMaps {
    /// The ranges of `pid`'s map as the file is now; None when it has none.
    pub fn current(&mut self, pid: u32) -> Option<&Ranges> {
        let p = path(pid);
        let Ok(meta) = std::fs::metadata(&p) else {
            self.maps.remove(&pid);
            return None;
        };
        let stamp = (meta.len(), meta.modified().ok());
        let fresh = self.maps.get(&pid).is_none_or(|c| c.stamp != stamp);
        if fresh {
            let text = std::fs::read(&p).ok()?;
            let ranges = Ranges::parse(&String::from_utf8_lossy(&text));
            self.maps.insert(pid, Cached { stamp, ranges });
        }
        self.maps.get(&pid).map(|c| &c.ranges)
    }

    pub fn forget(&mut self, pid: u32) {
        self.maps.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_each_runtime() {
        // Node --perf-basic-prof, the JDK's Compiler.perfmap, CPython -X perf.
        assert_eq!(
            parse_line("3e1c0a04a0c0 3c JS:*connect node:net:231\n"),
            Some((0x3e1c0a04a0c0, 0x3c, "JS:*connect node:net:231"))
        );
        assert_eq!(
            parse_line("0x00007f76acec71c0 0x0000000000000270 void Leak.openLeakyConnection(int)"),
            Some((0x7f76acec71c0, 0x270, "void Leak.openLeakyConnection(int)"))
        );
        assert_eq!(
            parse_line("7f3d9c1b2000 b py::open_leaky_connection:/tmp/leak.py"),
            Some((
                0x7f3d9c1b2000,
                0xb,
                "py::open_leaky_connection:/tmp/leak.py"
            ))
        );
        assert_eq!(parse_line("garbage"), None);
        assert_eq!(parse_line("zz 10 name"), None);
        assert_eq!(parse_line("1000 10 "), None);
    }

    #[test]
    fn later_code_replaces_what_it_overlaps() {
        let r = Ranges::parse(
            "1000 100 old_a\n\
             1200 100 b\n\
             not a line\n\
             1080 100 new_a\n",
        );
        assert_eq!(r.name(0x1000), None, "old_a was overwritten from 0x1080");
        assert_eq!(r.name(0x1090), Some("new_a"));
        assert_eq!(r.name(0x1210), Some("b"));
        assert_eq!(r.name(0x1300), None);
        assert_eq!(r.name(0x10), None);
        assert_eq!(r.len(), 2);
    }
}
