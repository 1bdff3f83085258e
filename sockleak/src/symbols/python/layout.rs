//! Where CPython 3.8-3.13 (x86_64) keeps what a frame walk needs: offsets per minor version,
//! measured from the DWARF of CPython builds and cross-checked four ways (3.13's own
//! `_Py_DebugOffsets`, the layout of `PyCode_Type`, the autoTSSkey decoded from
//! `PyGILState_GetThisThreadState`, and other tools' tables). Pure: the decoders take bytes.

use sockleak_common::runtime::py_layout;

/// The offsets of one CPython minor version (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub minor: u8,
    /// `_PyRuntime.interpreters.head`.
    pub rt_interp_head: u32,
    /// `_PyRuntime`'s autoTSSkey (a `Py_tss_t`: `_is_initialized`, then the `_key` int).
    pub rt_autotss: u32,
    pub interp_next: u32,
    pub interp_threads: u32,
    pub ts_next: u32,
    pub ts_interp: u32,
    pub ts_thread_id: u32,
    /// `frame` (<= 3.10), `cframe` (3.11, 3.12) or `current_frame` (3.13).
    pub ts_frame: u32,
    /// `_PyCFrame.current_frame` (3.11, 3.12).
    pub cframe_frame: u32,
    pub f_back: u32,
    pub f_code: u32,
    /// `f_lasti` (<= 3.10, an int: bytes before 3.10, code units in 3.10) or the instruction
    /// pointer (`prev_instr` 3.11-3.12, `instr_ptr` 3.13).
    pub f_pos: u32,
    /// `is_entry` (3.11) or `owner` (3.12+); unused before.
    pub f_mark: u32,
    pub f_size: u32,
    /// `py_layout::*`.
    pub frames: u8,
    pub co_firstlineno: u32,
    pub co_filename: u32,
    pub co_name: u32,
    pub co_qualname: Option<u32>,
    /// `co_lnotab` (3.8, 3.9) or `co_linetable` (3.10+).
    pub co_lines: u32,
    /// `co_code_adaptive` (3.11+): the instructions, inside the code object.
    pub co_code_adaptive: Option<u32>,
    /// `PyCode_Type.tp_basicsize`: checks that the code layout is this version's.
    pub code_basicsize: u64,
    /// `sizeof(PyASCIIObject)`, `sizeof(PyCompactUnicodeObject)`: where a compact str's
    /// characters start (ASCII, other).
    pub ascii_size: u32,
    pub compact_size: u32,
}

/// Common to 3.8-3.13.
pub const OB_TYPE: u64 = 8;
pub const VAR_SIZE: u64 = 16;
pub const BYTES_DATA: u64 = 32;
pub const STR_LENGTH: u64 = 16;
pub const STR_STATE: u64 = 32;
pub const TP_NAME: u64 = 24;
pub const TP_BASICSIZE: u64 = 32;
/// `Py_tss_t._key`.
pub const TSS_KEY: u32 = 4;

/// Shared by 3.8-3.10: frame objects.
const V38: Layout = Layout {
    minor: 8,
    rt_interp_head: 32,
    rt_autotss: 1392,
    interp_next: 0,
    interp_threads: 8,
    ts_next: 8,
    ts_interp: 16,
    ts_thread_id: 176,
    ts_frame: 24,
    cframe_frame: 0,
    f_back: 24,
    f_code: 32,
    f_pos: 104,
    f_mark: 0,
    f_size: 112,
    frames: py_layout::FRAME_OBJECTS,
    co_firstlineno: 40,
    co_filename: 104,
    co_name: 112,
    co_qualname: None,
    co_lines: 120,
    co_code_adaptive: None,
    code_basicsize: 176,
    ascii_size: 48,
    compact_size: 72,
};

/// Shared by 3.12-3.13.
const V312: Layout = Layout {
    minor: 12,
    rt_interp_head: 40,
    rt_autotss: 1544,
    interp_next: 0,
    interp_threads: 72,
    ts_next: 8,
    ts_interp: 16,
    ts_thread_id: 136,
    ts_frame: 56,
    cframe_frame: 0,
    f_back: 8,
    f_code: 0,
    f_pos: 56,
    f_mark: 70,
    f_size: 72,
    frames: py_layout::CFRAME_SHIMS,
    co_firstlineno: 68,
    co_filename: 112,
    co_name: 120,
    co_qualname: Some(128),
    co_lines: 136,
    co_code_adaptive: Some(192),
    code_basicsize: 192,
    ascii_size: 40,
    compact_size: 56,
};

