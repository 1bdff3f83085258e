//! Line numbers from CPython's line tables (3.8-3.13), as CPython computes them for
//! tracebacks. Validated against `co_lines()` on every instruction of the standard library of
//! each version; pure.

/// 3.8, 3.9: `co_lnotab`, pairs of (address increment, signed line increment); `lasti` in
/// bytes (-1: the frame has not started: its first line).
pub fn lnotab(table: &[u8], firstlineno: i32, lasti: i32) -> Option<u32> {
    let mut line = firstlineno;
    let mut addr = 0i32;
    for pair in table.chunks_exact(2) {
        addr += i32::from(pair[0]);
        if addr > lasti {
            break;
        }
        line += i32::from(pair[1] as i8);
    }
    u32::try_from(line).ok()
}

/// 3.10: `co_linetable` (PEP 626), pairs of (bytes, signed line delta; -128: no line);
/// `lasti` in code units.
pub fn linetable_310(table: &[u8], firstlineno: i32, lasti: i32) -> Option<u32> {
    if lasti < 0 {
        return u32::try_from(firstlineno).ok();
    }
    let addr = lasti.checked_mul(2)?;
    let mut line = firstlineno;
    let mut end = 0i32;
    for pair in table.chunks_exact(2) {
        let start = end;
        end += i32::from(pair[0]);
        let delta = pair[1] as i8;
        let this = if delta == -128 {
            None
        } else {
            line += i32::from(delta);
            Some(line)
        };
        if start <= addr && addr < end {
            return this.and_then(|l| u32::try_from(l).ok());
        }
    }
    None
}

fn varint(t: &[u8], i: &mut usize) -> Option<u32> {
    let mut b = *t.get(*i)?;
    *i += 1;
    let mut val = u32::from(b & 63);
    let mut shift = 0;
    while b & 64 != 0 {
        b = *t.get(*i)?;
        *i += 1;
        shift += 6;
        if shift > 30 {
            return None;
        }
        val |= u32::from(b & 63) << shift;
    }
    Some(val)
}

fn svarint(t: &[u8], i: &mut usize) -> Option<i32> {
    let v = varint(t, i)?;
    Some(if v & 1 != 0 {
        -((v >> 1) as i32)
    } else {
        (v >> 1) as i32
    })
}

/// 3.11+: the location table (`Objects/locations.md`); `unit`: the instruction's index in
/// code units (negative before the first: the first line).
pub fn locations(table: &[u8], firstlineno: i32, unit: i64) -> Option<u32> {
    if unit < 0 {
        return u32::try_from(firstlineno).ok();
    }
    let mut line = firstlineno;
    let mut pos = 0i64;
    let mut i = 0;
    while i < table.len() {
        let b = table[i];
        i += 1;
        let code = (b >> 3) & 15;
        let len = i64::from(b & 7) + 1;
        let this = match code {
            // No location.
            15 => None,
            // Long form: line delta, end line delta, start and end columns.
            14 => {
                line += svarint(table, &mut i)?;
                for _ in 0..3 {
                    varint(table, &mut i)?;
                }
                Some(line)
            }
            // No columns.
            13 => {
                line += svarint(table, &mut i)?;
                Some(line)
            }
            // One-line form: delta code - 10, start and end columns.
            10..=12 => {
                line += i32::from(code) - 10;
                i += 2;
                Some(line)
            }
            // Short form: same line, one column byte.
            _ => {
                i += 1;
                Some(line)
            }
        };
        if pos <= unit && unit < pos + len {
            return this.and_then(|l| u32::try_from(l).ok());
        }
        pos += len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lnotab_of_38() {
        // def f():      (line 10)
        //     a = 1     (bytes 0-3, line 11)
        //     b = 2     (bytes 4-7, line 12)
        //     return g(b)  (bytes 8-, line 14)
        let t = [0, 1, 4, 1, 4, 2];
        assert_eq!(lnotab(&t, 10, -1), Some(10));
        assert_eq!(lnotab(&t, 10, 0), Some(11));
        assert_eq!(lnotab(&t, 10, 6), Some(12));
        assert_eq!(lnotab(&t, 10, 12), Some(14));
        // Negative increments are signed bytes.
        assert_eq!(lnotab(&[0, 5, 2, 0xfe], 1, 2), Some(4));
    }

    #[test]
    fn linetable_of_310() {
        // [0,4) line +1, [4,8) no line, [8,14) line +2.
        let t = [4, 1, 4, 0x80, 6, 2];
        assert_eq!(linetable_310(&t, 20, 0), Some(21));
        assert_eq!(linetable_310(&t, 20, 2), None, "no line");
        assert_eq!(linetable_310(&t, 20, 4), Some(23));
        assert_eq!(linetable_310(&t, 20, -1), Some(20));
        assert_eq!(linetable_310(&t, 20, 7), None, "past the table");
    }

    #[test]
    fn locations_of_311() {
        let t = [
            // 1 unit, code 13 (no columns), line +1 (svarint 2).
            0x80 | (13 << 3),
            2,
            // 2 units, short form (code 0): same line, a column byte.
            0x80 | 1,
            7,
            // 1 unit, one-line form code 12: line +2, two column bytes.
            0x80 | (12 << 3),
            4,
            9,
            // 1 unit, long form: line -3 (svarint 7), end delta, columns.
            0x80 | (14 << 3),
            7,
            0,
            1,
            2,
            // 3 units without a location.
            0x80 | (15 << 3) | 2,
        ];
        assert_eq!(locations(&t, 5, 0), Some(6));
        assert_eq!(locations(&t, 5, 2), Some(6));
        assert_eq!(locations(&t, 5, 3), Some(8));
        assert_eq!(locations(&t, 5, 4), Some(5));
        assert_eq!(locations(&t, 5, 6), None);
        assert_eq!(locations(&t, 5, 99), None);
        assert_eq!(locations(&t, 5, -1), Some(5));
        // Multi-byte varints.
        let mut i = 0;
        assert_eq!(varint(&[0x41, 0x02], &mut i), Some(1 | (2 << 6)));
        assert_eq!(locations(&[0x80 | (13 << 3), 0x40], 1, 0), None, "cut");
    }

    proptest::proptest! {
        /// Any bytes: a line or none, never a panic.
        #[test]
        fn decoders_never_panic(t in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                                first in -5i32..5000, at in -3i64..200) {
            let _ = lnotab(&t, first, at as i32);
            let _ = linetable_310(&t, first, at as i32);
            let _ = locations(&t, first, at);
        }
    }
}
