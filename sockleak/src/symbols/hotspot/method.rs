//! Naming an interpreted frame from its `Method*` and bytecode index: class, method,
//! signature, source file and line (HotSpot's compressed line table), read through the JVM's
//! memory. Every `Method*` is checked before it is named: its ConstMethod must be the one the
//! walk saw (metaspace reuses memory after class unloading), and its class's methods array must
//! hold it (a word that is not a Method* fails this).

use std::collections::HashMap;

use crate::host::procmem::{MemError, Memory};

/// The offsets naming needs (from VMStructs; see `super::Layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub method_const: u64,
    pub cm_constants: u64,
    pub cm_flags: u64,
    pub cm_code_size: u64,
    pub cm_name_index: u64,
    pub cm_signature_index: u64,
    pub cm_method_idnum: u64,
    pub sizeof_const_method: u64,
    pub cp_pool_holder: u64,
    /// `ConstantPool::_source_file_name_index` (JDK 15+), else `InstanceKlass`'s.
    pub cp_source_file: Option<u64>,
    pub ik_source_file: Option<u64>,
    pub sizeof_constant_pool: u64,
    pub klass_name: u64,
    pub ik_methods: u64,
    pub array_data: u64,
    pub symbol_length: u64,
    pub symbol_body: u64,
    /// UNSIGNED5's excluded bytes: 1 from JDK 20 (no 0 byte inside a number), else 0.
    pub unsigned5_excluded: u8,
}

/// A method, as named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// `java.net.Socket`, hidden classes' addresses masked.
    pub class: String,
    pub name: String,
    /// The descriptor, e.g. `(Ljava/lang/String;I)V`.
    pub descriptor: String,
    pub file: Option<String>,
    pub code_size: u16,
    /// (bytecode index, line), in table order.
    pub lines: Vec<(u32, u32)>,
}

impl Method {
    /// `Leak.openLeakyConnection(int)`.
    pub fn display(&self) -> String {
        format!("{}.{}({})", self.class, self.name, params(&self.descriptor))
    }

    /// The line of a bytecode index: the last entry at or before it.
    pub fn line(&self, bci: u32) -> Option<u32> {
        if bci >= u32::from(self.code_size) {
            return None;
        }
        self.lines
            .iter()
            .filter(|(b, _)| *b <= bci)
            .max_by_key(|(b, _)| *b)
            .map(|(_, l)| *l)
    }
}

/// Named methods of one JVM image, by `Method*` (with the ConstMethod* they had).
#[derive(Debug)]
pub struct Methods {
    o: Offsets,
    cache: HashMap<u64, (u64, Method)>,
    symbols: HashMap<u64, String>,
}

/// Longest symbol read (class names, signatures).
const MAX_SYMBOL: u16 = 4096;
/// Most methods in one class.
const MAX_METHODS: i32 = 65536;

impl Methods {
    pub fn new(o: Offsets) -> Methods {
        Methods {
            o,
            cache: HashMap::new(),
            symbols: HashMap::new(),
        }
    }

    /// Forgets every name (the JVM unloaded classes: their memory may hold others now).
    pub fn flush(&mut self) {
        self.cache.clear();
        self.symbols.clear();
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The method at `method`, whose ConstMethod was `cm` when the frame was walked.
    pub fn get(&mut self, mem: &impl Memory, method: u64, cm: u64) -> Result<&Method, MemError> {
        let now = mem.u64(method + self.o.method_const)?;
        if now != cm {
            return Err(MemError::Invalid(
                "the method's memory changed after the socket was made (class unloaded?)",
            ));
        }
        if !matches!(self.cache.get(&method), Some((c, _)) if *c == cm) {
            let m = self.read(mem, method, cm)?;
            self.cache.insert(method, (cm, m));
        }
        self.cache
            .get(&method)
            .map(|(_, m)| m)
            .ok_or(MemError::Invalid("not cached"))
    }

    fn read(&mut self, mem: &impl Memory, method: u64, cm: u64) -> Result<Method, MemError> {
        let o = self.o;
        let cp = mem.u64(cm + o.cm_constants)?;
        let holder = mem.u64(cp + o.cp_pool_holder)?;
        if !self.is_method_of(mem, method, holder, cm)? {
            return Err(MemError::Invalid("not a method of its class"));
        }
        let class = mask_hidden(
            &self
                .symbol(mem, mem.u64(holder + o.klass_name)?)?
                .replace('/', "."),
        );
        let name = self.pool_symbol(mem, cp, mem.u16(cm + o.cm_name_index)?)?;
        let descriptor = self.pool_symbol(mem, cp, mem.u16(cm + o.cm_signature_index)?)?;
        let file_index = match (o.cp_source_file, o.ik_source_file) {
            (Some(off), _) => mem.u16(cp + off)?,
            (None, Some(off)) => mem.u16(holder + off)?,
            _ => 0,
        };
        let file = self.pool_symbol(mem, cp, file_index).ok();
        let code_size = mem.u16(cm + o.cm_code_size)?;
        // has_linenumber_table: bit 0 of the flags on JDK 11 to 25.
        let lines = if mem.u8(cm + o.cm_flags)? & 1 != 0 {
            let at = cm + o.sizeof_const_method + u64::from(code_size);
            line_table(mem, at, o.unsigned5_excluded)?
        } else {
            Vec::new()
        };
        Ok(Method {
            class,
            name,
            descriptor,
            file,
            code_size,
            lines,
        })
    }

    /// Whether `holder`'s methods array has `method` (at its idnum, else anywhere:
    /// redefinition may renumber).
    fn is_method_of(
        &self,
        mem: &impl Memory,
        method: u64,
        holder: u64,
        cm: u64,
    ) -> Result<bool, MemError> {
        let o = self.o;
        let arr = mem.u64(holder + o.ik_methods)?;
        let n = mem.i32(arr)?;
        if !(1..MAX_METHODS).contains(&n) {
            return Ok(false);
        }
        let idnum = mem.u16(cm + o.cm_method_idnum)?;
        let data = arr + o.array_data;
        if i32::from(idnum) < n && mem.u64(data + 8 * u64::from(idnum))? == method {
            return Ok(true);
        }
        let all = mem.bytes(data, 8 * n as usize)?;
        Ok(all
            .chunks_exact(8)
            .any(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()) == method))
    }

