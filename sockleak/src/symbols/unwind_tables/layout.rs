//! A process's entry for the kernel (pure): its executable file mappings, each pointing at its
//! file's rows, sorted by address.

use sockleak_common::unwind::{UNWIND_MAX_MAPPINGS, UnwindMapping, UnwindProc};

/// Where a file's rows are in the kernel's array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub first: u32,
    pub count: u32,
    /// The vaddr row pcs are relative to.
    pub base: u64,
}

/// The load bias of a mapping of a file at `start` from file offset `offset`: what is added to
/// the file's vaddrs to get addresses in the process. `loads`: (file offset, vaddr, file size)
/// of the file's PT_LOAD segments. Mappings start at a page boundary, segments need not.
pub fn bias(loads: &[(u64, u64, u64)], start: u64, offset: u64) -> Option<u64> {
    let (o, v, _) = loads
        .iter()
        .find(|(o, _, size)| offset >= (o & !0xfff) && offset < o + size.max(&1))?;
    // vaddr of `offset` = v + (offset - o), which may lie below v.
    Some(start.wrapping_sub(v.wrapping_add(offset).wrapping_sub(*o)))
}

/// The kernel's view of one mapping: its rows, or none yet (`placed` None: the walk stops
/// there with NO_TABLE, and userspace builds the file).
pub fn mapping(start: u64, end: u64, bias: u64, placed: Option<Placed>) -> UnwindMapping {
    match placed {
        Some(p) => UnwindMapping {
            start,
            end,
            adj: bias.wrapping_add(p.base),
            first: p.first,
            count: p.count,
        },
        None => UnwindMapping {
            start,
            end,
            adj: 0,
            first: 0,
            count: 0,
        },
    }
}

/// A process's entry: its mappings sorted by start. Beyond UNWIND_MAX_MAPPINGS, mappings
/// with rows are kept first (a walk through a dropped one stops with NO_MAPPING and copies).
pub fn proc_entry(mut maps: Vec<UnwindMapping>, generation: u32) -> UnwindProc {
    if maps.len() > UNWIND_MAX_MAPPINGS {
        maps.sort_by_key(|m| (m.count == 0, m.start));
        maps.truncate(UNWIND_MAX_MAPPINGS);
    }
    maps.sort_by_key(|m| m.start);
    let mut p = UnwindProc::EMPTY;
    p.n = maps.len() as u32;
    p.generation = generation;
    p.maps[..maps.len()].copy_from_slice(&maps);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_of_pie_and_fixed_binaries() {
        // A PIE: text segment at vaddr 0x1000, file offset 0x1000, mapped at 0x5555_5555_5000.
        let loads = [(0, 0, 0x600), (0x1000, 0x1000, 0x2000)];
        assert_eq!(
            bias(&loads, 0x5555_5555_5000, 0x1000),
            Some(0x5555_5555_4000)
        );
        // A non-PIE executable: vaddr 0x401000 at offset 0x1000, mapped where linked.
        let loads = [(0, 0x400000, 0x600), (0x1000, 0x401000, 0x2000)];
        assert_eq!(bias(&loads, 0x401000, 0x1000), Some(0));
        // A segment whose offset is not page aligned: the mapping starts at the page below.
        let loads = [(0x1f40, 0x2f40, 0x3000)];
        assert_eq!(
            bias(&loads, 0x7f00_0000_1000, 0x1000),
            Some(0x7f00_0000_0000 - 0x1000)
        );
        assert_eq!(bias(&loads, 0x1000, 0x9000), None, "no segment there");
    }

    #[test]
    fn entries_are_sorted_and_capped_keeping_tables() {
        let m = |start: u64, count: u32| UnwindMapping {
            start,
            end: start + 0x1000,
            adj: 0,
            first: 0,
            count,
        };
        let p = proc_entry(vec![m(0x3000, 5), m(0x1000, 0), m(0x2000, 7)], 9);
        assert_eq!(p.n, 3);
        assert_eq!(p.generation, 9);
        let starts: Vec<u64> = p.maps[..3].iter().map(|m| m.start).collect();
        assert_eq!(starts, [0x1000, 0x2000, 0x3000]);

        let mut many: Vec<UnwindMapping> = (0..100).map(|i| m(0x100_000 + i * 0x1000, 0)).collect();
        many[99].count = 4;
        let p = proc_entry(many, 1);
        assert_eq!(p.n as usize, UNWIND_MAX_MAPPINGS);
        assert!(
            p.maps.iter().any(|x| x.count == 4),
            "the mapping with rows is kept"
        );
        assert!(p.maps.windows(2).all(|w| w[0].start < w[1].start));
    }

    #[test]
    fn mapping_points_at_rows_relative_to_the_table_base() {
        let placed = Placed {
            first: 10,
            count: 3,
            base: 0x1040,
        };
        let m = mapping(0x7000, 0x9000, 0x6000, Some(placed));
        // A pc at vaddr 0x1050 (0x7050 in the process) is row pc 0x10.
        assert_eq!(0x7050 - m.adj, 0x10);
        assert_eq!((m.first, m.count), (10, 3));
        assert_eq!(mapping(1, 2, 3, None).count, 0);
    }
}
