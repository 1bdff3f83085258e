//! sockleak's kernel half: tracepoint programs that keep a live-socket map and counters per
//! traced process, and send userspace only the rare events (fork, exec, exit, failures, new call
//! sites).
//!
//! Only syscall, scheduler and io_uring tracepoints are used: kprobes and fentry are not
//! available everywhere sockleak must run. Results are read at syscall exit, so failed calls
//! (EMFILE on accept4, EADDRNOTAVAIL on connect) are seen too.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
// Inline asm hides search bounds from the verifier (see unwind.rs).
#![feature(asm_experimental_arch)]
#![allow(internal_features)]

mod args;
mod atomic;
mod clock;
mod close;
mod connect;
mod dup;
mod emit;
mod fdtable;
mod filter;
mod golang;
mod hotspot;
mod lifecycle;
mod maps;
mod node;
mod open;
mod python;
mod received;
mod runtime;
mod stack;
mod unwind;
mod uring;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never called.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
