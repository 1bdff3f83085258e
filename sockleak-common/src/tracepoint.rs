//! Fields the programs read from tracepoint records at fixed offsets. Userspace checks each
//! against the running kernel's `format` file before attaching, so a kernel with another layout
//! degrades with a warning instead of feeding the programs the wrong bytes.

/// A field the programs read: (name in the format file, byte offset in the record).
pub type Field = (&'static str, usize);

/// `syscalls:sys_exit_*`: `ret`, after the 8-byte common header and the padded `__syscall_nr`.
pub mod sys_exit {
    pub const RET: usize = 16;
    pub const FIELDS: &[super::Field] = &[("ret", RET)];
}

/// `syscalls:sys_enter_close`: its one argument.
pub mod sys_enter_close {
    pub const FD: usize = 16;
    pub const FIELDS: &[super::Field] = &[("fd", FD)];
}

/// `task:task_newtask`.
pub mod task_newtask {
    pub const PID: usize = 8;
    pub const CLONE_FLAGS: usize = 32;
    pub const FIELDS: &[super::Field] = &[("pid", PID), ("clone_flags", CLONE_FLAGS)];
}

/// `io_uring:io_uring_submit_req` (6.4+; `io_uring_submit_sqe` before, same fields).
pub mod uring_submit {
    pub const CTX: usize = 8;
    pub const REQ: usize = 16;
    pub const USER_DATA: usize = 24;
    pub const OPCODE: usize = 32;
    pub const FIELDS: &[super::Field] = &[
        ("ctx", CTX),
        ("req", REQ),
        ("user_data", USER_DATA),
        ("opcode", OPCODE),
    ];
}

/// `io_uring:io_uring_complete`.
pub mod uring_complete {
    pub const CTX: usize = 8;
    pub const REQ: usize = 16;
    pub const USER_DATA: usize = 24;
    pub const RES: usize = 32;
    pub const CFLAGS: usize = 36;
    pub const FIELDS: &[super::Field] = &[
        ("ctx", CTX),
        ("req", REQ),
        ("user_data", USER_DATA),
        ("res", RES),
        ("cflags", CFLAGS),
    ];
}
