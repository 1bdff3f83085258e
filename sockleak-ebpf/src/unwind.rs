//! Kernel-side DWARF unwinding for code without frame pointers (`stack_mode::TABLES`; the
//! userspace half is `sockleak/src/symbols/unwind_tables/`). Userspace compiles each mapped
//! file's CFI into sorted 8-byte rows in UNWIND_ROWS (one copy per file, whoever maps it) and
//! lists each process's executable mappings in UNWIND_PROCS. Per socket, a bounded loop walks
//! the stack: find the row of the pc (a per-CPU cache, else two binary searches in a global
//! function the verifier checks once), compute the caller's frame, read its return address
//! through a window of stack memory that serves several frames.
//!
//! A walk that completes names the stack by the hash of its frames, like the frame-pointer
//! walk: a stack seen before in the process costs a STACK_CACHE lookup; a new one is sent to
//! userspace with its frames (`WalkedStack`). A walk that stops short (JIT code, the vDSO, a
//! file without rows yet, code without CFI) returns where and why, and the caller copies the
//! stack for userspace instead (`stack.rs`), which also builds what was missing.

use aya_ebpf::{
    helpers::generated::{bpf_get_smp_processor_id, bpf_loop, bpf_probe_read_user},
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use sockleak_common::{
    counters::LossCause,
    event::{EventKind, Syscall},
    socket::{NO_STACK, SocketRecord, StackKey},
    stack::StackCopy,
    unwind::{
        UNWIND_CACHE_SLOTS, UNWIND_MAX_MAPPINGS, UnwindCacheEntry, UnwindMapping, UnwindProc,
        UnwindRow, WALK_ID_BASE, WALK_MAX_FRAMES, WalkedStack, counter, row_kind, walk_status,
    },
};

use crate::{
    args::Regs,
    clock::now,
    filter::Task,
    maps::{EVENTS, STACK_CACHE, count_loss, wakeup_bytes},
};

const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Rows of every file with a table, back to back; userspace sizes it (`--unwind-table-mib`)
/// and fills it through a shared mapping. An array: its lookups are inlined by the verifier,
/// no helper call per search step.
#[map]
pub static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// tgid -> its executable file mappings and where their rows are (TABLES processes only).
#[map]
pub static UNWIND_PROCS: HashMap<u32, UnwindProc> =
    HashMap::with_max_entries(8192, BPF_F_NO_PREALLOC);

/// Per-CPU direct-mapped cache of rows by (process, generation, pc): a call site walked again
/// skips both searches.
#[map]
static UNWIND_CACHE: PerCpuArray<UnwindCacheEntry> =
    PerCpuArray::with_max_entries(UNWIND_CACHE_SLOTS, 0);

/// Per-CPU: the walk's frames, already laid out as the event that announces a new stack.
#[map]
static UNWIND_SCRATCH: PerCpuArray<WalkedStack> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU state of the walk (its bpf_loop context): in a map, not on the BPF stack, which
/// kernels before 6.13 count whole along the call chain (512 bytes, the caller's included).
#[map]
static UNWIND_WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU window of user stack memory (its own: the frame-pointer walk has another).
#[map]
static UNWIND_WINDOW: PerCpuArray<[u64; WINDOW_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU: where the last walk stopped short ([status | frames << 32, pc]), for the copy that
/// stands in for it (`take_stop`).
#[map]
static UNWIND_STOP: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counters (`unwind::counter`), and [ID_SEQ] the sequence walk ids are made from.
#[map]
pub static UNWIND_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT + 1, 0);
const ID_SEQ: u32 = counter::COUNT;

const WINDOW_WORDS: usize = 64;
/// Mixed into the first hash so a walked stack never shares a STACK_CACHE key with a
/// frame-pointer chain of the same process (their ids live in different spaces).
const WALK_HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325 ^ 0x5741_4c4b;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline(always)]
fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(FNV_PRIME)
}

/// Not inlined, like `note_stop` and `announce`: each inlined map lookup keeps its key in a
/// stack slot of its own, and the walk's caller has few bytes to spare (see UNWIND_WALK).
#[inline(never)]
fn bump(i: u32, by: u64) -> u64 {
    match UNWIND_COUNTS.get_ptr_mut(i) {
        Some(p) => unsafe {
            *p = (*p).wrapping_add(by);
            *p
        },
        None => 0,
    }
}

