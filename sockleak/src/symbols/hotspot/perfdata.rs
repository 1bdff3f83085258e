//! The JVM's performance counters (hsperfdata, on by default: `-XX:+UsePerfData`), for one
//! counter: `java.cls.unloadedClasses`. When classes are unloaded, metaspace memory is reused,
//! and a `Method*` may then be another method: names cached by `Method*` must be dropped.

use std::{fs::File, os::unix::fs::FileExt, path::PathBuf};

use crate::host::procfs::Mapping;

/// The counter watched.
pub const UNLOADED_CLASSES: &str = "java.cls.unloadedClasses";

const MAGIC: u32 = 0xcafe_c0c0;
/// Prologue: magic, byte order, major, minor, accessible, used, overflow, mod time,
/// entry offset, entry count.
const PROLOGUE: usize = 32;

/// Where a long counter's value lies in an hsperfdata file, and its byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub offset: u64,
    pub little_endian: bool,
}

/// Finds the long counter `name` in the bytes of an hsperfdata file.
pub fn find(b: &[u8], name: &str) -> Option<Counter> {
    if b.len() < PROLOGUE || u32::from_be_bytes(b[0..4].try_into().ok()?) != MAGIC {
        return None;
    }
    let le = b[4] == 1;
    let i32_at = |o: usize| -> Option<i32> {
        let w: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            i32::from_le_bytes(w)
        } else {
            i32::from_be_bytes(w)
        })
    };
    let mut entry = usize::try_from(i32_at(24)?).ok()?;
    let count = i32_at(28)?;
    for _ in 0..count.clamp(0, 1 << 16) {
        let len = usize::try_from(i32_at(entry)?).ok()?;
        let name_off = usize::try_from(i32_at(entry + 4)?).ok()?;
        let vector = i32_at(entry + 8)?;
        let kind = *b.get(entry + 12)?;
        let data = usize::try_from(i32_at(entry + 16)?).ok()?;
        let start = entry + name_off;
        let end = start + b.get(start..)?.iter().position(|c| *c == 0)?;
        if &b[start..end] == name.as_bytes() && kind == b'J' && vector == 0 {
            let offset = (entry + data) as u64;
            b.get(offset as usize..offset as usize + 8)?;
            return Some(Counter {
                offset,
                little_endian: le,
            });
        }
        if len == 0 {
            return None;
        }
        entry += len;
    }
    None
}

/// A JVM's unloaded-classes counter, read on demand.
#[derive(Debug)]
pub struct Unloads {
    file: File,
    counter: Counter,
    pub path: PathBuf,
    /// Where the counter lies in the JVM's own memory (the JVM maps the file).
    pub addr: Option<u64>,
}

/// The mapping of a JVM's hsperfdata file in its memory: `/tmp/hsperfdata_<user>/<pid as the
/// JVM sees it>`.
fn perf_mapping(maps: &[Mapping], ns_pid: u32) -> Option<&Mapping> {
    maps.iter().find(|m| {
        let mut parts = m.path.rsplit('/');
        parts.next() == Some(ns_pid.to_string().as_str())
            && parts.next().is_some_and(|d| d.starts_with("hsperfdata_"))
    })
}

impl Unloads {
    /// The counter of process `pid` (its maps: `maps`), read through the file in its root.
    pub fn open(pid: u32, maps: &[Mapping]) -> Option<Unloads> {
        let ns_pid = crate::host::procfs::status(pid)
            .and_then(|s| s.ns_pid)
            .unwrap_or(pid);
        let mapped = perf_mapping(maps, ns_pid);
        let path = match mapped {
            Some(m) => crate::host::procfs::proc_path(pid, &format!("root{}", m.path)),
            None => {
                let tmp = crate::host::procfs::proc_path(pid, "root/tmp");
                std::fs::read_dir(&tmp)
                    .ok()?
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("hsperfdata_"))
                    .map(|e| e.path().join(ns_pid.to_string()))
                    .find(|p| p.is_file())?
            }
        };
        let file = File::open(&path).ok()?;
        // The counters are laid out at start-up; 64 KiB covers the default 32 KiB region.
        let mut b = vec![0; 1 << 16];
        let n = file.read_at(&mut b, 0).ok()?;
        b.truncate(n);
        let counter = find(&b, UNLOADED_CLASSES)?;
        let addr = mapped
            .filter(|m| {
                m.offset <= counter.offset && counter.offset + 8 <= m.offset + (m.end - m.start)
            })
            .map(|m| m.start + counter.offset - m.offset);
        Some(Unloads {
            file,
            counter,
            path,
            addr,
        })
    }

    /// Classes unloaded so far.
    pub fn read(&self) -> Option<u64> {
        let mut w = [0u8; 8];
        self.file.read_exact_at(&mut w, self.counter.offset).ok()?;
        Some(if self.counter.little_endian {
            u64::from_le_bytes(w)
        } else {
            u64::from_be_bytes(w)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An hsperfdata image with the given long counters (little-endian, as on x86_64).
    pub fn image(counters: &[(&str, u64)]) -> Vec<u8> {
        let mut b = vec![0u8; PROLOGUE];
        b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        b[4] = 1;
        b[24..28].copy_from_slice(&(PROLOGUE as i32).to_le_bytes());
        b[28..32].copy_from_slice(&(counters.len() as i32).to_le_bytes());
        for (name, v) in counters {
            let name_off = 20;
            let data = (name_off + name.len() + 1).div_ceil(8) * 8;
            let len = data + 8;
            let mut e = vec![0u8; len];
            e[0..4].copy_from_slice(&(len as i32).to_le_bytes());
            e[4..8].copy_from_slice(&(name_off as i32).to_le_bytes());
            e[12] = b'J';
            e[16..20].copy_from_slice(&(data as i32).to_le_bytes());
            e[name_off..name_off + name.len()].copy_from_slice(name.as_bytes());
            e[data..data + 8].copy_from_slice(&v.to_le_bytes());
            b.extend(e);
        }
        b
    }

    #[test]
    fn finds_the_counter() {
        let b = image(&[("sun.rt.createVmBeginTime", 5), (UNLOADED_CLASSES, 29)]);
        let c = find(&b, UNLOADED_CLASSES).unwrap();
        assert!(c.little_endian);
        let o = c.offset as usize;
        assert_eq!(u64::from_le_bytes(b[o..o + 8].try_into().unwrap()), 29);
        assert_eq!(find(&b, "java.cls.loadedClasses"), None);
        assert_eq!(find(&b[..40], UNLOADED_CLASSES), None);
        assert_eq!(
            find(b"not perf data at all, not at all", UNLOADED_CLASSES),
            None
        );
    }

    #[test]
    fn the_jvms_own_mapping_of_its_file() {
        let m = |path: &str| Mapping {
            start: 0x7000,
            end: 0xf000,
            exec: false,
            offset: 0,
            path: path.into(),
        };
        let maps = [m("/usr/lib/libjvm.so"), m("/tmp/hsperfdata_app/4242")];
        assert_eq!(perf_mapping(&maps, 4242).map(|m| m.start), Some(0x7000));
        assert_eq!(perf_mapping(&maps, 42), None);
        assert_eq!(perf_mapping(&maps[..1], 4242), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut b = b;
            if b.len() >= 4 {
                b[0..4].copy_from_slice(&MAGIC.to_be_bytes());
            }
            let _ = find(&b, UNLOADED_CLASSES);
        }
    }
}