/// The layout of CPython 3.`minor`, for the versions sockleak knows.
pub fn for_minor(minor: u8) -> Option<Layout> {
    Some(match minor {
        8 => V38,
        9 => Layout {
            minor: 9,
            rt_autotss: 584,
            ..V38
        },
        10 => Layout {
            minor: 10,
            rt_autotss: 584,
            f_pos: 96,
            f_size: 104,
            ..V38
        },
        11 => Layout {
            minor: 11,
            rt_interp_head: 40,
            rt_autotss: 592,
            interp_threads: 16,
            ts_thread_id: 152,
            ts_frame: 56,
            cframe_frame: 8,
            f_back: 48,
            f_code: 32,
            f_pos: 56,
            f_mark: 68,
            f_size: 72,
            frames: py_layout::IS_ENTRY,
            co_firstlineno: 72,
            co_qualname: Some(128),
            co_lines: 136,
            co_code_adaptive: Some(184),
            code_basicsize: 184,
            ascii_size: 48,
            compact_size: 72,
            ..V312
        },
        12 => V312,
        13 => Layout {
            minor: 13,
            rt_interp_head: 632,
            rt_autotss: 2160,
            interp_next: 7264,
            interp_threads: 7344,
            ts_thread_id: 152,
            ts_frame: 72,
            frames: py_layout::SHIMS,
            co_code_adaptive: Some(200),
            code_basicsize: 200,
            ..V312
        },
        _ => return None,
    })
}

/// `PY_VERSION_HEX` as `Py_Version` (3.11+) holds it: (major, minor, micro).
pub fn version_of_hex(hex: u32) -> (u8, u8, u8) {
    ((hex >> 24) as u8, (hex >> 16) as u8, (hex >> 8) as u8)
}

/// "3.10.13" -> (3, 10, 13).
pub fn parse_version(s: &str) -> Option<(u8, u8, u8)> {
    let mut it = s.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let micro: String = it
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor, micro.parse().ok()?))
}

/// `PY_VERSION` from the code of `Py_GetVersion` (3.8-3.10 export no `Py_Version`): its
/// fourth `PyOS_snprintf` argument is loaded into rcx with `lea disp32(%rip),%rcx` (PIC) or
/// `mov $imm32,%ecx` (non-PIE). `string_at` reads a C string at an address of the file.
pub fn decode_py_get_version(
    code: &[u8],
    va: u64,
    string_at: impl Fn(u64) -> Option<String>,
) -> Option<(u8, u8, u8)> {
    for i in 0..code.len() {
        let target = if code[i..].starts_with(&[0x48, 0x8d, 0x0d]) && i + 7 <= code.len() {
            let disp = i32::from_le_bytes(code[i + 3..i + 7].try_into().ok()?);
            (va + i as u64 + 7).wrapping_add_signed(i64::from(disp))
        } else if code[i] == 0xb9 && i + 5 <= code.len() {
            u64::from(u32::from_le_bytes(code[i + 1..i + 5].try_into().ok()?))
        } else {
            continue;
        };
        if let Some(v) = string_at(target).as_deref().and_then(parse_version) {
            return Some(v);
        }
    }
    None
}

/// The offset of the autoTSSkey in `_PyRuntime`, from the code of
/// `PyGILState_GetThisThreadState`, which passes its address to `PyThread_tss_get`:
/// `lea disp32(%rax),%rdi` or `%rbx` after loading `&_PyRuntime` (PIC), or it loads the key
/// itself with `mov disp32(%rip),%edi` (non-PIE).
pub fn decode_autotss(code: &[u8], va: u64, runtime: u64) -> Option<u32> {
    for i in 0..code.len() {
        let rest = &code[i..];
        if (rest.starts_with(&[0x48, 0x8d, 0xb8]) || rest.starts_with(&[0x48, 0x8d, 0x98]))
            && rest.len() >= 7
        {
            return u32::try_from(i32::from_le_bytes(rest[3..7].try_into().ok()?)).ok();
        }
        if rest.starts_with(&[0x8b, 0x3d]) && rest.len() >= 6 {
            let disp = i32::from_le_bytes(rest[2..6].try_into().ok()?);
            let key = (va + i as u64 + 6).wrapping_add_signed(i64::from(disp));
            return u32::try_from(key.checked_sub(runtime)?.checked_sub(4)?).ok();
        }
    }
    None
}

