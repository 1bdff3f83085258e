//! Reading another process's memory through `/proc/PID/mem`: what names the frames of
//! interpreted code (CPython's code objects, HotSpot's methods). Read-only, no ptrace stop.
//!
//! The file is opened once per process image and kept: it is bound to the address space it
//! was opened on, so after the process execs or exits every read through it fails instead of
//! reading the new image's memory (the kernel drops the old address space).
//!
//! Decoders take a [`Memory`], so unit tests drive them with recorded bytes ([`Recorded`]).

use std::{fs::File, os::unix::fs::FileExt};

/// Why a read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// Unmapped, or the address space is gone (exit, exec).
    Unreadable(u64),
    /// A value read is not what the layout says it must be.
    Invalid(&'static str),
}

impl std::fmt::Display for MemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemError::Unreadable(a) => write!(f, "memory at {a:#x} is not readable"),
            MemError::Invalid(what) => write!(f, "{what}"),
        }
    }
}

/// Memory of one process image.
pub trait Memory {
    /// Fills `buf` from `addr`; a short read is an error.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;

    fn bytes(&self, addr: u64, n: usize) -> Result<Vec<u8>, MemError> {
        let mut b = vec![0; n];
        self.read(addr, &mut b)?;
        Ok(b)
    }

    fn u64(&self, addr: u64) -> Result<u64, MemError> {
        let mut b = [0; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn u32(&self, addr: u64) -> Result<u32, MemError> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn i32(&self, addr: u64) -> Result<i32, MemError> {
        self.u32(addr).map(|v| v as i32)
    }

    fn u16(&self, addr: u64) -> Result<u16, MemError> {
        let mut b = [0; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn u8(&self, addr: u64) -> Result<u8, MemError> {
        let mut b = [0; 1];
        self.read(addr, &mut b)?;
        Ok(b[0])
    }

    /// A NUL-terminated string of at most `max` bytes (read in small chunks: it may end just
    /// before unmapped memory).
    fn cstr(&self, addr: u64, max: usize) -> Result<String, MemError> {
        let mut out = Vec::new();
        while out.len() < max {
            let at = addr + out.len() as u64;
            // Never across a page boundary: the next page may be unmapped.
            let chunk = (64 - (at % 64) as usize).min(max - out.len());
            // A string may end right before unreadable memory: then byte by byte.
            let b = match self.bytes(at, chunk) {
                Ok(b) => b,
                Err(_) => vec![self.u8(at)?],
            };
            if let Some(i) = b.iter().position(|c| *c == 0) {
                out.extend_from_slice(&b[..i]);
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(&b);
        }
        Err(MemError::Invalid("string without an end"))
    }
}

/// `/proc/PID/mem` of one process image.
#[derive(Debug)]
pub struct ProcMem {
    file: File,
}

impl ProcMem {
    /// Opens the memory of `pid`'s current image. Needs CAP_SYS_PTRACE (or the same user).
    pub fn open(pid: u32) -> std::io::Result<ProcMem> {
        Ok(ProcMem {
            file: File::open(crate::host::procfs::proc_path(pid, "mem"))?,
        })
    }
}

impl Memory for ProcMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        // Addresses past the user half are never the process's (and pread would take them as
        // a negative offset).
        if addr == 0
            || addr
                .checked_add(buf.len() as u64)
                .is_none_or(|e| e >= 1 << 63)
        {
            return Err(MemError::Unreadable(addr));
        }
        match self.file.read_at(buf, addr) {
            Ok(n) if n == buf.len() => Ok(()),
            _ => Err(MemError::Unreadable(addr)),
        }
    }
}

/// Memory as recorded: regions of bytes at addresses (unit tests of the decoders).
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    regions: Vec<(u64, Vec<u8>)>,
}

impl Recorded {
    pub fn add(&mut self, addr: u64, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.regions.push((addr, bytes.into()));
        self
    }

    pub fn add_u64(&mut self, addr: u64, v: u64) -> &mut Self {
        self.add(addr, v.to_le_bytes())
    }

    pub fn add_u32(&mut self, addr: u64, v: u32) -> &mut Self {
        self.add(addr, v.to_le_bytes())
    }

    pub fn add_u16(&mut self, addr: u64, v: u16) -> &mut Self {
        self.add(addr, v.to_le_bytes())
    }
}

impl Memory for Recorded {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        // Byte by byte from the latest region holding it: later writes overlay earlier ones.
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr + i as u64;
            *b = self
                .regions
                .iter()
                .rev()
                .find_map(|(start, data)| {
                    a.checked_sub(*start)
                        .and_then(|o| data.get(usize::try_from(o).ok()?))
                })
                .copied()
                .ok_or(MemError::Unreadable(a))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory_reads_and_unmapped_fails() {
        let v: u64 = 0x1122_3344_5566_7788;
        let m = ProcMem::open(std::process::id()).unwrap();
        assert_eq!(m.u64(&v as *const u64 as u64), Ok(v));
        let s = b"hello\0";
        assert_eq!(m.cstr(s.as_ptr() as u64, 64).unwrap(), "hello");
        assert!(m.u64(8).is_err(), "page 0 is never mapped");
        assert!(m.u64(u64::MAX - 3).is_err());
    }

    #[test]
    fn recorded_overlays_and_bounds() {
        let mut r = Recorded::default();
        r.add(0x1000, vec![1, 2, 3, 4]).add(0x1002, vec![9]);
        assert_eq!(r.bytes(0x1000, 4).unwrap(), vec![1, 2, 9, 4]);
        assert_eq!(r.bytes(0x1002, 4), Err(MemError::Unreadable(0x1004)));
        r.add(0x2000, b"abc\0".to_vec());
        assert_eq!(r.cstr(0x2000, 16).unwrap(), "abc");
        r.add(0x3000, b"abcdef".to_vec());
        assert!(r.cstr(0x3000, 4).is_err());
    }
}
