//! The kernel unwinder's maps, from userspace (the tables themselves are built in
//! `symbols::unwind_tables`): the row array, written through a shared mapping of the
//! `BPF_F_MMAPABLE` array (one `memcpy` per file instead of one syscall per row), the
//! per-process mapping lists, and the walk counters.

use std::os::fd::{AsFd as _, AsRawFd};

use anyhow::{Context, Result, bail};
use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use sockleak_common::unwind::{UnwindProc, UnwindRow, counter};

/// The UNWIND_ROWS array, mapped into this process.
struct RowsMmap {
    ptr: *mut UnwindRow,
    rows: u32,
    len: usize,
    /// Held so the mapping's map stays alive.
    _map: MapData,
}

// SAFETY: the mapping is owned by this value; nothing else in the process aliases it.
unsafe impl Send for RowsMmap {}

impl Drop for RowsMmap {
    fn drop(&mut self) {
        // SAFETY: ptr/len are the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

impl RowsMmap {
    fn new(map: MapData, rows: u32) -> Result<RowsMmap> {
        let page = 4096usize;
        let len = (rows as usize * size_of::<UnwindRow>()).div_ceil(page) * page;
        // SAFETY: a shared mapping of a BPF_F_MMAPABLE array of `rows` 8-byte values; the
        // kernel checks the length against the map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!(
                "mapping the kernel's unwind row array ({} KiB): {}",
                len / 1024,
                std::io::Error::last_os_error()
            );
        }
        Ok(RowsMmap {
            ptr: ptr.cast(),
            rows,
            len,
            _map: map,
        })
    }
}

pub struct UnwindMaps {
    rows: RowsMmap,
    procs: HashMap<MapData, u32, UnwindProc>,
    counts: PerCpuArray<MapData, u64>,
}

impl UnwindMaps {
    pub fn new(rows: Map, capacity: u32, procs: Map, counts: Map) -> Result<UnwindMaps> {
        let Map::Array(rows) = rows else {
            bail!("the kernel's unwind row array is not an array");
        };
        Ok(UnwindMaps {
            rows: RowsMmap::new(rows, capacity)?,
            procs: HashMap::try_from(procs).context("the kernel's unwind process map")?,
            counts: PerCpuArray::try_from(counts).context("the kernel's unwind counters")?,
        })
    }

    /// Rows the array holds.
    pub fn capacity(&self) -> u32 {
        self.rows.rows
    }

    /// Writes rows at `first` (the kernel sees them once a process's mappings point there).
    pub fn write_rows(&mut self, first: u32, rows: &[UnwindRow]) -> Result<()> {
        let end = first as usize + rows.len();
        if end > self.rows.rows as usize {
            bail!("rows {first}..{end} beyond the array's {}", self.rows.rows);
        }
        // SAFETY: in bounds (checked above) of a mapping this value owns; rows are plain data.
        unsafe {
            std::ptr::copy_nonoverlapping(
                rows.as_ptr(),
                self.rows.ptr.add(first as usize),
                rows.len(),
            )
        };
        Ok(())
    }

    /// Rows as the kernel reads them (tests and checks).
    pub fn read_rows(&self, first: u32, n: u32) -> Vec<UnwindRow> {
        let end = (first as usize + n as usize).min(self.rows.rows as usize);
        let start = (first as usize).min(end);
        // SAFETY: in bounds of the mapping; UnwindRow is plain data.
        unsafe { std::slice::from_raw_parts(self.rows.ptr.add(start), end - start) }.to_vec()
    }

    pub fn set_proc(&mut self, tgid: u32, p: &UnwindProc) -> Result<()> {
        self.procs
            .insert(tgid, p, 0)
            .with_context(|| format!("writing pid {tgid}'s unwind mappings"))
    }

    pub fn remove_proc(&mut self, tgid: u32) {
        // Absent already (the kernel drops it at exec and exit) is fine.
        let _ = self.procs.remove(&tgid);
    }

    /// Whether the kernel still holds the process's mappings (it drops them at exec).
    pub fn has_proc(&self, tgid: u32) -> bool {
        self.procs.get(&tgid, 0).is_ok()
    }

    /// The walk counters (`unwind::counter`), summed over CPUs.
    pub fn counts(&self) -> [u64; counter::COUNT as usize] {
        let mut out = [0u64; counter::COUNT as usize];
        for (i, o) in out.iter_mut().enumerate() {
            if let Ok(v) = self.counts.get(&(i as u32), 0) {
                *o = v.iter().sum();
            }
        }
        out
    }
}