/// `v` with every bound the verifier knows of it forgotten (v ^ s ^ s, `s` unknown to it):
/// the variables of a binary search stop multiplying the verifier's states.
#[inline(always)]
fn opaque(v: u64, seed: u64) -> u64 {
    let mut v = v;
    unsafe {
        core::arch::asm!(
            "{0} ^= {1}",
            "{0} ^= {1}",
            inout(reg) v,
            in(reg) seed,
            options(pure, nomem, nostack)
        );
    }
    v
}

/// The mapping holding `pc`: the last one starting at or below it.
#[inline(always)]
fn find_mapping(p: &UnwindProc, pc: u64, seed: u64) -> Option<UnwindMapping> {
    let mut lo: u32 = 0;
    let mut hi: u32 = p.n & (2 * UNWIND_MAX_MAPPINGS as u32 - 1);
    if hi > UNWIND_MAX_MAPPINGS as u32 {
        hi = UNWIND_MAX_MAPPINGS as u32;
    }
    let mut i = 0;
    // 2^7 > UNWIND_MAX_MAPPINGS.
    while i < 7 {
        lo = opaque(lo as u64, seed) as u32;
        hi = opaque(hi as u64, seed) as u32;
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        if p.maps[(mid as usize) & (UNWIND_MAX_MAPPINGS - 1)].start <= pc {
            lo = mid + 1;
        } else {
            hi = mid;
        }
        i += 1;
    }
    if lo == 0 {
        return None;
    }
    let m = p.maps[((lo - 1) as usize) & (UNWIND_MAX_MAPPINGS - 1)];
    (pc < m.end).then_some(m)
}

/// The row for `pc`, or the walk status saying why there is none.
#[inline(always)]
fn find_row(p: &UnwindProc, pc: u64, seed: u64) -> Result<UnwindRow, u32> {
    let m = find_mapping(p, pc, seed).ok_or(walk_status::NO_MAPPING)?;
    if m.count == 0 {
        return Err(walk_status::NO_TABLE);
    }
    let rel = pc.wrapping_sub(m.adj);
    if rel > u32::MAX as u64 {
        return Err(walk_status::NO_CFI); // below the first row
    }
    let rel = rel as u32;
    let first = m.first;
    let mut lo = first;
    let mut hi = first.wrapping_add(m.count);
    let mut i = 0;
    // 2^23 > MAX_FILE_ROWS: the search always converges.
    while i < 23 {
        lo = opaque(lo as u64, seed) as u32;
        hi = opaque(hi as u64, seed) as u32;
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        let Some(r) = UNWIND_ROWS.get(mid) else {
            return Err(walk_status::NO_TABLE);
        };
        if r.pc <= rel {
            lo = mid + 1;
        } else {
            hi = mid;
        }
        i += 1;
    }
    if lo < hi || lo == first {
        return Err(walk_status::NO_CFI);
    }
    UNWIND_ROWS
        .get(lo - 1)
        .copied()
        .ok_or(walk_status::NO_TABLE)
}

/// Set in `sockleak_unwind_row`'s result when there is no row; the low byte is the status.
const ROW_ERR: u64 = 1 << 63;

#[inline(always)]
fn pack(r: UnwindRow) -> u64 {
    r.cfa_off as u64 | (r.kind as u64) << 16 | ((r.rbp as u8) as u64) << 24
}

