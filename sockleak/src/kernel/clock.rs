//! Calibrating the kernel's cheap clock (see `sockleak_common::target::Clock`): the programs
//! stamp new sockets with jiffies turned into CLOCK_MONOTONIC ns, which needs the kernel's tick
//! rate and a reference point. Both come from one run of the object's `clock_probe` program
//! (BPF_PROG_TEST_RUN), which reads jiffies and the precise clock together.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use sockleak_common::target::{Clock, ClockSample};

/// Tick rates Linux is built with.
const CANDIDATE_HZ: [u64; 7] = [100, 250, 300, 1000, 24, 48, 1024];

/// `INITIAL_JIFFIES`: jiffies start 5 minutes before wrapping 32 bits, to catch wrap bugs.
fn initial_jiffies(hz: u64) -> u64 {
    (1u64 << 32).wrapping_sub(300 * hz) & 0xffff_ffff
}

/// The tick rate that makes jiffies agree with CLOCK_MONOTONIC (time since boot): the elapsed
/// ticks over the candidate rate must match the elapsed time, within 5 s plus 1%. None when no
/// candidate, or more than one, fits.
pub fn pick_hz(s: ClockSample) -> Option<u64> {
    let fits: Vec<u64> = CANDIDATE_HZ
        .iter()
        .copied()
        .filter(|hz| {
            let ticks = s.jiffies.wrapping_sub(initial_jiffies(*hz));
            if ticks > 1 << 48 {
                return false;
            }
            let predicted = ticks as f64 / *hz as f64;
            let uptime = s.ns as f64 / 1e9;
            (predicted - uptime).abs() <= 5.0 + uptime * 0.01
        })
        .collect();
    match fits[..] {
        [hz] => Some(hz),
        _ => None,
    }
}

/// The conversion for a reading: the base is set one tick early, so a converted time lags the
/// precise clock (by up to two ticks) and never runs ahead of it.
pub fn clock_from(s: ClockSample) -> Clock {
    match pick_hz(s) {
        Some(hz) => Clock {
            hz,
            base_jiffies: s.jiffies,
            base_ns: s.ns.saturating_sub(1_000_000_000 / hz),
        },
        None => Clock::default(),
    }
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// `union bpf_attr` as BPF_PROG_TEST_RUN reads it.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
}

/// Runs a loaded raw-tracepoint program once, with one zero argument.
pub fn test_run(prog: &impl AsFd) -> io::Result<()> {
    let args = [0u64; 1];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_fd().as_raw_fd() as u32,
        ctx_size_in: std::mem::size_of_val(&args) as u32,
        ctx_in: args.as_ptr() as u64,
        ..TestRunAttr::default()
    };
    // SAFETY: the attr is a valid BPF_PROG_TEST_RUN argument with no buffers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_rate_from_a_reading() {
        // Read on a HZ=250 machine 3691 s after boot.
        let s = ClockSample {
            jiffies: 4_295_815_136,
            ns: 3_691_516_809_257,
        };
        assert_eq!(pick_hz(s), Some(250));
        let c = clock_from(s);
        assert_eq!((c.hz, c.base_jiffies), (250, s.jiffies));
        assert_eq!(c.base_ns, s.ns - 4_000_000);
        // The same uptime at HZ=1000.
        let s1000 = ClockSample {
            jiffies: initial_jiffies(1000) + 3_691_516,
            ns: 3_691_516_809_257,
        };
        assert_eq!(pick_hz(s1000), Some(1000));
        // Nothing fits: the precise clock is used.
        let odd = ClockSample {
            jiffies: 12,
            ns: 3_691_516_809_257,
        };
        assert_eq!(pick_hz(odd), None);
        assert_eq!(clock_from(odd).hz, 0);
    }
}
