//! HotSpot JVMs without flags: the layout the kernel walk needs to recognize interpreted
//! frames (`runtime::JvmProc`: the interpreter's code, the code cache, the frame slots) and
//! what names their methods, from the JVM's VMStructs tables read in its memory. JDK 11 and
//! later on x86_64 (verified on 11, 17, 21 and 25).

pub mod method;
pub mod perfdata;
pub mod vmstructs;

use sockleak_common::runtime::JvmProc;

use crate::{
    host::{
        procfs::Mapping,
        procmem::{MemError, Memory},
    },
    symbols::{
        elf::{ElfInfo, mapped_file},
        runtime_frames::Refused,
    },
};
use vmstructs::VmStructs;

/// Bytes below an interpreted frame's frame pointer of its `Method*` (x86_64: `frame_x86.hpp`'s
/// `interpreter_frame_method_offset`, -3 words, one below `last_sp`, which VMStructs exports)
/// and of its bytecode pointer (-8 words since JDK 9; not exported).
const FP_METHOD: u32 = 24;
const FP_BCP: u32 = 64;

/// A JVM found in a process.
#[derive(Debug, Clone)]
pub struct Found {
    /// For the kernel (its `exec_gen` and `generation` still to be set).
    pub proc: JvmProc,
    pub offsets: method::Offsets,
    pub major: i32,
    pub release: String,
    /// `-XX:+PreserveFramePointer`.
    pub frame_pointers: bool,
    pub libjvm: String,
}