/// The row for `pc` in process `tgid` whose UnwindProc had `generation` when the walk began,
/// packed (cfa_off | kind << 16 | rbp << 24), or ROW_ERR | walk status. A global function:
/// the verifier checks it once, on its own, instead of once per state of every program that
/// walks a stack (which exceeded its 1M-instruction budget in the accept programs).
#[inline(always)]
fn sockleak_unwind_row(tgid: u64, pc: u64, generation: u64) -> u64 {
    let tag = ((tgid & 0xffff_ffff) << 32) | (generation & 0xffff_ffff);
    let slot = ((pc ^ (pc >> 12) ^ tag) as u32) & (UNWIND_CACHE_SLOTS - 1);
    let entry = UNWIND_CACHE.get_ptr_mut(slot);
    if let Some(e) = entry {
        let e = unsafe { &*e };
        if e.pc == pc && e.tag == tag {
            return pack(e.row);
        }
    }
    let Some(p) = UNWIND_PROCS.get_ptr(tgid as u32) else {
        return ROW_ERR | walk_status::NO_MAPPING as u64;
    };
    let p = unsafe { &*p };
    match find_row(p, pc, generation) {
        Ok(r) => {
            // Cached under the generation the rows were found with.
            if let Some(e) = entry {
                let e = unsafe { &mut *e };
                e.pc = pc;
                e.tag = ((tgid & 0xffff_ffff) << 32) | p.generation as u64;
                e.row = r;
            }
            pack(r)
        }
        Err(st) => ROW_ERR | st as u64,
    }
}

/// State of a table walk (in UNWIND_WALK).
#[repr(C)]
struct Walk {
    ip: u64,
    sp: u64,
    bp: u64,
    hash: u64,
    /// tgid << 32 | tid.
    who: u64,
    /// The stack's key in STACK_CACHE and its id, here rather than on the BPF stack.
    key: StackKey,
    id: i32,
    _pad2: u32,
    generation: u64,
    /// Where the walk stopped short (a pc), for userspace.
    stop_pc: u64,
    /// UNWIND_WINDOW holds user memory [base, base + have).
    base: u64,
    have: u64,
    tgid: u32,
    n: u32,
    status: u32,
    _pad: u32,
}

/// The user word at `addr`, through the window: refilled from `addr` when outside it; near the
/// end of the stack mapping (a read crossing it fails whole) 64 bytes, then the word alone.
#[inline(always)]
fn read_word(w: &mut Walk, addr: u64) -> Option<u64> {
    let buf = unsafe { &mut *UNWIND_WINDOW.get_ptr_mut(0)? };
    let mut off = addr.wrapping_sub(w.base);
    if off >= w.have || off & 7 != 0 {
        w.base = addr;
        off = 0;
        w.have = if read_user(buf.as_mut_ptr(), WINDOW_WORDS * 8, addr) {
            (WINDOW_WORDS * 8) as u64
        } else if read_user(buf.as_mut_ptr(), 64, addr) {
            64
        } else {
            0
        };
        if w.have == 0 {
            // Into the window too (nothing on the BPF stack); it stays empty for the next read.
            return read_user(buf.as_mut_ptr(), 8, addr).then(|| buf[0]);
        }
    }
    Some(buf[((off / 8) as usize) & (WINDOW_WORDS - 1)])
}

#[inline(always)]
fn read_user(dst: *mut u64, len: usize, addr: u64) -> bool {
    unsafe { bpf_probe_read_user(dst.cast(), len as u32, addr as *const core::ffi::c_void) == 0 }
}

