//! Reading a whole BPF hash map with BPF_MAP_LOOKUP_BATCH: a few syscalls for the map instead of
//! two per entry (aya iterates with get_next_key + lookup).

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::Pod;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries asked for per syscall.
const CHUNK: usize = 4096;

/// `union bpf_attr` as BPF_MAP_*_BATCH reads it.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every (key, value) of a hash map. Entries changing meanwhile may be seen in either state.
pub fn dump<K: Pod, V: Pod>(map: &impl AsFd) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    for_each(map, |k, v| out.push((k, v)))?;
    Ok(out)
}

/// Calls `f` with every (key, value) of a hash map, a chunk at a time (memory stays one chunk
/// however large the map).
pub fn for_each<K: Pod, V: Pod>(map: &impl AsFd, mut f: impl FnMut(K, V)) -> io::Result<()> {
    let fd = map.as_fd().as_raw_fd();
    let mut keys: Vec<K> = Vec::with_capacity(CHUNK);
    let mut values: Vec<V> = Vec::with_capacity(CHUNK);
    // Hash-map batch tokens are bucket indexes (u32); 8 bytes leaves room.
    let mut token_in = [0u8; 8];
    let mut token_out = [0u8; 8];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                token_in.as_mut_ptr() as u64
            },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the attr points at buffers of CHUNK keys and values, which outlive the call;
        // the kernel writes at most `count` of each.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        let n = (attr.count as usize).min(CHUNK);
        // SAFETY: the kernel filled `n` Pod keys and values (any bit pattern is valid).
        unsafe {
            keys.set_len(n);
            values.set_len(n);
        }
        for (k, v) in keys.drain(..).zip(values.drain(..)) {
            f(k, v);
        }
        match err {
            // ENOENT: the last batch (possibly empty) was returned.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Some(e) => return Err(e),
            None => {}
        }
        token_in = token_out;
        first = false;
    }
}
