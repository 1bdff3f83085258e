//! Kernel struct offsets for the programs, read from the running kernel's BTF at start-up (Rust
//! eBPF has no CO-RE, and layouts differ between kernel builds). A group whose members are not
//! all found is left out, and what depends on it degrades with a warning.

use std::{io, os::fd::FromRawFd, path::Path};

use anyhow::{Context, Result};
use btf_rs::{Backend, Btf, Type};
use sockleak_common::kernel::{Offsets, have};

/// The kernel's BTF, parsed lazily. Before Linux 6.16, mmap of /sys/kernel/btf/vmlinux fails
/// with ENODEV (sysfs binary attributes could not be mapped), and a full parse takes seconds in
/// a debug build; so the file is read into an anonymous memory file and that is mapped: one
/// copy of a few MB, then lookups as lazy as a direct map, on every kernel.
pub fn load_btf(path: &Path) -> Result<Btf> {
    let mut src =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid NUL-terminated name; the returned fd is owned by `mem` below.
    let fd = unsafe { libc::memfd_create(c"sockleak-btf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("memfd_create for the kernel BTF");
    }
    // SAFETY: fd was just created and nothing else owns it.
    let mut mem = unsafe { std::fs::File::from_raw_fd(fd) };
    io::copy(&mut src, &mut mem).with_context(|| format!("reading {}", path.display()))?;
    // btf-rs maps by path: the memory file's /proc entry opens the same file.
    Btf::from_file_with_backend(format!("/proc/self/fd/{fd}"), Backend::Mmap)
        .with_context(|| format!("parsing {}", path.display()))
}

/// Byte offset of `path` ("a.b": members, descending into named and anonymous struct/union
/// members) inside struct or union `name`.
pub fn offset_of(btf: &Btf, name: &str, path: &str) -> Option<u32> {
    let ty = btf
        .resolve_types_by_name(name)
        .ok()?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(s) | Type::Union(s) if !s.members.is_empty()))?;
    let mut cur = ty;
    let mut total = 0u32;
    for part in path.split('.') {
        let (off, next) = member(btf, &cur, part)?;
        total += off;
        cur = next;
    }
    Some(total)
}

/// Finds member `name` of a struct/union type, looking through anonymous members.
fn member(btf: &Btf, ty: &Type, name: &str) -> Option<(u32, Type)> {
    let (Type::Struct(s) | Type::Union(s)) = ty else {
        return None;
    };
    for m in &s.members {
        let mname = btf.resolve_name(m).unwrap_or_default();
        let mty = strip(btf, btf.resolve_chained_type(m).ok()?);
        if mname == name {
            return Some((m.bit_offset() / 8, mty));
        }
        if mname.is_empty()
            && let Some((off, t)) = member(btf, &mty, name)
        {
            return Some((m.bit_offset() / 8 + off, t));
        }
    }
    None
}

/// Looks through typedefs and qualifiers.
fn strip(btf: &Btf, mut ty: Type) -> Type {
    for _ in 0..16 {
        match &ty {
            Type::Typedef(_)
            | Type::Const(_)
            | Type::Volatile(_)
            | Type::Restrict(_)
            | Type::TypeTag(_) => match ty
                .as_btf_type()
                .and_then(|t| btf.resolve_chained_type(t).ok())
            {
                Some(next) => ty = next,
                None => break,
            },
            _ => break,
        }
    }
    ty
}

/// `task_struct.thread.fsbase`: a user thread's fsbase, its `struct pthread` under glibc (what
/// CPython's frame walk starts from). x86_64 only; None elsewhere or when BTF lacks it.
pub fn task_fsbase(btf: &Btf) -> Option<u32> {
    if !cfg!(target_arch = "x86_64") {
        return None;
    }
    offset_of(btf, "task_struct", "thread.fsbase")
}