/// Bytes of `_PyRuntime` the 3.13 debug offsets occupy (as far as they are read).
pub const DEBUG_OFFSETS_LEN: usize = 568;

/// 3.13's `_Py_DebugOffsets` at the start of `_PyRuntime` (cookie "xdebugpy"): the
/// interpreter's own statement of its layout. Applied over the table (a build may differ);
/// returns the fields that differed. None when the bytes are not 3.13 debug offsets of a
/// build with the GIL.
pub fn apply_debug_offsets(l: &mut Layout, b: &[u8]) -> Option<Vec<&'static str>> {
    if b.len() < DEBUG_OFFSETS_LEN || !b.starts_with(b"xdebugpy") {
        return None;
    }
    let q = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
    let (major, minor, _) = version_of_hex(q(8) as u32);
    if (major, minor) != (3, 13) || q(16) != 0 {
        return None;
    }
    let mut differ = Vec::new();
    let mut set = |name: &'static str, field: &mut u32, v: u64| {
        let v = u32::try_from(v).unwrap_or(u32::MAX);
        if *field != v {
            differ.push(name);
            *field = v;
        }
    };
    set("interpreters_head", &mut l.rt_interp_head, q(40));
    set("interpreter_state.next", &mut l.interp_next, q(64));
    set("threads_head", &mut l.interp_threads, q(72));
    set("thread_state.next", &mut l.ts_next, q(168));
    set("thread_state.interp", &mut l.ts_interp, q(176));
    set("current_frame", &mut l.ts_frame, q(184));
    set("thread_id", &mut l.ts_thread_id, q(192));
    set("previous", &mut l.f_back, q(232));
    set("executable", &mut l.f_code, q(240));
    set("instr_ptr", &mut l.f_pos, q(248));
    set("owner", &mut l.f_mark, q(264));
    set("co_filename", &mut l.co_filename, q(280));
    set("co_name", &mut l.co_name, q(288));
    let mut qual = l.co_qualname.unwrap_or(0);
    set("co_qualname", &mut qual, q(296));
    l.co_qualname = Some(qual);
    set("co_linetable", &mut l.co_lines, q(304));
    set("co_firstlineno", &mut l.co_firstlineno, q(312));
    let mut adaptive = l.co_code_adaptive.unwrap_or(0);
    set("co_code_adaptive", &mut adaptive, q(344));
    l.co_code_adaptive = Some(adaptive);
    set("asciiobject_size", &mut l.ascii_size, q(560));
    l.code_basicsize = u64::from(adaptive);
    // The frame read covers the word of every field used.
    l.f_size = ([l.f_back, l.f_code, l.f_pos, l.f_mark]
        .into_iter()
        .max()
        .unwrap_or(0)
        / 8
        + 1)
        * 8;
    Some(differ)
}