/// Finds and checks the JVM of process `pid`.
pub fn probe(pid: u32, maps: &[Mapping], mem: &impl Memory) -> Result<Found, Refused> {
    let Some(m) = maps
        .iter()
        .find(|m| m.offset == 0 && m.path.rsplit('/').next() == Some("libjvm.so"))
    else {
        return Err(Refused::Absent);
    };
    let libjvm = m.path.clone();
    if !cfg!(target_arch = "x86_64") {
        return Err(Refused::Unsupported(
            "interpreted Java frames are read on x86_64 only (the frame layout differs elsewhere)"
                .into(),
        ));
    }
    let elf = ElfInfo::read(&mapped_file(pid, m), vmstructs::SYMBOLS)
        .ok_or_else(|| Refused::NotReady(format!("cannot read {libjvm}")))?;
    if vmstructs::SYMBOLS.iter().any(|s| elf.sym(s).is_none()) {
        return Err(Refused::Unsupported(format!(
            "{libjvm} does not export its VMStructs tables (not a HotSpot JVM?)"
        )));
    }
    let bias = elf
        .bias(maps, &libjvm)
        .ok_or_else(|| Refused::NotReady(format!("{libjvm} is not fully mapped yet")))?;
    let unreadable = |e: MemError| Refused::NotReady(format!("reading the JVM's tables: {e}"));
    let vm = VmStructs::read(mem, |n| elf.sym(n).map(|v| v + bias)).map_err(unreadable)?;
    let missing = |what: &str| {
        Refused::Unsupported(format!(
            "{libjvm}: VMStructs lacks {what}: this JVM's frames are not named"
        ))
    };
    let off = |t: &str, names: &[&str]| {
        vm.offset(t, names)
            .ok_or_else(|| missing(&format!("{t}::{}", names[0])))
    };
    let size = |t: &str| vm.size(t).ok_or_else(|| missing(&format!("sizeof({t})")));
    let stat = |t: &str, n: &str| {
        vm.address(t, n)
            .ok_or_else(|| missing(&format!("{t}::{n}")))
    };
    let major = mem
        .i32(stat("Abstract_VM_Version", "_vm_major_version")?)
        .map_err(unreadable)?;
    let release = stat("Abstract_VM_Version", "_s_vm_release")
        .ok()
        .and_then(|a| mem.u64(a).ok())
        .and_then(|p| mem.cstr(p, 128).ok())
        .unwrap_or_default();
    if major < 11 {
        return Err(Refused::Unsupported(format!(
            "JDK {major} ({libjvm}): sockleak names the interpreted frames of JDK 11 and later"
        )));
    }
    let cp_source_file = vm.offset("ConstantPool", &["_source_file_name_index"]);
    let offsets = method::Offsets {
        method_const: off("Method", &["_constMethod"])?,
        cm_constants: off("ConstMethod", &["_constants"])?,
        cm_flags: off("ConstMethod", &["_flags._flags", "_flags"])?,
        cm_code_size: off("ConstMethod", &["_code_size"])?,
        cm_name_index: off("ConstMethod", &["_name_index"])?,
        cm_signature_index: off("ConstMethod", &["_signature_index"])?,
        cm_method_idnum: off("ConstMethod", &["_method_idnum"])?,
        sizeof_const_method: size("ConstMethod")?,
        cp_pool_holder: off("ConstantPool", &["_pool_holder"])?,
        cp_source_file,
        ik_source_file: match cp_source_file {
            Some(_) => None,
            None => Some(off("InstanceKlass", &["_source_file_name_index"])?),
        },
        sizeof_constant_pool: size("ConstantPool")?,
        klass_name: off("Klass", &["_name"])?,
        ik_methods: off("InstanceKlass", &["_methods"])?,
        array_data: off("Array<Method*>", &["_data"])?,
        symbol_length: match vm.offset("Symbol", &["_length"]) {
            Some(o) => o,
            // Before JDK 12: u4 _length_and_refcount, the length in its high half.
            None => off("Symbol", &["_length_and_refcount"])? + 2,
        },
        symbol_body: off("Symbol", &["_body"])?,
        unsigned5_excluded: u8::from(major >= 20),
    };
    // The interpreter's code: AbstractInterpreter::_code, a StubQueue.
    let queue = mem
        .u64(stat("AbstractInterpreter", "_code")?)
        .map_err(unreadable)?;
    if queue == 0 {
        return Err(Refused::NotReady(
            "the JVM's interpreter is not generated yet".into(),
        ));
    }
    let start = mem
        .u64(queue + off("StubQueue", &["_stub_buffer"])?)
        .map_err(unreadable)?;
    let limit = mem
        .i32(queue + off("StubQueue", &["_buffer_limit"])?)
        .map_err(unreadable)?;
    let cache_lo = mem
        .u64(stat("CodeCache", "_low_bound")?)
        .map_err(unreadable)?;
    let cache_hi = mem
        .u64(stat("CodeCache", "_high_bound")?)
        .map_err(unreadable)?;
    let interp_hi = start.saturating_add(u64::try_from(limit).unwrap_or(0));
    if start == 0 || !(1..64 << 20).contains(&limit) || start < cache_lo || interp_hi > cache_hi {
        return Err(missing("an interpreter inside its code cache"));
    }
    // The frame slots the walk reads: VMStructs gives last_sp; the Method* is the word below.
    if vm.ints.get("frame::interpreter_frame_last_sp_offset") != Some(&-2) {
        return Err(missing(
            "the x86_64 interpreter frame (last_sp at -2 words)",
        ));
    }
    let frame_pointers = bool_flag(&vm, mem, "PreserveFramePointer").unwrap_or(false);
    let call_stub = mem
        .u64(stat("StubRoutines", "_call_stub_return_address")?)
        .map_err(unreadable)?;
    let proc = JvmProc {
        interp_lo: start,
        interp_hi,
        cache_lo,
        cache_hi,
        call_stub,
        unloads: 0,
        method_const: u32::try_from(offsets.method_const).unwrap_or(u32::MAX),
        const_code_size: u32::try_from(offsets.cm_code_size).unwrap_or(u32::MAX),
        const_size: u32::try_from(offsets.sizeof_const_method).unwrap_or(u32::MAX),
        fp_method: FP_METHOD,
        fp_bcp: FP_BCP,
        exec_gen: 0,
        jit_fp: u8::from(frame_pointers),
        _pad: [0; 2],
    };
    Ok(Found {
        proc,
        offsets,
        major,
        release,
        frame_pointers,
        libjvm,
    })
}

/// The current value of a boolean -XX flag (VMStructs' `JVMFlag::flags` table).
fn bool_flag(vm: &VmStructs, mem: &impl Memory, name: &str) -> Option<bool> {
    let table = mem.u64(vm.address("JVMFlag", "flags")?).ok()?;
    let n = mem.u64(vm.address("JVMFlag", "numFlags")?).ok()?;
    let size = vm.size("JVMFlag")?;
    let name_off = vm.offset("JVMFlag", &["_name"])?;
    let addr_off = vm.offset("JVMFlag", &["_addr"])?;
    for i in 0..n.min(10_000) {
        let e = table + i * size;
        let Ok(p) = mem.u64(e + name_off) else {
            continue;
        };
        if p != 0 && mem.cstr(p, 64).ok().as_deref() == Some(name) {
            return Some(mem.u8(mem.u64(e + addr_off).ok()?).ok()? != 0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_jvm() {
        let maps = crate::host::procfs::maps(std::process::id());
        let mem = crate::host::procmem::Recorded::default();
        assert_eq!(
            probe(std::process::id(), &maps, &mem).unwrap_err(),
            Refused::Absent
        );
    }
}