/// Reads every offset group sockleak uses; `missing` names the groups that could not be found.
pub fn read(btf: &Btf) -> (Offsets, Vec<&'static str>) {
    let mut o = Offsets::default();
    let mut missing = Vec::new();
    let f = |s: &str, p: &str| offset_of(btf, s, p);
    match (
        f("task_struct", "files"),
        f("files_struct", "fdt"),
        f("fdtable", "max_fds"),
        f("fdtable", "fd"),
        f("fdtable", "open_fds"),
        f("file", "f_inode"),
        f("inode", "i_mode"),
    ) {
        (Some(a), Some(b), Some(c), Some(d), Some(e), Some(g), Some(h)) => {
            o.task_files = a;
            o.files_fdt = b;
            o.fdt_max_fds = c;
            o.fdt_fd = d;
            o.fdt_open_fds = e;
            o.file_inode = g;
            o.inode_mode = h;
            o.valid |= have::FDTABLE;
        }
        _ => missing.push("the fd table (task_struct.files ... inode.i_mode)"),
    }
    match (
        f("file", "private_data"),
        f("inode", "i_private"),
        f("pid", "numbers"),
    ) {
        (Some(a), Some(b), Some(c)) if o.valid & have::FDTABLE != 0 => {
            o.file_private = a;
            o.inode_private = b;
            o.pid_numbers = c;
            o.valid |= have::PIDFD;
        }
        _ => missing.push("pidfd senders (file.private_data, inode.i_private, pid.numbers)"),
    }
    match (
        f("io_kiocb", "opcode"),
        f("io_kiocb", "cmd"),
        f("io_accept", "file_slot"),
        f("io_socket", "file_slot"),
        f("io_close", "fd"),
        f("io_close", "file_slot"),
    ) {
        (Some(a), Some(b), Some(c), Some(d), Some(e), Some(g)) => {
            o.req_opcode = a;
            o.req_cmd = b;
            o.accept_file_slot = c;
            o.socket_file_slot = d;
            o.close_fd = e;
            o.close_file_slot = g;
            o.valid |= have::IO_URING;
        }
        _ => missing.push("io_uring requests (io_kiocb, io_accept, io_socket, io_close)"),
    }
    (o, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF (every machine sockleak runs on has it; no privilege needed).
    #[test]
    fn offsets_of_the_running_kernel() {
        let btf = load_btf(Path::new(crate::kernel::preflight::BTF)).expect("kernel BTF loads");
        let (o, missing) = read(&btf);
        assert!(missing.is_empty(), "{missing:?}");
        // Stable facts: the fdtable starts with max_fds; an upid's nr is its first field; the
        // command data of an io_kiocb shares its first bytes with the file pointer.
        assert_eq!(o.fdt_max_fds, 0);
        assert_eq!(o.fdt_fd, 8);
        assert_eq!(o.req_cmd, 0);
        assert_eq!(o.close_fd, 8);
        assert!(o.task_files > 0 && o.pid_numbers > 0);
        assert_eq!(offset_of(&btf, "task_struct", "no_such_member"), None);
        assert_eq!(offset_of(&btf, "no_such_struct", "x"), None);
        // A member inside an anonymous union is found through it.
        assert_eq!(offset_of(&btf, "io_kiocb", "file"), Some(0));
        // Deep in task_struct (thread is its last member), 8-aligned.
        let fs = task_fsbase(&btf).expect("x86_64 kernels have thread.fsbase");
        assert!(fs > 1024 && fs.is_multiple_of(8), "{fs}");
        // The copy in memory reads as the file does (a full parse of the file as the reference).
        let full = Btf::from_file(crate::kernel::preflight::BTF).expect("kernel BTF parses");
        assert_eq!(read(&full), read(&btf));
    }

    /// A file that cannot be read is an error naming it, not a panic.
    #[test]
    fn unreadable_btf_is_named() {
        let Err(err) = load_btf(Path::new("/nonexistent/vmlinux")) else {
            panic!("a missing file loaded");
        };
        assert!(
            format!("{err:#}").contains("/nonexistent/vmlinux"),
            "{err:#}"
        );
    }
}