/// Whether a layout can be given to the kernel walk: word-aligned frame fields inside one
/// frame read, thread-state fields it bounds.
pub fn kernel_usable(l: &Layout) -> bool {
    use sockleak_common::runtime::{PY_FRAME_READ_MAX, PY_TSTATE_FIELD_MAX};
    // The kernel takes words from the frame it read, and `f_mark`'s byte from its word.
    let aligned = [l.f_back, l.f_code, l.f_pos]
        .iter()
        .all(|o| o.is_multiple_of(8));
    let inside = [l.f_back, l.f_code, l.f_pos, l.f_mark]
        .iter()
        .all(|o| (o / 8 + 1) * 8 <= l.f_size);
    aligned
        && inside
        && l.f_size <= PY_FRAME_READ_MAX
        && l.ts_frame <= PY_TSTATE_FIELD_MAX
        && l.ts_thread_id <= PY_TSTATE_FIELD_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_version_is_usable_by_the_kernel() {
        for minor in 8..=13 {
            let l = for_minor(minor).unwrap();
            assert_eq!(l.minor, minor);
            assert!(kernel_usable(&l), "3.{minor}");
            assert_eq!(l.co_qualname.is_some(), minor >= 11);
            assert_eq!(l.co_code_adaptive.is_some(), minor >= 11);
        }
        assert_eq!(for_minor(7), None);
        assert_eq!(for_minor(14), None);
    }

    #[test]
    fn versions_parse() {
        assert_eq!(version_of_hex(0x030b_07f0), (3, 11, 7));
        assert_eq!(version_of_hex(0x030d_00f0), (3, 13, 0));
        assert_eq!(parse_version("3.10.13"), Some((3, 10, 13)));
        assert_eq!(parse_version("3.8.18+"), Some((3, 8, 18)));
        assert_eq!(parse_version("3.12.0rc1"), Some((3, 12, 0)));
        assert_eq!(parse_version("3.x"), None);
    }

    #[test]
    fn py_get_version_both_code_models() {
        let strings = |a: u64| match a {
            0x5000 => Some("%.80s (%.80s) %.80s".to_string()),
            0x6000 => Some("3.9.18".to_string()),
            0x7000 => Some("3.10.13".to_string()),
            _ => None,
        };
        // PIC: lea 0x5000(%rip),%rdx (format, not rcx) then lea ...(%rip),%rcx.
        let va = 0x1000u64;
        let mut code = vec![0x48, 0x8d, 0x15, 0, 0, 0, 0];
        let at = va + code.len() as u64 + 7;
        let disp = (0x6000i64 - at as i64) as i32;
        code.extend([0x48, 0x8d, 0x0d]);
        code.extend(disp.to_le_bytes());
        assert_eq!(decode_py_get_version(&code, va, strings), Some((3, 9, 18)));
        // Non-PIE: mov $0x7000,%ecx.
        let code = [0x90, 0xb9, 0x00, 0x70, 0x00, 0x00];
        assert_eq!(decode_py_get_version(&code, va, strings), Some((3, 10, 13)));
        assert_eq!(decode_py_get_version(&[0x90; 16], va, strings), None);
    }

    #[test]
    fn autotss_both_code_models() {
        // PIC: mov _PyRuntime@GOTPCREL(%rip),%rax; lea 0x250(%rax),%rdi.
        let code = [
            0x48, 0x8b, 0x05, 1, 2, 3, 4, 0x48, 0x8d, 0xb8, 0x50, 0x02, 0, 0,
        ];
        assert_eq!(decode_autotss(&code, 0x1000, 0x9000), Some(0x250));
        // Non-PIE (Debian's python3.11): mov key(%rip),%edi, key = _PyRuntime + 592 + 4.
        let va = 0x4f_7c30u64;
        let runtime = 0xa5_b740u64;
        let key = runtime + 592 + 4;
        let disp = (key as i64 - (va as i64 + 4 + 6)) as i32;
        let mut code = vec![0xf3, 0x0f, 0x1e, 0xfa, 0x8b, 0x3d];
        code.extend(disp.to_le_bytes());
        assert_eq!(decode_autotss(&code, va, runtime), Some(592));
        assert_eq!(decode_autotss(&[0xc3], va, runtime), None);
    }

    #[test]
    fn debug_offsets_of_313_match_the_table_and_override_it() {
        // 3.13.0's own values (recorded from a pyenv build's _PyRuntime).
        let mut b = vec![0u8; DEBUG_OFFSETS_LEN];
        b[..8].copy_from_slice(b"xdebugpy");
        let put = |b: &mut Vec<u8>, o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
        put(&mut b, 8, 0x030d_00f0);
        for (o, v) in [
            (40, 632),
            (64, 7264),
            (72, 7344),
            (168, 8),
            (176, 16),
            (184, 72),
            (192, 152),
            (232, 8),
            (240, 0),
            (248, 56),
            (264, 70),
            (280, 112),
            (288, 120),
            (296, 128),
            (304, 136),
            (312, 68),
            (344, 200),
            (560, 40),
        ] {
            put(&mut b, o, v);
        }
        let table = for_minor(13).unwrap();
        let mut l = table;
        assert_eq!(apply_debug_offsets(&mut l, &b), Some(vec![]));
        assert_eq!(l, table);
        // A build whose thread state differs: the interpreter's word wins.
        put(&mut b, 192, 160);
        assert_eq!(apply_debug_offsets(&mut l, &b), Some(vec!["thread_id"]));
        assert_eq!(l.ts_thread_id, 160);
        // Free-threaded builds and other versions are not taken.
        put(&mut b, 16, 1);
        assert_eq!(apply_debug_offsets(&mut l, &b), None);
        put(&mut b, 16, 0);
        put(&mut b, 8, 0x030e_00f0);
        assert_eq!(apply_debug_offsets(&mut l, &b), None);
        assert_eq!(apply_debug_offsets(&mut l, b"xdebug"), None);
    }
}
