//! Which language runtime a process runs, from its executable and mapped libraries: it decides
//! how its stacks are taken (CPython builds lack frame pointers) and what the report says when
//! JIT frames cannot be named. `detect` is pure; `of` reads /proc.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    CPython,
    Jvm,
    Node,
    /// Anything else: native code, Go (see `gohttp`), other interpreters.
    Other,
}

impl Runtime {
    /// Whether its code is usually built without frame pointers, so stacks need DWARF.
    pub fn lacks_frame_pointers(self) -> bool {
        self == Runtime::CPython
    }
}

/// From the executable's path and the paths of its file mappings.
pub fn detect<'a>(exe: &str, mapped: impl IntoIterator<Item = &'a str>) -> Runtime {
    let base = exe.rsplit('/').next().unwrap_or(exe);
    let mut libs = mapped
        .into_iter()
        .map(|p| p.rsplit('/').next().unwrap_or(p));
    if base == "node" || base == "nodejs" {
        return Runtime::Node;
    }
    let (mut jvm, mut python) = (false, base.starts_with("python"));
    for l in libs.by_ref() {
        jvm |= l == "libjvm.so";
        python |= l.starts_with("libpython");
    }
    if jvm {
        Runtime::Jvm
    } else if python {
        Runtime::CPython
    } else {
        Runtime::Other
    }
}

pub fn of(pid: u32) -> Runtime {
    let exe = std::fs::read_link(crate::host::procfs::proc_path(pid, "exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let maps = crate::host::procfs::maps(pid);
    detect(&exe, maps.iter().map(|m| m.path.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_by_binary() {
        assert_eq!(detect("/usr/bin/node", []), Runtime::Node);
        assert_eq!(
            detect("/root/.pyenv/versions/3.12.1/bin/python3.12", []),
            Runtime::CPython
        );
        assert_eq!(
            detect("/usr/bin/uwsgi", ["/usr/lib/libpython3.11.so.1.0"]),
            Runtime::CPython
        );
        assert_eq!(
            detect(
                "/usr/lib/jvm/java-17/bin/java",
                ["/usr/lib/jvm/java-17/lib/server/libjvm.so"]
            ),
            Runtime::Jvm
        );
        assert_eq!(detect("/usr/bin/curl", ["/lib/libc.so.6"]), Runtime::Other);
        assert!(Runtime::CPython.lacks_frame_pointers());
        assert!(!Runtime::Jvm.lacks_frame_pointers());
    }
}
