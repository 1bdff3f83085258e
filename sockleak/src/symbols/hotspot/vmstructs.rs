//! HotSpot's VMStructs: the introspection tables libjvm exports for its serviceability agent
//! (`gHotSpotVMStructs`, `gHotSpotVMTypes`, `gHotSpotVMIntConstants`,
//! `gHotSpotVMLongConstants`), read from the process's memory. The tables and the variables that
//! describe their layout are filled when libjvm loads (most offsets in the file are 0, and the
//! layout variables are in .bss), so they are read in the process, never from the file.

use std::collections::HashMap;

use crate::host::procmem::{MemError, Memory};

/// The symbols: the four tables and the variables describing their entries.
pub const SYMBOLS: &[&str] = &[
    "gHotSpotVMStructs",
    "gHotSpotVMStructEntryArrayStride",
    "gHotSpotVMStructEntryTypeNameOffset",
    "gHotSpotVMStructEntryFieldNameOffset",
    "gHotSpotVMStructEntryIsStaticOffset",
    "gHotSpotVMStructEntryOffsetOffset",
    "gHotSpotVMStructEntryAddressOffset",
    "gHotSpotVMTypes",
    "gHotSpotVMTypeEntryArrayStride",
    "gHotSpotVMTypeEntryTypeNameOffset",
    "gHotSpotVMTypeEntrySizeOffset",
    "gHotSpotVMIntConstants",
    "gHotSpotVMIntConstantEntryArrayStride",
    "gHotSpotVMIntConstantEntryNameOffset",
    "gHotSpotVMIntConstantEntryValueOffset",
];

/// Entries read at most per table (JDKs have under a thousand).
const MAX_ENTRIES: usize = 1 << 14;
/// Entries read per memory read.
const BATCH: usize = 64;

/// One field: an offset in its type, or a static's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Offset(u64),
    Static(u64),
}

/// The tables of one JVM.
#[derive(Debug, Default, Clone)]
pub struct VmStructs {
    pub fields: HashMap<(String, String), Field>,
    pub types: HashMap<String, u64>,
    pub ints: HashMap<String, i32>,
}

impl VmStructs {
    /// Reads the tables; `sym` gives a symbol's address in the process.
    pub fn read(
        mem: &impl Memory,
        sym: impl Fn(&str) -> Option<u64>,
    ) -> Result<VmStructs, MemError> {
        let var = |n: &str| -> Result<u64, MemError> {
            mem.u64(sym(n).ok_or(MemError::Invalid("libjvm lacks a VMStructs symbol"))?)
        };
        let mut names: HashMap<u64, String> = HashMap::new();
        // Entries share their type names: each string is read once.
        let mut name = |p: u64| -> Result<String, MemError> {
            if let Some(s) = names.get(&p) {
                return Ok(s.clone());
            }
            let s = mem.cstr(p, 256)?;
            names.insert(p, s.clone());
            Ok(s)
        };
        let mut out = VmStructs::default();

        let stride = var("gHotSpotVMStructEntryArrayStride")?;
        let type_name = var("gHotSpotVMStructEntryTypeNameOffset")?;
        let field_name = var("gHotSpotVMStructEntryFieldNameOffset")?;
        let is_static = var("gHotSpotVMStructEntryIsStaticOffset")?;
        let offset = var("gHotSpotVMStructEntryOffsetOffset")?;
        let address = var("gHotSpotVMStructEntryAddressOffset")?;
        for e in entries(mem, var("gHotSpotVMStructs")?, stride, type_name)? {
            let w = |o: u64| word(&e, o);
            let t = name(w(type_name)?)?;
            let f = name(w(field_name)?)?;
            let field = if w(is_static)? as u32 != 0 {
                Field::Static(w(address)?)
            } else {
                Field::Offset(w(offset)?)
            };
            out.fields.insert((t, f), field);
        }
        let stride = var("gHotSpotVMTypeEntryArrayStride")?;
        let type_name = var("gHotSpotVMTypeEntryTypeNameOffset")?;
        let size = var("gHotSpotVMTypeEntrySizeOffset")?;
        for e in entries(mem, var("gHotSpotVMTypes")?, stride, type_name)? {
            let t = name(word(&e, type_name)?)?;
            out.types.insert(t, word(&e, size)?);
        }
        let stride = var("gHotSpotVMIntConstantEntryArrayStride")?;
        let cname = var("gHotSpotVMIntConstantEntryNameOffset")?;
        let value = var("gHotSpotVMIntConstantEntryValueOffset")?;
        for e in entries(mem, var("gHotSpotVMIntConstants")?, stride, cname)? {
            let n = name(word(&e, cname)?)?;
            out.ints.insert(n, word(&e, value)? as u32 as i32);
        }
        Ok(out)
    }