    fn symbol(&mut self, mem: &impl Memory, addr: u64) -> Result<String, MemError> {
        if let Some(s) = self.symbols.get(&addr) {
            return Ok(s.clone());
        }
        let n = mem.u16(addr + self.o.symbol_length)?;
        if n > MAX_SYMBOL {
            return Err(MemError::Invalid("not a symbol"));
        }
        let b = mem.bytes(addr + self.o.symbol_body, usize::from(n))?;
        let s = String::from_utf8_lossy(&b).into_owned();
        self.symbols.insert(addr, s.clone());
        Ok(s)
    }

    /// The Symbol in constant-pool slot `i` (slots follow the ConstantPool; bit 0 tags them).
    fn pool_symbol(&mut self, mem: &impl Memory, cp: u64, i: u16) -> Result<String, MemError> {
        if i == 0 {
            return Err(MemError::Invalid("no such constant"));
        }
        let v = mem.u64(cp + self.o.sizeof_constant_pool + 8 * u64::from(i))?;
        self.symbol(mem, v & !1)
    }
}

/// `Leak$$Lambda$14/0x0000000800c03000` -> `Leak$$Lambda$14/<hidden>`: hidden classes carry an
/// address, which would make every run a different call site.
pub fn mask_hidden(class: &str) -> String {
    for sep in ["/0x", "+0x"] {
        if let Some(i) = class.find(sep) {
            let rest = &class[i + sep.len()..];
            let hex = rest.chars().take_while(char::is_ascii_hexdigit).count();
            return format!("{}{}<hidden>{}", &class[..i], &sep[..1], &rest[hex..]);
        }
    }
    class.to_string()
}

/// `(Ljava/lang/String;I[B)V` -> `java.lang.String, int, byte[]`.
pub fn params(descriptor: &str) -> String {
    let inner = descriptor
        .strip_prefix('(')
        .and_then(|d| d.split(')').next())
        .unwrap_or("");
    let mut out = Vec::new();
    let mut chars = inner.chars();
    let mut dims = 0;
    while let Some(c) = chars.next() {
        let t = match c {
            '[' => {
                dims += 1;
                continue;
            }
            'B' => "byte".to_string(),
            'C' => "char".to_string(),
            'D' => "double".to_string(),
            'F' => "float".to_string(),
            'I' => "int".to_string(),
            'J' => "long".to_string(),
            'S' => "short".to_string(),
            'Z' => "boolean".to_string(),
            'L' => chars
                .by_ref()
                .take_while(|c| *c != ';')
                .collect::<String>()
                .replace('/', "."),
            _ => return inner.to_string(),
        };
        out.push(format!("{t}{}", "[]".repeat(dims)));
        dims = 0;
    }
    out.join(", ")
}

/// HotSpot's compressed line number table at `at` (CompressedLineNumberReadStream): a 0 byte
/// ends it; 0xFF is followed by two signed UNSIGNED5 numbers (bytecode index delta, line
/// delta); any other byte b is (b >> 3, b & 7).
pub fn line_table(mem: &impl Memory, at: u64, excluded: u8) -> Result<Vec<(u32, u32)>, MemError> {
    // Read in small pieces: the table may end right before unmapped memory.
    let mut buf: Vec<u8> = Vec::new();
    let mut byte = |i: usize| -> Result<u8, MemError> {
        while i >= buf.len() {
            let a = at + buf.len() as u64;
            let n = (256 - (a % 256)) as usize;
            buf.extend(mem.bytes(a, n)?);
        }
        Ok(buf[i])
    };
    decode_lines(&mut byte, excluded)
}

