//! What a report says about the kernel's table walk of a process's stacks (pure).

use crate::model::StackFallback;

/// The reason of fallbacks that only last until the file's table is built.
pub const TRANSIENT: &str = "no table loaded";

/// A warning when some of a process's stacks could not be walked in the kernel for a lasting
/// reason (code without CFI, JIT code, CFI the tables cannot express): those sockets got a
/// stack copy instead, complete but dearer. Fallbacks while a table was being built are not
/// worth a warning.
pub fn warning(fallbacks: &[StackFallback]) -> Option<String> {
    let mut lasting: Vec<&StackFallback> =
        fallbacks.iter().filter(|f| f.reason != TRANSIENT).collect();
    if lasting.is_empty() {
        return None;
    }
    lasting.sort_by(|a, b| b.count.cmp(&a.count).then(a.at.cmp(&b.at)));
    let total: u64 = lasting.iter().map(|f| f.count).sum();
    let shown: Vec<String> = lasting
        .iter()
        .take(3)
        .map(|f| format!("{} at {} ({})", f.reason, f.at, f.count))
        .collect();
    let more = if lasting.len() > 3 {
        format!("; {} more place(s)", lasting.len() - 3)
    } else {
        String::new()
    };
    Some(format!(
        "{total} stack(s) could not be walked in the kernel and were copied and unwound in userspace instead (complete, but dearer per socket: docs/benchmarks.md): {}{more}",
        shown.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fb(reason: &str, at: &str, count: u64) -> StackFallback {
        StackFallback {
            reason: reason.into(),
            at: at.into(),
            count,
        }
    }

    #[test]
    fn lasting_fallbacks_are_named_most_frequent_first() {
        let w = warning(&[
            fb(TRANSIENT, "/lib/libc.so.6", 50),
            fb("no CFI", "asm_entry+0x4 in /usr/bin/app", 3),
            fb(
                "no executable file mapping",
                "0x7f0000001000 (JIT or anonymous code)",
                9,
            ),
        ])
        .unwrap();
        assert!(w.starts_with("12 stack(s) could not be walked"), "{w}");
        let jit = w.find("no executable file mapping").unwrap();
        let cfi = w
            .find("no CFI at asm_entry+0x4 in /usr/bin/app (3)")
            .unwrap();
        assert!(jit < cfi, "{w}");
        assert!(
            !w.contains("libc"),
            "transient fallbacks are not warned of: {w}"
        );
    }

    #[test]
    fn transient_only_or_none_is_quiet() {
        assert_eq!(warning(&[]), None);
        assert_eq!(warning(&[fb(TRANSIENT, "/x", 5)]), None);
    }

    #[test]
    fn many_places_are_summarised() {
        let f: Vec<StackFallback> = (0..5).map(|i| fb("no CFI", &format!("f{i}"), 1)).collect();
        let w = warning(&f).unwrap();
        assert!(w.ends_with("; 2 more place(s)"), "{w}");
    }
}
