//! Naming a Python frame from its code object: function (qualified name from 3.11), file and
//! line, read through the process's memory. A code object is read once and cached; each use
//! re-reads its head (one read) and takes the cache only if the head is the same, so a code
//! object freed and its memory reused is read anew, and a word that is not a code object
//! (garbage, a freed object) is refused rather than named.

use hashbrown::HashMap;

use super::{
    layout::{BYTES_DATA, Layout, OB_TYPE, STR_LENGTH, STR_STATE, VAR_SIZE},
    lines,
};
use crate::host::procmem::{MemError, Memory};

/// Longest name or path read; longer ones are refused as garbage.
const MAX_STR: i64 = 4096;
/// Largest line table read.
const MAX_TABLE: i64 = 1 << 20;

/// What a code object names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// `co_qualname` (3.11+) or `co_name`.
    pub name: String,
    pub file: String,
    pub firstlineno: i32,
    table: Vec<u8>,
}

/// A named frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub name: String,
    pub file: String,
    pub line: Option<u32>,
}

/// Code objects of one process image.
#[derive(Debug)]
pub struct CodeCache {
    layout: Layout,
    /// `&PyCode_Type` in the process.
    code_type: u64,
    /// By address: the head as read, and what it names.
    cache: HashMap<u64, (Vec<u8>, Code)>,
}

impl CodeCache {
    pub fn new(layout: Layout, code_type: u64) -> CodeCache {
        CodeCache {
            layout,
            code_type,
            cache: HashMap::new(),
        }
    }

