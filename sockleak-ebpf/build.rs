// Emits `--cfg bpf_target_arch="..."` so `args.rs` picks the right pt_regs layout.
fn main() {
    if let Err(e) = aya_build::emit_bpf_target_arch_cfg() {
        panic!("cannot determine the BPF target architecture: {e:#}");
    }
}
