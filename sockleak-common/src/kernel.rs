//! Kernel struct offsets the programs need, read by userspace from the running kernel's BTF at
//! start-up (Rust eBPF has no CO-RE): never baked in.

/// `Offsets::valid` bits: which groups of offsets were found.
pub mod have {
    /// task_struct -> files_struct -> fdtable -> file -> inode: walking a process's fd table.
    pub const FDTABLE: u32 = 1;
    /// file -> f_inode -> i_private (pidfs; older kernels: file -> private_data) -> pid ->
    /// numbers[0].nr: the process behind a pidfd.
    pub const PIDFD: u32 = 2;
    /// io_kiocb and the accept/socket/close commands inside it.
    pub const IO_URING: u32 = 4;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// `have::*` bits.
    pub valid: u32,
    /// task_struct.files
    pub task_files: u32,
    /// files_struct.fdt
    pub files_fdt: u32,
    /// fdtable.max_fds (unsigned int)
    pub fdt_max_fds: u32,
    /// fdtable.fd (struct file **)
    pub fdt_fd: u32,
    /// fdtable.open_fds (unsigned long *)
    pub fdt_open_fds: u32,
    /// file.f_inode
    pub file_inode: u32,
    /// file.private_data
    pub file_private: u32,
    /// inode.i_private
    pub inode_private: u32,
    /// inode.i_mode (umode_t)
    pub inode_mode: u32,
    /// pid.numbers (the first upid's `nr` is the pid in the initial namespace)
    pub pid_numbers: u32,
    /// io_kiocb.opcode (u8)
    pub req_opcode: u32,
    /// io_kiocb.cmd: the per-opcode command data
    pub req_cmd: u32,
    /// io_accept.file_slot, io_socket.file_slot (u32; non-zero: a fixed-file descriptor)
    pub accept_file_slot: u32,
    pub socket_file_slot: u32,
    /// io_close.fd (int), io_close.file_slot (u32)
    pub close_fd: u32,
    pub close_file_slot: u32,
    pub _pad: u32,
}
crate::assert_layout!(
    Offsets,
    size = 72,
    fields = [
        u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32, u32
    ]
);

/// io_uring opcodes (uapi, stable).
pub mod uring_op {
    pub const ACCEPT: u8 = 13;
    pub const CLOSE: u8 = 19;
    pub const SOCKET: u8 = 45;
}

/// `IORING_CQE_F_MORE`: a multishot request will post more completions.
pub const CQE_F_MORE: u32 = 2;

/// Key of URING_SITES: an in-flight io_uring request, as its completions name it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UringKey {
    /// The ring (`struct io_ring_ctx *`).
    pub ctx: u64,
    pub user_data: u64,
}
crate::assert_layout!(UringKey, size = 16, fields = [u64, u64]);

/// Value of URING_SITES: what the submission said about a socket-making request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UringSite {
    pub caller: u64,
    pub stack_id: i32,
    /// Submitting thread.
    pub tid: u32,
    pub opcode: u8,
    /// Non-zero: the result is a fixed-file slot, not an fd.
    pub direct: u8,
    pub _pad: [u8; 6],
}
crate::assert_layout!(
    UringSite,
    size = 24,
    fields = [u64, i32, u32, u8, u8, [u8; 6]]
);

#[cfg(feature = "user")]
mod user {
    // SAFETY: repr(C), every bit pattern valid, no padding (see assert_layout!).
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::UringKey {}
    unsafe impl aya::Pod for super::UringSite {}
}