/// One frame: record the ip, find its row, compute the caller's registers. 1 stops the loop.
unsafe extern "C" fn step(_i: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(w) = UNWIND_WALK.get_ptr_mut(0) else {
        return 1;
    };
    let w = unsafe { &mut *w };
    // A map value's address kept in the map would be a plain number to the verifier: fetched.
    let Some(out) = UNWIND_SCRATCH.get_ptr_mut(0) else {
        w.status = walk_status::NO_TABLE;
        return 1;
    };
    let out = unsafe { &mut *out };
    let n = opaque(w.n as u64, w.generation) as usize;
    if n >= WALK_MAX_FRAMES {
        w.status = walk_status::TRUNCATED;
        return 1;
    }
    out.ips[n & (WALK_MAX_FRAMES - 1)] = w.ip;
    w.hash = mix(w.hash, w.ip);
    w.n = n as u32 + 1;
    // A return address is looked up inside its call (ra - 1); the first ip is where the
    // syscall left off.
    let pc = if n == 0 { w.ip } else { w.ip.wrapping_sub(1) };
    let v = sockleak_unwind_row(w.tgid as u64, pc, w.generation);
    if v & ROW_ERR != 0 {
        w.status = (v & 0xff) as u32;
        w.stop_pc = pc;
        return 1;
    }
    let (cfa_off, kind, rbp) = ((v & 0xffff) << 3, (v >> 16) as u8, (v >> 24) as u8 as i8);
    let cfa = match kind {
        row_kind::RSP => w.sp.wrapping_add(cfa_off),
        row_kind::RBP => w.bp.wrapping_add(cfa_off),
        row_kind::PLT => {
            w.sp.wrapping_add(cfa_off)
                .wrapping_add((((w.ip & 15) >= rbp as u64) as u64) << 3)
        }
        row_kind::STOP => {
            w.status = walk_status::COMPLETE;
            return 1;
        }
        k => {
            w.status = match k {
                row_kind::GAP => walk_status::NO_CFI,
                row_kind::SIGNAL => walk_status::SIGNAL,
                _ => walk_status::UNSUPPORTED,
            };
            w.stop_pc = pc;
            return 1;
        }
    };
    // The caller's frame lies above this one (the stack grows down): anything else means
    // the rows do not describe this code, and the walk would not end.
    if cfa <= w.sp || cfa - w.sp > 1 << 24 {
        w.status = walk_status::BAD_FRAME;
        w.stop_pc = pc;
        return 1;
    }
    let Some(ra) = read_word(w, cfa - 8) else {
        w.status = walk_status::READ_FAILED;
        w.stop_pc = pc;
        return 1;
    };
    if rbp != 0 && kind != row_kind::PLT {
        let Some(bp) = read_word(w, cfa.wrapping_add((rbp as i64 * 8) as u64)) else {
            w.status = walk_status::READ_FAILED;
            w.stop_pc = pc;
            return 1;
        };
        w.bp = bp;
    }
    if ra == 0 {
        w.status = walk_status::COMPLETE;
        return 1;
    }
    w.sp = cfa;
    w.ip = ra;
    0
}

/// Walks the user stack with the tables and names it: (stack id, leaf caller). None when it
/// stopped short (the caller copies the stack instead; `take_stop` says where).
#[inline(always)]
pub fn capture(regs: &Regs, task: Task) -> Option<(i32, u64)> {
    let who = (task.tgid as u64) << 32 | task.tid as u64;
    let v = sockleak_unwind_capture(regs.ip(), regs.sp(), regs.fp(), who);
    if !walk_status::walked((v >> 32) as u32) {
        return None;
    }
    let caller = UNWIND_SCRATCH
        .get(0)
        .map_or(0, |o| if o.n > 1 { o.ips[1] } else { 0 });
    Some((v as u32 as i32, caller))
}

/// The table walk and the naming of its stack: `(status << 32) | stack id`. A global
/// function: the verifier checks it once, on its own, not once per state of every program
/// that takes a stack (inlined, it took sys_exit_recvmmsg to 784k of the 1M instructions a
/// program may cost the verifier). `who`: tgid << 32 | tid.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn sockleak_unwind_capture(ip: u64, sp: u64, bp: u64, who: u64) -> u64 {
    let tgid = (who >> 32) as u32;
    // No mappings (yet): a new image since exec, not listed by userspace so far.
    let Some(p) = UNWIND_PROCS.get_ptr(tgid) else {
        note_stop(walk_status::NO_TABLE, 0, ip);
        return (walk_status::NO_TABLE as u64) << 32;
    };
    let Some(wp) = UNWIND_WALK.get_ptr_mut(0) else {
        note_stop(walk_status::NO_TABLE, 0, ip);
        return (walk_status::NO_TABLE as u64) << 32;
    };
    // Everything the walk and the naming keep lives in the map value: the BPF stack of this
    // function counts against its callers' 512 bytes on kernels before 6.13.
    let w = unsafe { &mut *wp };
    w.ip = ip;
    w.sp = sp;
    w.bp = bp;
    w.who = who;
    w.hash = WALK_HASH_SEED;
    w.generation = unsafe { (*p).generation } as u64;
    w.stop_pc = 0;
    w.base = 0;
    w.have = 0;
    w.tgid = tgid;
    w.n = 0;
    w.status = walk_status::TRUNCATED;
    // bpf_loop's context must be on the stack: a word, the state being in UNWIND_WALK.
    let mut ctx = 0u64;
    unsafe {
        bpf_loop(
            WALK_MAX_FRAMES as u32 + 1,
            step as *mut core::ffi::c_void,
            (&raw mut ctx).cast(),
            0,
        )
    };
    bump(counter::FRAMES, w.n as u64);
    if !walk_status::walked(w.status) {
        bump(counter::FALLBACK, 1);
        note_stop(w.status, w.n, w.stop_pc);
        return (w.status as u64) << 32;
    }
    bump(counter::WALKED, 1);
    w.key.hash = w.hash;
    w.key.tgid = w.tgid;
    w.key._pad = 0;
    w.id = match unsafe { STACK_CACHE.get(&w.key) } {
        Some(id) => *id,
        None => announce(w),
    };
    (w.status as u64) << 32 | w.id as u32 as u64
}