/// The decoder behind `line_table`, over any byte source.
pub fn decode_lines(
    byte: &mut impl FnMut(usize) -> Result<u8, MemError>,
    excluded: u8,
) -> Result<Vec<(u32, u32)>, MemError> {
    const MAX_ENTRIES: usize = 65536;
    /// One UNSIGNED5 number: raw bytes below 192 (X + L) end it.
    fn uint(
        byte: &mut impl FnMut(usize) -> Result<u8, MemError>,
        pos: &mut usize,
        excluded: u8,
    ) -> Result<u32, MemError> {
        let mut sum = 0u32;
        let mut shift = 0;
        for i in 0..5 {
            let b = byte(*pos)?;
            *pos += 1;
            if b < excluded {
                return Err(MemError::Invalid("bad line table"));
            }
            sum = sum.wrapping_add(u32::from(b - excluded) << shift);
            if b < 192 || i == 4 {
                break;
            }
            shift += 6;
        }
        Ok(sum)
    }
    let mut pos = 0usize;
    let mut out = Vec::new();
    let (mut bci, mut line) = (0i64, 0i64);
    while out.len() < MAX_ENTRIES {
        let b = byte(pos)?;
        pos += 1;
        match b {
            0 => return Ok(out),
            0xff => {
                let d1 = uint(byte, &mut pos, excluded)?;
                let d2 = uint(byte, &mut pos, excluded)?;
                let s = |v: u32| i64::from((v >> 1) as i32 ^ -((v & 1) as i32));
                bci += s(d1);
                line += s(d2);
            }
            b => {
                bci += i64::from(b >> 3);
                line += i64::from(b & 7);
            }
        }
        match (u32::try_from(bci), u32::try_from(line)) {
            (Ok(b), Ok(l)) => out.push((b, l)),
            _ => return Err(MemError::Invalid("bad line table")),
        }
    }
    Err(MemError::Invalid("line table without an end"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_and_hidden_classes() {
        assert_eq!(params("(Ljava/lang/String;I)V"), "java.lang.String, int");
        assert_eq!(
            params("([BIJZ[[Ljava/lang/Object;)I"),
            "byte[], int, long, boolean, java.lang.Object[][]"
        );
        assert_eq!(params("()V"), "");
        assert_eq!(
            mask_hidden("Leak$$Lambda$14/0x0000000800c03000"),
            "Leak$$Lambda$14/<hidden>"
        );
        assert_eq!(
            mask_hidden("Leak$$Lambda+0x00007f9490000a08"),
            "Leak$$Lambda+<hidden>"
        );
        assert_eq!(mask_hidden("java.net.Socket"), "java.net.Socket");
    }

    #[test]
    fn line_tables_short_and_escaped() {
        // (bci 0, line 19) escaped: 0xff, bci +0 (0), line +19 (signed 38); then (9, 20):
        // short form 9<<3 | 1; then (51, 41) escaped: +42 (84), +21 (42). JDK 17 (no exclusion).
        let t = [0xff, 0, 38, (9 << 3) | 1, 0xff, 84, 42, 0];
        let mut byte = |i: usize| t.get(i).copied().ok_or(MemError::Unreadable(i as u64));
        assert_eq!(
            decode_lines(&mut byte, 0).unwrap(),
            vec![(0, 19), (9, 20), (51, 41)]
        );
        // JDK 20+: every byte of a number is stored plus one.
        let t = [0xff, 1, 39, (9 << 3) | 1, 0];
        let mut byte = |i: usize| t.get(i).copied().ok_or(MemError::Unreadable(i as u64));
        assert_eq!(decode_lines(&mut byte, 1).unwrap(), vec![(0, 19), (9, 20)]);
        // Multi-byte numbers: a byte from 192 up continues; 200 + 3 * 64 = 392, signed +196.
        let t = [0xff, 200, 3, 2, 0];
        let mut byte = |i: usize| t.get(i).copied().ok_or(MemError::Unreadable(i as u64));
        assert_eq!(decode_lines(&mut byte, 0).unwrap(), vec![(196, 1)]);
        // Cut short: an error, not a panic.
        let t = [0xff, 200];
        let mut byte = |i: usize| t.get(i).copied().ok_or(MemError::Unreadable(i as u64));
        assert!(decode_lines(&mut byte, 0).is_err());
        let m = Method {
            class: "Leak".into(),
            name: "worker".into(),
            descriptor: "(IJI)V".into(),
            file: Some("Leak.java".into()),
            code_size: 60,
            lines: vec![(0, 19), (9, 20), (51, 41)],
        };
        assert_eq!(m.line(0), Some(19));
        assert_eq!(m.line(50), Some(20));
        assert_eq!(m.line(51), Some(41));
        assert_eq!(m.line(60), None);
        assert_eq!(m.display(), "Leak.worker(int, long, int)");
    }

    proptest::proptest! {
        #[test]
        fn line_decoder_never_panics(t in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), x in 0u8..2) {
            let mut byte = |i: usize| t.get(i).copied().ok_or(MemError::Unreadable(i as u64));
            let _ = decode_lines(&mut byte, x);
        }
    }
}