    /// Bytes of a code object's head that identify it: every field the name comes from.
    fn head_len(&self) -> usize {
        let l = &self.layout;
        let last = [
            l.co_filename,
            l.co_name,
            l.co_qualname.unwrap_or(0),
            l.co_lines,
            l.co_firstlineno,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        last as usize + 8
    }

    /// Names the frame of code object `code` at position `at` (as the kernel recorded it: see
    /// `RtFrame::at`). An error says why it has no name.
    pub fn name(&mut self, mem: &impl Memory, code: u64, at: u64) -> Result<Named, MemError> {
        let head = mem.bytes(code, self.head_len())?;
        let word = |o: u32| {
            let o = o as usize;
            u64::from_le_bytes(head[o..o + 8].try_into().unwrap_or_default())
        };
        if word(OB_TYPE as u32) != self.code_type {
            return Err(MemError::Invalid("not a code object"));
        }
        let fresh = match self.cache.get(&code) {
            Some((h, c)) if *h == head => c.clone(),
            _ => {
                let l = &self.layout;
                let name = string(mem, l, word(l.co_qualname.unwrap_or(l.co_name)))?;
                let file = string(mem, l, word(l.co_filename))?;
                let first = i32::from_le_bytes(
                    head[l.co_firstlineno as usize..l.co_firstlineno as usize + 4]
                        .try_into()
                        .unwrap_or_default(),
                );
                let table = bytes(mem, word(l.co_lines))?;
                let c = Code {
                    name,
                    file,
                    firstlineno: first,
                    table,
                };
                self.cache.insert(code, (head, c.clone()));
                c
            }
        };
        let line = match (self.layout.minor, self.layout.co_code_adaptive) {
            (8 | 9, _) => lines::lnotab(&fresh.table, fresh.firstlineno, at as i32),
            (10, _) => lines::linetable_310(&fresh.table, fresh.firstlineno, at as i32),
            (_, Some(adaptive)) => {
                let start = code + u64::from(adaptive);
                let unit = (at as i64).wrapping_sub(start as i64) / 2;
                lines::locations(&fresh.table, fresh.firstlineno, unit)
            }
            _ => None,
        };
        Ok(Named {
            name: fresh.name,
            file: fresh.file,
            line,
        })
    }

    /// Code objects cached.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

/// A `str` (always compact for code objects' names): ASCII, Latin-1, UCS-2 or UCS-4.
pub fn string(mem: &impl Memory, l: &Layout, addr: u64) -> Result<String, MemError> {
    let hdr = mem.bytes(addr, l.compact_size as usize)?;
    let at = |o: u64, n: usize| &hdr[o as usize..o as usize + n];
    let len = i64::from_le_bytes(at(STR_LENGTH, 8).try_into().unwrap_or_default());
    let state = u32::from_le_bytes(at(STR_STATE, 4).try_into().unwrap_or_default());
    let (kind, compact, ascii) = ((state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1);
    if compact == 0 || !(0..=MAX_STR).contains(&len) {
        return Err(MemError::Invalid("not a compact str"));
    }
    let len = len as usize;
    if ascii != 0 {
        let b = mem.bytes(addr + u64::from(l.ascii_size), len)?;
        return Ok(String::from_utf8_lossy(&b).into_owned());
    }
    let data = addr + u64::from(l.compact_size);
    Ok(match kind {
        1 => mem
            .bytes(data, len)?
            .iter()
            .map(|c| char::from(*c))
            .collect(),
        2 => {
            let b = mem.bytes(data, len * 2)?;
            let units: Vec<u16> = b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        4 => mem
            .bytes(data, len * 4)?
            .chunks_exact(4)
            .map(|c| {
                char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => return Err(MemError::Invalid("not a str")),
    })
}

/// A `bytes` object's contents.
fn bytes(mem: &impl Memory, addr: u64) -> Result<Vec<u8>, MemError> {
    let n = mem.u64(addr + VAR_SIZE)? as i64;
    if !(0..=MAX_TABLE).contains(&n) {
        return Err(MemError::Invalid("not a bytes object"));
    }
    mem.bytes(addr + BYTES_DATA, n as usize)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::host::procmem::Recorded;

    pub const CODE_TYPE: u64 = 0x7f00_0000_1000;

    /// A compact ASCII str at `at` (layout `l`).
    pub fn put_str(m: &mut Recorded, l: &Layout, at: u64, s: &str) {
        let mut hdr = vec![0u8; l.compact_size as usize];
        hdr[16..24].copy_from_slice(&(s.len() as i64).to_le_bytes());
        // kind 1, compact, ascii.
        hdr[32..36].copy_from_slice(&((1u32 << 2) | (1 << 5) | (1 << 6)).to_le_bytes());
        m.add(at, hdr);
        m.add(at + u64::from(l.ascii_size), s.as_bytes().to_vec());
    }

    /// A code object at `at` named `name` in `file`, first line `first`, line table `table`
    /// (its objects at `objs`).
    pub fn put_code(
        m: &mut Recorded,
        l: &Layout,
        (at, objs): (u64, u64),
        (name, file, first): (&str, &str, i32),
        table: &[u8],
    ) {
        let mut head = vec![0u8; 256];
        head[8..16].copy_from_slice(&CODE_TYPE.to_le_bytes());
        let (sname, sfile, stab) = (objs, objs + 0x1000, objs + 0x2000);
        let put = |h: &mut Vec<u8>, o: u32, v: u64| {
            h[o as usize..o as usize + 8].copy_from_slice(&v.to_le_bytes())
        };
        put(&mut head, l.co_name, sname);
        if let Some(q) = l.co_qualname {
            put(&mut head, q, sname);
        }
        put(&mut head, l.co_filename, sfile);
        put(&mut head, l.co_lines, stab);
        head[l.co_firstlineno as usize..l.co_firstlineno as usize + 4]
            .copy_from_slice(&first.to_le_bytes());
        m.add(at, head);
        put_str(m, l, sname, name);
        put_str(m, l, sfile, file);
        m.add_u64(stab + VAR_SIZE, table.len() as u64);
        m.add(stab + BYTES_DATA, table.to_vec());
    }

    #[test]
    fn names_and_lines_per_version() {
        for minor in 8..=13u8 {
            let l = super::super::layout::for_minor(minor).unwrap();
            let mut m = Recorded::default();
            let code = 0x5000_0000;
            let table: Vec<u8> = match minor {
                // Bytes 0-1 line 11, 2-3 line 12.
                8 | 9 => vec![0, 1, 2, 1],
                // Bytes [0,2) line 11, [2,4) line 12.
                10 => vec![2, 1, 2, 1],
                // One unit line 11, one unit line 12 (code 13, svarint +1).
                _ => vec![0x80 | (13 << 3), 2, 0x80 | (13 << 3), 2],
            };
            put_code(
                &mut m,
                &l,
                (code, code + 0x1000),
                ("leak", "/srv/app.py", 10),
                &table,
            );
            let mut c = CodeCache::new(l, CODE_TYPE);
            // The second instruction.
            let at = match minor {
                8 | 9 => 2,
                10 => 1,
                _ => code + u64::from(l.co_code_adaptive.unwrap()) + 2,
            };
            let n = c.name(&m, code, at).unwrap();
            assert_eq!(
                (n.name.as_str(), n.file.as_str(), n.line),
                ("leak", "/srv/app.py", Some(12)),
                "3.{minor}"
            );
            assert_eq!(c.len(), 1);
        }
    }

    #[test]
    fn garbage_and_reuse_are_not_named_wrongly() {
        let l = super::super::layout::for_minor(12).unwrap();
        let mut m = Recorded::default();
        let code = 0x5000_0000;
        put_code(&mut m, &l, (code, 0x7000_0000), ("first", "/a.py", 1), &[]);
        let mut c = CodeCache::new(l, CODE_TYPE);
        assert_eq!(c.name(&m, code, 0).unwrap().name, "first");
        // Freed and its memory reused for another function (whose name, file and table are
        // other objects): its head differs, it is read anew.
        put_code(&mut m, &l, (code, 0x7100_0000), ("second", "/b.py", 7), &[]);
        assert_eq!(c.name(&m, code, 0).unwrap().name, "second");
        // Not a code object: a different type pointer.
        m.add_u64(code + OB_TYPE, 0xdead_beef);
        assert_eq!(
            c.name(&m, code, 0),
            Err(MemError::Invalid("not a code object"))
        );
        // Unmapped.
        assert!(matches!(c.name(&m, 0x10, 0), Err(MemError::Unreadable(_))));
        // A code object whose name is not a str.
        put_code(
            &mut m,
            &l,
            (0x6000_0000, 0x6100_0000),
            ("x", "/x.py", 1),
            &[],
        );
        m.add_u32(0x6100_0000 + STR_STATE, 0);
        assert_eq!(
            c.name(&m, 0x6000_0000, 0),
            Err(MemError::Invalid("not a compact str"))
        );
    }

    #[test]
    fn non_ascii_strings() {
        let l = super::super::layout::for_minor(11).unwrap();
        let mut m = Recorded::default();
        let at = 0x9000;
        let mut hdr = vec![0u8; l.compact_size as usize];
        hdr[16..24].copy_from_slice(&2i64.to_le_bytes());
        // kind 2 (UCS-2), compact, not ascii.
        hdr[32..36].copy_from_slice(&((2u32 << 2) | (1 << 5)).to_le_bytes());
        m.add(at, hdr);
        m.add(at + u64::from(l.compact_size), vec![0xbb, 0x03, 0x51, 0x30]);
        assert_eq!(string(&m, &l, at).unwrap(), "λけ");
    }
}