/// A stack not seen before in the process: a new id, and its frames to userspace. The cache
/// learns the id only once userspace is sure to hear of it.
#[inline(never)]
fn announce(w: &mut Walk) -> i32 {
    let Some(o) = UNWIND_SCRATCH.get_ptr_mut(0) else {
        return NO_STACK;
    };
    let o = unsafe { &mut *o };
    let task = Task {
        tgid: (w.who >> 32) as u32,
        tid: w.who as u32,
    };
    let caller = if w.n > 1 { o.ips[1] } else { 0 };
    let cpu = unsafe { bpf_get_smp_processor_id() };
    // Unique without atomics: this CPU's count, tagged with the CPU (256 of them; an id
    // comes back after 2M new stacks on one CPU).
    w.id = WALK_ID_BASE | (((cpu & 0xff) << 20) | (bump(ID_SEQ, 1) as u32 & 0xf_ffff)) as i32;
    // Written in place (the event is in a map): nothing of it on the BPF stack.
    o.event.ts_ns = now();
    o.event.tgid = task.tgid;
    o.event.tid = task.tid;
    o.event.kind = EventKind::NewStack as u8;
    o.event.syscall = Syscall::None as u8;
    o.event.flags = 0;
    o.event.fd = -1;
    o.event.arg = 0;
    o.event.arg2 = 0;
    o.event.arg3 = 0;
    o.event.record = SocketRecord::EMPTY;
    o.event.record.stack_id = w.id;
    o.event.record.caller = caller;
    o.event.record.tid = task.tid;
    o.hash = w.hash;
    o.n = w.n;
    o.status = w.status;
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    let flags = if EVENTS.query(0) >= wakeup_bytes() {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output::<WalkedStack>(&*o, flags).is_err() {
        count_loss(LossCause::RingBufFull);
        count_loss(LossCause::StackLost);
        return NO_STACK;
    }
    let _ = STACK_CACHE.insert(&w.key, &w.id, 0);
    w.id
}

#[inline(never)]
fn note_stop(status: u32, frames: u32, pc: u64) {
    if let Some(v) = UNWIND_STOP.get_ptr_mut(0) {
        unsafe { *v = [status as u64 | (frames as u64) << 32, pc] };
    }
}

/// Where the last walk on this CPU stopped short, cleared as it is taken, into the copy that
/// stands in for it (null: only cleared): zeros when no walk stopped (a copy of a STACK_COPY
/// process).
#[inline(always)]
pub fn take_stop_into(c: *mut StackCopy) {
    let Some(v) = UNWIND_STOP.get_ptr_mut(0) else {
        return;
    };
    unsafe {
        let [a, pc] = *v;
        // Word by word: a whole-array store becomes a call to memset, a frame of its own that
        // kernels before 6.13 count in the chain (512 bytes in all).
        core::ptr::write_volatile(&mut (*v)[0], 0);
        core::ptr::write_volatile(&mut (*v)[1], 0);
        if !c.is_null() {
            (*c).walk_status = a as u32;
            (*c).walk_frames = (a >> 32) as u32;
            (*c).walk_stop = pc;
        }
    }
}

/// Drops a process's mappings (exec, exit): a walk finds none and copies until userspace has
/// listed the new image.
#[inline(always)]
pub fn forget(tgid: u32) {
    let _ = UNWIND_PROCS.remove(&tgid);
}