    /// The offset of the first of `names` that `ty` has (fields are renamed across JDKs).
    pub fn offset(&self, ty: &str, names: &[&str]) -> Option<u64> {
        names.iter().find_map(
            |n| match self.fields.get(&(ty.to_string(), n.to_string())) {
                Some(Field::Offset(o)) => Some(*o),
                _ => None,
            },
        )
    }

    /// The address of a static field.
    pub fn address(&self, ty: &str, name: &str) -> Option<u64> {
        match self.fields.get(&(ty.to_string(), name.to_string())) {
            Some(Field::Static(a)) => Some(*a),
            _ => None,
        }
    }

    pub fn has(&self, ty: &str, name: &str) -> bool {
        self.fields
            .contains_key(&(ty.to_string(), name.to_string()))
    }

    pub fn size(&self, ty: &str) -> Option<u64> {
        self.types.get(ty).copied()
    }
}

fn word(e: &[u8], o: u64) -> Result<u64, MemError> {
    let o = usize::try_from(o).map_err(|_| MemError::Invalid("bad VMStructs layout"))?;
    e.get(o..o + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or(MemError::Invalid("bad VMStructs layout"))
}

/// The entries of one table, up to the one whose name pointer (at `key`) is NULL.
fn entries(mem: &impl Memory, table: u64, stride: u64, key: u64) -> Result<Vec<Vec<u8>>, MemError> {
    if !(8..=256).contains(&stride) || key + 8 > stride || table == 0 {
        return Err(MemError::Invalid("bad VMStructs layout"));
    }
    let stride = stride as usize;
    let mut out = Vec::new();
    while out.len() < MAX_ENTRIES {
        let at = table + (out.len() * stride) as u64;
        let chunk = mem.bytes(at, BATCH * stride)?;
        for e in chunk.chunks_exact(stride) {
            if word(e, key)? == 0 {
                return Ok(out);
            }
            out.push(e.to_vec());
        }
    }
    Err(MemError::Invalid("VMStructs table without an end"))
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::host::procmem::Recorded;

    /// Builds VMStructs tables in recorded memory; returns the symbol addresses.
    pub struct Builder {
        pub mem: Recorded,
        next_str: u64,
        fields: Vec<(String, String, bool, u64)>,
        types: Vec<(String, u64)>,
        ints: Vec<(String, i32)>,
    }

    impl Default for Builder {
        fn default() -> Builder {
            Builder {
                mem: Recorded::default(),
                next_str: 0x7000_0000,
                fields: Vec::new(),
                types: Vec::new(),
                ints: Vec::new(),
            }
        }
    }

    impl Builder {
        pub fn field(&mut self, t: &str, f: &str, off: u64) -> &mut Self {
            self.fields.push((t.into(), f.into(), false, off));
            self
        }

        pub fn stat(&mut self, t: &str, f: &str, addr: u64) -> &mut Self {
            self.fields.push((t.into(), f.into(), true, addr));
            self
        }

        pub fn ty(&mut self, t: &str, size: u64) -> &mut Self {
            self.types.push((t.into(), size));
            self
        }

        pub fn int(&mut self, n: &str, v: i32) -> &mut Self {
            self.ints.push((n.into(), v));
            self
        }

        fn s(&mut self, s: &str) -> u64 {
            let at = self.next_str;
            let mut b = s.as_bytes().to_vec();
            b.push(0);
            self.next_str += b.len() as u64 + 8;
            self.mem.add(at, b);
            at
        }

        /// Writes the tables (and their layout variables, as JDK 17 has them).
        pub fn build(&mut self) -> HashMap<&'static str, u64> {
            let mut syms = HashMap::new();
            let mut var = 0x6000_0000u64;
            let mut put_var = |m: &mut Recorded, n: &'static str, v: u64| {
                m.add_u64(var, v);
                syms.insert(n, var);
                var += 8;
            };
            let (structs, types, ints) = (0x6100_0000u64, 0x6200_0000u64, 0x6300_0000u64);
            for (n, v) in [
                ("gHotSpotVMStructs", structs),
                ("gHotSpotVMStructEntryArrayStride", 48),
                ("gHotSpotVMStructEntryTypeNameOffset", 0),
                ("gHotSpotVMStructEntryFieldNameOffset", 8),
                ("gHotSpotVMStructEntryIsStaticOffset", 24),
                ("gHotSpotVMStructEntryOffsetOffset", 32),
                ("gHotSpotVMStructEntryAddressOffset", 40),
                ("gHotSpotVMTypes", types),
                ("gHotSpotVMTypeEntryArrayStride", 40),
                ("gHotSpotVMTypeEntryTypeNameOffset", 0),
                ("gHotSpotVMTypeEntrySizeOffset", 32),
                ("gHotSpotVMIntConstants", ints),
                ("gHotSpotVMIntConstantEntryArrayStride", 16),
                ("gHotSpotVMIntConstantEntryNameOffset", 0),
                ("gHotSpotVMIntConstantEntryValueOffset", 8),
            ] {
                put_var(&mut self.mem, n, v);
            }
            let fields = std::mem::take(&mut self.fields);
            let mut table = Vec::new();
            for (t, f, st, v) in &fields {
                let mut e = vec![0u8; 48];
                let (tp, fp) = (self.s(t), self.s(f));
                e[0..8].copy_from_slice(&tp.to_le_bytes());
                e[8..16].copy_from_slice(&fp.to_le_bytes());
                e[24..28].copy_from_slice(&u32::from(*st).to_le_bytes());
                let at = if *st { 40 } else { 32 };
                e[at..at + 8].copy_from_slice(&v.to_le_bytes());
                table.extend(e);
            }
            table.extend(vec![0u8; 48 * BATCH]);
            self.mem.add(structs, table);
            let mut table = Vec::new();
            for (t, size) in std::mem::take(&mut self.types) {
                let mut e = vec![0u8; 40];
                e[0..8].copy_from_slice(&self.s(&t).to_le_bytes());
                e[32..40].copy_from_slice(&size.to_le_bytes());
                table.extend(e);
            }
            table.extend(vec![0u8; 40 * BATCH]);
            self.mem.add(types, table);
            let mut table = Vec::new();
            for (n, v) in std::mem::take(&mut self.ints) {
                let mut e = vec![0u8; 16];
                e[0..8].copy_from_slice(&self.s(&n).to_le_bytes());
                e[8..12].copy_from_slice(&v.to_le_bytes());
                table.extend(e);
            }
            table.extend(vec![0u8; 16 * BATCH]);
            self.mem.add(ints, table);
            syms
        }
    }

    #[test]
    fn tables_read_back() {
        let mut b = Builder::default();
        b.field("Method", "_constMethod", 8)
            .field("ConstMethod", "_flags._flags", 28)
            .stat("AbstractInterpreter", "_code", 0x7777_0000)
            .ty("ConstMethod", 56)
            .int("Foo", -3);
        let syms = b.build();
        let v = VmStructs::read(&b.mem, |n| syms.get(n).copied()).unwrap();
        assert_eq!(v.offset("Method", &["_constMethod"]), Some(8));
        assert_eq!(
            v.offset("ConstMethod", &["_flags", "_flags._flags"]),
            Some(28)
        );
        assert_eq!(v.address("AbstractInterpreter", "_code"), Some(0x7777_0000));
        assert_eq!(v.offset("AbstractInterpreter", &["_code"]), None);
        assert_eq!(v.size("ConstMethod"), Some(56));
        assert_eq!(v.ints.get("Foo"), Some(&-3));
        // A missing symbol or table is an error, not a panic.
        assert!(VmStructs::read(&b.mem, |_| None).is_err());
        assert!(VmStructs::read(&Recorded::default(), |n| syms.get(n).copied()).is_err());
    }
}
