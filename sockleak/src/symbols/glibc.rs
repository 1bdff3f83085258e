//! Where glibc keeps a thread's pthread-specific data (`pthread_getspecific`): CPython binds
//! each thread's state to a pthread key, and the kernel walk reads that slot from the thread's
//! `struct pthread` (its fsbase). The layout comes from the descriptors glibc exports for
//! libthread_db (`_thread_db_*`, in libc.so.6 since 2.34 and libpthread before), not from a
//! table of glibc versions.

use crate::{
    host::procfs::Mapping,
    symbols::elf::{ElfInfo, mapped_file},
};

/// The slot of key `k` (below `keys`) is at `fsbase + first + k * stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tsd {
    pub first: u32,
    pub stride: u32,
    pub keys: u32,
}

const SPECIFIC: &str = "_thread_db_pthread_specific";
const LEVEL2: &str = "_thread_db_pthread_key_data_level2_data";
const SIZEOF_KEY_DATA: &str = "_thread_db_sizeof_pthread_key_data";
const KEY_DATA_DATA: &str = "_thread_db_pthread_key_data_data";

/// From the descriptors' bytes: a field is `{size in bits, count, offset}` (three u32), a size
/// one u32. `specific_1stblock` is the array right before `specific[]`.
pub fn tsd_from(desc: impl Fn(&str) -> Option<Vec<u8>>) -> Option<Tsd> {
    let u32_at = |b: &[u8], i: usize| {
        Some(u32::from_le_bytes(
            b.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    let specific = desc(SPECIFIC)?;
    let level2 = desc(LEVEL2)?;
    let size = desc(SIZEOF_KEY_DATA)?;
    let data = desc(KEY_DATA_DATA)?;
    let stride = u32_at(&size, 0)?;
    let keys = u32_at(&level2, 1)?;
    let first = u32_at(&specific, 2)?
        .checked_sub(keys.checked_mul(stride)?)?
        .checked_add(u32_at(&data, 2)?)?;
    (stride >= 8 && (1..=1024).contains(&keys) && first < 8192).then_some(Tsd {
        first,
        stride,
        keys,
    })
}

/// The layout of the glibc `pid` runs with; None when it is not glibc (musl) or the
/// descriptors are missing.
pub fn tsd(pid: u32, maps: &[Mapping]) -> Option<Tsd> {
    let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let libs: Vec<&Mapping> = maps
        .iter()
        .filter(|m| {
            let b = base(&m.path);
            m.offset == 0
                && (b.starts_with("libc.so")
                    || b.starts_with("libc-2")
                    || b.starts_with("libpthread"))
        })
        .collect();
    let wanted = [SPECIFIC, LEVEL2, SIZEOF_KEY_DATA, KEY_DATA_DATA];
    let elfs: Vec<ElfInfo> = libs
        .iter()
        .filter_map(|m| ElfInfo::read(&mapped_file(pid, m), &wanted))
        .collect();
    tsd_from(|name| {
        elfs.iter().find_map(|e| {
            let (va, size) = *e.symbols.get(name)?;
            e.read_vaddr(va, usize::try_from(size).ok()?.clamp(4, 12))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(size: u32, count: u32, off: u32) -> Vec<u8> {
        [size, count, off]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    #[test]
    fn glibc_236_layout() {
        // Debian 12's libc.so.6 (glibc 2.36), as read from its _thread_db_* symbols.
        let desc = |n: &str| match n {
            SPECIFIC => Some(field(64, 32, 0x510)),
            LEVEL2 => Some(field(128, 32, 0)),
            SIZEOF_KEY_DATA => Some(16u32.to_le_bytes().to_vec()),
            KEY_DATA_DATA => Some(field(64, 1, 8)),
            _ => None,
        };
        assert_eq!(
            tsd_from(desc),
            Some(Tsd {
                first: 0x318,
                stride: 16,
                keys: 32
            })
        );
        assert_eq!(
            tsd_from(|n| (n != SPECIFIC).then(|| desc(n)).flatten()),
            None
        );
        assert_eq!(tsd_from(|n| desc(n).map(|b| b[..2].to_vec())), None);
    }

    #[test]
    fn this_process_libc() {
        let maps = crate::host::procfs::maps(std::process::id());
        let t = tsd(std::process::id(), &maps).expect("tests run on glibc");
        assert_eq!((t.stride, t.keys), (16, 32));
        // pthread_getspecific through the layout equals the real thing.
        let key = unsafe {
            let mut k: libc::pthread_key_t = 0;
            assert_eq!(libc::pthread_key_create(&mut k, None), 0);
            libc::pthread_setspecific(k, 0x1234_5678 as *const libc::c_void);
            k
        };
        assert!(key < t.keys, "a key of the first block ({key})");
        let fsbase = unsafe { libc::pthread_self() } as u64;
        let slot = fsbase + u64::from(t.first) + u64::from(key) * u64::from(t.stride);
        assert_eq!(unsafe { *(slot as *const u64) }, 0x1234_5678);
        unsafe { libc::pthread_key_delete(key) };
    }
}
