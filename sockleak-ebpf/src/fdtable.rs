//! The current process's fd table, read with offsets userspace found in the kernel's BTF:
//! how many fds it can hold, whether an fd is open, whether it is a socket, and the process
//! behind a pidfd. Without the offsets (`have::FDTABLE` clear) every answer is "unknown".

use aya_ebpf::helpers::{bpf_probe_read_kernel, generated::bpf_get_current_task};
use sockleak_common::kernel::have;

use crate::maps::offsets;

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

#[inline(always)]
fn read_ptr(at: u64) -> Option<u64> {
    let v: u64 = unsafe { bpf_probe_read_kernel(at as *const u64) }.ok()?;
    (v != 0).then_some(v)
}

/// The current task's fdtable (`current->files->fdt`).
#[derive(Clone, Copy)]
pub struct FdTable {
    fdt: u64,
    pub max_fds: u32,
}

impl FdTable {
    #[inline(always)]
    pub fn current() -> Option<FdTable> {
        let o = offsets();
        if o.valid & have::FDTABLE == 0 {
            return None;
        }
        let task = unsafe { bpf_get_current_task() };
        let files = read_ptr(task + u64::from(o.task_files))?;
        let fdt = read_ptr(files + u64::from(o.files_fdt))?;
        let max_fds: u32 =
            unsafe { bpf_probe_read_kernel((fdt + u64::from(o.fdt_max_fds)) as *const u32) }
                .ok()?;
        Some(FdTable { fdt, max_fds })
    }

    /// `struct file *` of an open fd.
    #[inline(always)]
    pub fn file(&self, fd: u32) -> Option<u64> {
        if fd >= self.max_fds {
            return None;
        }
        let array = read_ptr(self.fdt + u64::from(offsets().fdt_fd))?;
        read_ptr(array + u64::from(fd) * 8)
    }

    /// Whether `fd` is open (it may be any kind of file).
    #[inline(always)]
    pub fn is_open(&self, fd: u32) -> bool {
        self.file(fd).is_some()
    }
}

/// Whether a `struct file *` is a socket (its inode's mode is S_IFSOCK).
#[inline(always)]
pub fn is_socket(file: u64) -> bool {
    let o = offsets();
    let Some(inode) = read_ptr(file + u64::from(o.file_inode)) else {
        return false;
    };
    let mode: u16 =
        unsafe { bpf_probe_read_kernel((inode + u64::from(o.inode_mode)) as *const u16) }
            .unwrap_or(0);
    mode & S_IFMT == S_IFSOCK
}

/// The pid (in the initial namespace) a pidfd file refers to; 0 when unknown.
#[inline(always)]
pub fn pidfd_pid(file: u64) -> u32 {
    let o = offsets();
    if o.valid & have::PIDFD == 0 {
        return 0;
    }
    // pidfs keeps the pid in the inode; before it, the file held it.
    let in_inode = read_ptr(file + u64::from(o.file_inode))
        .and_then(|inode| read_ptr(inode + u64::from(o.inode_private)));
    let Some(pid) = in_inode.or_else(|| read_ptr(file + u64::from(o.file_private))) else {
        return 0;
    };
    unsafe { bpf_probe_read_kernel((pid + u64::from(o.pid_numbers)) as *const i32) }
        .map_or(0, |v| v as u32)
}
