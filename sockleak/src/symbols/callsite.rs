//! Naming the call site of a stack: the first frame of the application, past the frames of
//! the runtime that made the socket on its behalf (libc, libuv and V8/Node internals, the JVM
//! and the JDK's java.net/sun.nio, CPython's interpreter and its stdlib, Go's runtime, syscall
//! and net packages). When the runtime made the socket on a later tick or another goroutine,
//! no application frame is on the stack: the call site says so instead of pretending.
//!
//! JIT frames are named from perf maps (blazesym reads /tmp/perf-PID.map): V8 writes
//! `JS:<tier><name> <file>:<line>:<col>` (and `Script:`, `Eval:` for top levels), CPython
//! `py::<name>:<file>`, the JVM (jcmd Compiler.perfmap) `<type> <class>.<method>(<args>)`.
//! Interpreted CPython and Java frames are named from the runtimes' own structures
//! (`Frame::runtime`); one that could not be named before the first application frame leaves
//! the call site unnamed (it may be the call site).
//!
//! Where uprobes joined a socket to the code that asked for it (`pick_origin`: Go's request,
//! Node's `net.connect`), that origin's stack names the call site instead.

use sockleak_common::origin::join;

use crate::symbols::stacks::Frame;

/// A call site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallSite {
    /// "function (file:line)" or "function (file)"; None when no frame of the application
    /// could be named.
    pub name: Option<String>,
    /// Set when the runtime made the socket asynchronously, or when JIT frames could not be
    /// named (with the flag that names them): what that means for the reader.
    pub note: Option<String>,
    /// Unnamed, and nothing in the stack tells one such call site from another (Node's runtime
    /// frames only): the process's sockets with this note are one group, not one per stack.
    pub shared: bool,
    /// The runtime made the socket on its own schedule (Go's dial goroutine, a later Node
    /// tick): the code that asked for it is elsewhere, and only an origin names it.
    pub deferred: bool,
}

/// Whether a process's sockets are joined to the code that asked for them (Go HTTP clients'
/// requests, Node's `net.connect`), or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    Joined,
    /// Why not, for the report.
    Unavailable(String),
}

impl From<Result<(), String>> for Origins {
    fn from(r: Result<(), String>) -> Origins {
        match r {
            Ok(()) => Origins::Joined,
            Err(why) => Origins::Unavailable(why),
        }
    }
}

/// What one frame is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Application (or third-party library) code, with its display name.
    App(String),
    /// The runtime's own code, with a display name when it is a managed-language frame.
    Runtime(Option<String>),
    /// Code in anonymous memory nobody named (a JIT frame without a perf map).
    UnnamedJit,
    /// Native code without a symbol.
    Unknown,
    /// An interpreted frame that could not be named: its runtime and why.
    Unnamed(&'static str, String),
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// How a script's location starts in a V8 perf-map name (after the function name).
const SCRIPT_STARTS: &[&str] = &[
    "node:",
    "/",
    "file:",
    "[",
    "evalmachine",
    "data:",
    "http:",
    "https:",
    "wasm",
];

/// `JS:^internalConnect node:net:1038:25` -> ("internalConnect", "node:net", 1038). The tags
/// that name script code are `JS:` (functions), `Script:` and `Eval:` (top levels) and, in
/// older Nodes, `LazyCompile:` and `Function:`; a name may hold spaces (`get hasSubscribers`),
/// so the location is the trailing `<file>:<line>:<col>` whose file starts like a script.
fn v8(sym: &str) -> Option<(String, String, Option<u32>)> {
    let (tag, rest) = sym.split_once(':')?;
    let top_level = match tag {
        "JS" | "LazyCompile" | "Function" => false,
        "Script" | "Eval" => true,
        _ => return None,
    };
    // Tier marks: ~ interpreted, ^ Sparkplug, + Maglev, * TurboFan.
    let rest = rest.trim_start_matches(['^', '*', '~', '+']);
    let at = std::iter::once(0)
        .chain(rest.match_indices(' ').map(|(i, _)| i + 1))
        .find(|i| {
            let loc = &rest[*i..];
            SCRIPT_STARTS.iter().any(|p| loc.starts_with(p))
        });
    let (name, loc) = match at {
        Some(i) => (rest[..i].trim(), rest[i..].trim()),
        None => (rest.trim(), ""),
    };
    // file:line:col, where the file may itself hold colons (node:net, file:///x.js).
    let mut parts = loc.rsplitn(3, ':');
    let (_col, line, file) = (parts.next(), parts.next(), parts.next());
    let (file, line) = match (file, line.and_then(|l| l.parse().ok())) {
        (Some(f), Some(l)) => (f.to_string(), Some(l)),
        _ => (loc.to_string(), None),
    };
    let name = match name {
        "" if top_level => "(top level)",
        "" => "(anonymous)",
        n => n,
    };
    Some((name.to_string(), file, line))
}

/// `py::open_leaky_connection:/srv/app/leak.py` -> ("open_leaky_connection", path).
fn cpython(sym: &str) -> Option<(String, String)> {
    let rest = sym.strip_prefix("py::")?;
    let (name, file) = rest.rsplit_once(':')?;
    Some((name.to_string(), file.to_string()))
}

/// `void Leak.openLeakyConnection(int)` -> "Leak.openLeakyConnection".
fn java(sym: &str) -> Option<String> {
    let open = sym.find('(')?;
    let head = &sym[..open];
    let qualified = head.rsplit(' ').next()?;
    (qualified.contains('.') && !qualified.contains("::")).then(|| qualified.to_string())
}

/// The JDK's and the JVM's own Java packages.
fn jdk_class(q: &str) -> bool {
    ["java.", "javax.", "sun.", "jdk.", "com.sun."]
        .iter()
        .any(|p| q.starts_with(p))
}

/// CPython's standard library (not site-packages), and its frozen modules.
fn python_stdlib(file: &str) -> bool {
    let in_lib = file.contains("/lib/python3") || file.contains("/lib64/python3");
    (in_lib && !file.contains("-packages/")) || file.starts_with("<frozen ")
}

/// A frame named from a runtime's own structures (see `Frame::runtime`).
fn classify_runtime(f: &Frame, runtime: &'static str) -> Kind {
    let Some(sym) = f.symbol.as_deref() else {
        let why = f.note.clone().unwrap_or_else(|| "not named".into());
        return Kind::Unnamed(runtime, why);
    };
    if runtime == "java" {
        let q = sym.split('(').next().unwrap_or(sym).to_string();
        return if jdk_class(&q) {
            Kind::Runtime(Some(q))
        } else {
            Kind::App(q)
        };
    }
    let shown = match (&f.file, f.line) {
        (Some(file), Some(l)) => format!("{sym} ({}:{l})", short(file)),
        (Some(file), None) => format!("{sym} ({})", short(file)),
        _ => sym.to_string(),
    };
    if f.file.as_deref().is_some_and(python_stdlib) {
        Kind::Runtime(Some(shown))
    } else {
        Kind::App(shown)
    }
}

/// Native modules of runtimes and libc.
fn runtime_module(module: &str) -> bool {
    let m = base(module);
    [
        "libc.so",
        "libc-",
        "libpthread",
        "ld-linux",
        "libjvm.so",
        "libjli.so",
        "libnio.so",
        "libnet.so",
        "libjava.so",
        "libpython",
        "_socket.",
        "libuv.so",
        "libnode.so",
    ]
    .iter()
    .any(|p| m.starts_with(p))
        || (m.starts_with("python") && !m.contains('.'))
        || m.starts_with("python3.")
        // The node executable: libuv, V8 and node itself (labels inside V8's builtins such as
        // construct_stub_create_deopt_addr included). An application's native code is in a
        // `.node` addon of its own.
        || m == "node"
        || m == "nodejs"
}

/// Go's standard library: its packages' first path element has no dot.
const GO_STDLIB: &[&str] = &[
    "archive/",
    "bufio.",
    "bytes.",
    "compress/",
    "container/",
    "context.",
    "crypto/",
    "crypto.",
    "database/",
    "debug/",
    "embed.",
    "encoding/",
    "encoding.",
    "errors.",
    "expvar.",
    "flag.",
    "fmt.",
    "go/",
    "hash/",
    "hash.",
    "html/",
    "html.",
    "image/",
    "image.",
    "index/",
    "internal/",
    "io/",
    "io.",
    "log/",
    "log.",
    "math/",
    "math.",
    "mime/",
    "mime.",
    "net/",
    "net.",
    "os/",
    "os.",
    "path/",
    "path.",
    "plugin.",
    "reflect.",
    "regexp/",
    "regexp.",
    "runtime/",
    "runtime.",
    "sort.",
    "strconv.",
    "strings.",
    "sync/",
    "sync.",
    "syscall.",
    "testing/",
    "text/",
    "time.",
    "unicode/",
    "unicode.",
    "vendor/",
];

/// glibc's socket syscall wrappers, by name: in a statically linked program they live in the
/// program itself, not in libc.so.
const LIBC_WRAPPERS: &[&str] = &[
    "socket",
    "__socket",
    "socketpair",
    "__socketpair",
    "accept",
    "__libc_accept",
    "accept4",
    "__libc_accept4",
    "connect",
    "__connect",
    "__libc_connect",
    "syscall",
    "__syscall_cancel",
    "__syscall_cancel_arch",
    "__internal_syscall_cancel",
];

/// Native symbols of runtimes linked into their executable (node, Go binaries, static libc).
fn runtime_symbol(sym: &str) -> bool {
    LIBC_WRAPPERS.contains(&sym)
        || GO_STDLIB.iter().any(|p| sym.starts_with(p))
        || [
            "__libc",
            "__GI_",
            "uv_",
            "uv__",
            "node::",
            "v8::",
            "Builtins_",
            "void node::",
            "_Py",
            "Py",
            "py_trampoline",
            "Java_",
            "JVM_",
        ]
        .iter()
        .any(|p| sym.starts_with(p))
        || sym.contains(" node::")
        || sym.contains(" v8::")
}

fn short(file: &str) -> &str {
    base(file)
}

/// libuv's threadpool thread function: a static function named `worker` in the node binary
/// (or libuv), which `runtime_symbol`'s prefixes miss.
fn libuv_worker(f: &Frame, sym: &str) -> bool {
    sym == "worker"
        && f.module.as_deref().is_some_and(|m| {
            let b = base(m);
            b == "node" || b == "nodejs" || b.starts_with("libuv") || b.starts_with("libnode")
        })
}

fn classify(f: &Frame) -> Kind {
    if let Some(rt) = f.runtime {
        return classify_runtime(f, rt);
    }
    let Some(sym) = f.symbol.as_deref() else {
        return if f.module.is_none() {
            Kind::UnnamedJit
        } else {
            Kind::Unknown
        };
    };
    if let Some((name, file, line)) = v8(sym) {
        let shown = match line {
            Some(l) => format!("{name} ({}:{l})", short(&file)),
            None => format!("{name} ({})", short(&file)),
        };
        return if file.starts_with("node:") {
            Kind::Runtime(Some(shown))
        } else {
            Kind::App(shown)
        };
    }
    if let Some((name, file)) = cpython(sym) {
        let shown = format!("{name} ({})", short(&file));
        return if python_stdlib(&file) {
            Kind::Runtime(Some(shown))
        } else {
            Kind::App(shown)
        };
    }
    if f.module.is_none()
        && let Some(q) = java(sym)
    {
        return if jdk_class(&q) {
            Kind::Runtime(Some(q))
        } else {
            Kind::App(q)
        };
    }
    if f.module.as_deref().is_some_and(runtime_module)
        || runtime_symbol(sym)
        || libuv_worker(f, sym)
    {
        return Kind::Runtime(None);
    }
    // JVM code blobs named by the perf map ("Interpreter", "StubRoutines (1)").
    if f.module.is_none() {
        return Kind::Runtime(None);
    }
    Kind::App(match (&f.file, f.line) {
        (Some(file), Some(line)) => format!("{sym} ({}:{line})", short(file)),
        _ => sym.to_string(),
    })
}

/// Markers of a socket made asynchronously, with what to tell the reader.
const ASYNC: &[(&str, &str)] = &[
    (
        "net/http.(*Transport).dialConnFor",
        "Go's net/http dials on a goroutine of its own: the code that sent the request is not on this stack",
    ),
    (
        "net/http.(*Transport).queueForDial",
        "Go's net/http dials on a goroutine of its own: the code that sent the request is not on this stack",
    ),
    (
        "processTicksAndRejections",
        "Node made this socket on a later tick of its event loop (net.connect defers it): the code that called net.connect is not on this stack",
    ),
    (
        "listOnTimeout",
        "Node made this socket in a timer callback: the code that scheduled it is not on this stack",
    ),
    (
        "processImmediate",
        "Node made this socket in a setImmediate callback: the code that scheduled it is not on this stack",
    ),
];

/// Frames of V8's interpreter: an interpreted JavaScript function that only
/// `--interpreted-frames-native-stack` gives a name (and a frame of its own).
fn v8_interpreter(sym: &str) -> bool {
    sym.starts_with("Builtins_InterpreterEntryTrampoline")
}

/// Whether the stack is a Node process's (V8 or node frames on it).
fn is_node(frames: &[Frame]) -> bool {
    frames.iter().any(|f| {
        f.symbol.as_deref().is_some_and(|s| {
            s.starts_with("Builtins_")
                || s.contains("v8::")
                || s.contains("node::")
                || v8(s).is_some()
        })
    })
}

/// What would name a runtime's JIT (or interpreted) frames, judged from its native frames.
fn jit_hint(frames: &[Frame]) -> Option<&'static str> {
    let has = |p: &dyn Fn(&str) -> bool| frames.iter().any(|f| f.symbol.as_deref().is_some_and(p));
    let unnamed_jit = frames.iter().any(|f| classify(f) == Kind::UnnamedJit);
    if has(&|s| s.starts_with("Builtins_") || s.contains("v8::")) {
        if unnamed_jit && !has(&|s| v8(s).is_some()) {
            return Some(
                "JavaScript frames are not named: start node with --perf-basic-prof --interpreted-frames-native-stack",
            );
        }
        // A perf map names compiled code, not what the interpreter runs.
        return (unnamed_jit || has(&v8_interpreter)).then_some(
            "interpreted JavaScript frames are not named: add --interpreted-frames-native-stack to node's --perf-basic-prof",
        );
    }
    let unnamed = unnamed_jit || has(&|s| s == "Interpreter");
    // A JVM: its own library, or the JDK's native libraries (a stack cut at JIT code may not
    // reach libjvm).
    let jvm_module =
        |m: &str| ["libjvm.so", "libnio.so", "libnet.so", "libjava.so"].contains(&base(m));
    if frames
        .iter()
        .any(|f| f.module.as_deref().is_some_and(jvm_module) || f.runtime == Some("java"))
    {
        if unnamed_jit {
            return Some(
                "Java frames are not named: run the JVM with -XX:+PreserveFramePointer and sockleak with --java-perfmap",
            );
        }
        return unnamed.then_some(
            "the Java code here ran in the JVM's interpreter and its frames could not be read (sockleak's log says why); JIT-compiled code is named with -XX:+PreserveFramePointer and --java-perfmap",
        );
    }
    let python_frames = frames.iter().any(|f| f.runtime == Some("python"));
    if has(&|s| s.starts_with("_PyEval_EvalFrame"))
        && !has(&|s| s.starts_with("py::"))
        && !python_frames
    {
        return Some(
            "Python functions are not named: their frames could not be read from this interpreter (sockleak's log says why); Python 3.12+ run with -X perf (or PYTHONPERFSUPPORT=1) names them through a perf map",
        );
    }
    None
}

/// What Node does on its own: a socket it made with no application frame on the stack.
const NODE_LATER: &str = "Node made this socket on a later tick of its event loop (net.connect and http.request defer it): the code that asked for it is not on this stack";

/// The call site of a stack (innermost frame first).
pub fn pick(frames: &[Frame]) -> CallSite {
    let kinds: Vec<Kind> = frames.iter().map(classify).collect();
    // The first application frame, unless an interpreted frame that could not be named comes
    // before it: that one may be the call site, and naming its caller would be wrong.
    let first = kinds
        .iter()
        .find(|k| matches!(k, Kind::App(_) | Kind::Unnamed(..)));
    match first {
        Some(Kind::App(name)) => {
            return CallSite {
                name: Some(name.clone()),
                note: None,
                shared: false,
                deferred: false,
            };
        }
        Some(Kind::Unnamed(runtime, why)) => {
            let lang = if *runtime == "java" { "Java" } else { "Python" };
            let next = kinds.iter().find_map(|k| match k {
                Kind::App(n) => Some(n.as_str()),
                _ => None,
            });
            let then = next.map_or(String::new(), |n| {
                format!("; the next named application frame is {n}")
            });
            return CallSite {
                name: None,
                note: Some(format!(
                    "a {lang} frame before the application's first named frame could not be named ({why}): it may be the call site{then}"
                )),
                shared: false,
                deferred: false,
            };
        }
        _ => {}
    }
    // No application frame. A runtime's own frames are never the call site: say why there
    // is none instead.
    let node = is_node(frames);
    // A stack cut where JIT code hides the frame pointer: the note says so.
    if let Some(note) = frames
        .iter()
        .find_map(|f| f.note.as_deref().filter(|_| f.runtime.is_none()))
    {
        return CallSite {
            name: None,
            note: Some(note.to_string()),
            shared: false,
            deferred: false,
        };
    }
    // Unnamed managed code may be the application's: say which flag names it.
    if let Some(hint) = jit_hint(frames) {
        return CallSite {
            name: None,
            note: Some(hint.to_string()),
            shared: node,
            deferred: false,
        };
    }
    // Asynchronous, if a runtime's dispatcher is on the stack.
    let marker = frames.iter().find_map(|f| {
        let sym = f.symbol.as_deref()?;
        ASYNC
            .iter()
            .find(|(m, _)| sym == *m || v8(sym).is_some_and(|(n, _, _)| n == *m))
    });
    if let Some((_, note)) = marker {
        return CallSite {
            name: None,
            note: Some((*note).to_string()),
            shared: node,
            deferred: true,
        };
    }
    if node {
        return CallSite {
            name: None,
            note: Some(NODE_LATER.to_string()),
            shared: true,
            deferred: true,
        };
    }
    CallSite {
        name: first_named_past_libc(frames),
        note: None,
        shared: false,
        deferred: false,
    }
}

/// The first named frame that is not libc nor a runtime's own (the fallback when nothing else
/// applies).
fn first_named_past_libc(frames: &[Frame]) -> Option<String> {
    frames.iter().find_map(|f| {
        let sym = f.symbol.as_deref()?;
        let libc = f
            .module
            .as_deref()
            .is_some_and(|m| base(m).starts_with("libc") || base(m).starts_with("libpthread"))
            || sym.starts_with("__GI_")
            || sym.starts_with("__libc");
        let go_plumbing = ["runtime.", "runtime/", "syscall.", "internal/", "net."]
            .iter()
            .any(|p| sym.starts_with(p));
        let runtime = matches!(classify(f), Kind::Runtime(_));
        (!libc && !go_plumbing && !runtime).then(|| match (&f.file, f.line) {
            (Some(file), Some(line)) => format!("{sym} ({}:{line})", short(file)),
            _ => sym.to_string(),
        })
    })
}

/// How an origin was joined, as `origin_call.join` names it (docs/json-output.md).
pub fn join_name(j: u8) -> Option<&'static str> {
    match j {
        join::GO_WANTCONN => Some("go-wantconn"),
        join::GO_ROUNDTRIP => Some("go-roundtrip"),
        join::NODE_HANDLE => Some("node-handle"),
        _ => None,
    }
}

/// What a joined origin means for the reader: where the call site comes from, and that the
/// socket's own stack (shown below it) is the runtime's.
fn join_note(j: u8, inherited: bool) -> &'static str {
    match (j, inherited) {
        (join::GO_WANTCONN, _) => {
            "the request that made net/http dial this connection (joined at (*wantConn).tryDeliver); Go made the socket itself on a dial goroutine of its own, whose stack is below"
        }
        (join::GO_ROUNDTRIP, _) => {
            "the latest request sent on this connection (joined at (*persistConn).roundTrip); Go made the socket itself on a dial goroutine of its own, whose stack is below"
        }
        (_, false) => {
            "where the connection was asked for: net.connect (or http.request through an Agent) made its libuv handle here (joined at uv_tcp_init); Node made the socket itself on a later tick, whose stack is below"
        }
        (_, true) => {
            "where the connection this one retried with another address was asked for (happy eyeballs: Node made a new handle for the next address; joined at libuv's uv_tcp_init and uv_close); Node made the socket itself on a later tick, whose stack is below"
        }
    }
}

/// Whether a stack is Node's own happy-eyeballs retry: a new handle made by
/// `internalConnectMultiple` with no application frame.
fn node_retry(frames: &[Frame]) -> bool {
    frames.iter().all(|f| !matches!(classify(f), Kind::App(_)))
        && frames.iter().any(|f| {
            f.symbol
                .as_deref()
                .and_then(v8)
                .is_some_and(|(n, file, _)| {
                    n == "internalConnectMultiple" && file.starts_with("node:")
                })
        })
}

/// An origin's call site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPick {
    /// Named from the origin stack; the note says how it was joined. Unnamed: the note says
    /// why (the origin's frames could not be named).
    pub call_site: CallSite,
    /// Which of the stacks given named it (1, 2: inherited by a Node retry).
    pub stack: usize,
}

/// The call site of a socket's origin: `stacks[0]` is the origin's own stack; for a Node
/// handle, `stacks[1..]` are those of the connections a happy-eyeballs retry replaced, which
/// it inherits when its own stack is the retry's. None when there is no origin stack.
pub fn pick_origin(j: u8, stacks: &[&[Frame]]) -> Option<OriginPick> {
    let own = stacks.first().filter(|s| !s.is_empty())?;
    let mut i = 0;
    let mut frames: &[Frame] = own;
    loop {
        let cs = pick(frames);
        if let Some(name) = cs.name {
            return Some(OriginPick {
                call_site: CallSite {
                    name: Some(name),
                    note: Some(join_note(j, i > 0).to_string()),
                    shared: false,
                    deferred: false,
                },
                stack: i,
            });
        }
        let next = stacks.get(i + 1).filter(|s| !s.is_empty());
        match next {
            Some(n) if j == join::NODE_HANDLE && node_retry(frames) => {
                i += 1;
                frames = n;
            }
            _ => {
                // Unnamed: what the origin's own stack lacks (its frames' flag, or that the
                // runtime asked on its own).
                let cs = pick(own);
                return Some(OriginPick {
                    call_site: CallSite {
                        name: None,
                        note: cs.note,
                        shared: true,
                        deferred: false,
                    },
                    stack: 0,
                });
            }
        }
    }
}

/// JIT frames nobody named, and a frame that names runtime code running interpreted code
/// (V8's interpreter trampoline, the JVM interpreter): what a perf map or flag would name.
pub fn unnamed_jit_frames(frames: &[Frame]) -> usize {
    frames
        .iter()
        .filter(|f| {
            matches!(classify(f), Kind::UnnamedJit)
                || f.symbol.as_deref().is_some_and(|s| {
                    s == "Builtins_InterpreterEntryTrampoline" || s == "Interpreter"
                })
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(sym: Option<&str>, module: Option<&str>, file: Option<&str>, line: Option<u32>) -> Frame {
        Frame {
            addr: 1,
            symbol: sym.map(Into::into),
            module: module.map(Into::into),
            file: file.map(Into::into),
            line,
            runtime: None,
            note: None,
        }
    }

    const LIBC: Option<&str> = Some("/usr/lib/x86_64-linux-gnu/libc.so.6");
    const NODE: Option<&str> = Some("/usr/bin/node");

    #[test]
    fn c_and_go_keep_their_frames() {
        let c = [
            f(Some("__GI_socket"), LIBC, None, None),
            f(
                Some("leak_here"),
                Some("/tmp/app"),
                Some("/tmp/app.c"),
                Some(5),
            ),
        ];
        assert_eq!(pick(&c).name.unwrap(), "leak_here (app.c:5)");
        // Statically linked: libc's wrapper is in the program itself.
        let static_c = [
            f(Some("__socket"), Some("/leaker"), None, None),
            f(
                Some("leak_in_container"),
                Some("/leaker"),
                Some("/src/leaker.c"),
                Some(5),
            ),
        ];
        assert_eq!(
            pick(&static_c).name.unwrap(),
            "leak_in_container (leaker.c:5)"
        );
        let go = [
            f(
                Some("runtime/internal/syscall.Syscall6"),
                Some("/bin/app"),
                None,
                None,
            ),
            f(Some("syscall.socket"), Some("/bin/app"), None, None),
            f(Some("net.sysSocket"), Some("/bin/app"), None, None),
            f(
                Some("main.leak"),
                Some("/bin/app"),
                Some("/src/main.go"),
                Some(9),
            ),
        ];
        assert_eq!(
            pick(&go),
            CallSite {
                name: Some("main.leak (main.go:9)".into()),
                note: None,
                shared: false,
                deferred: false,
            }
        );
    }

    #[test]
    fn go_dial_goroutine_is_asynchronous() {
        let go = [
            f(Some("syscall.socket"), Some("/bin/app"), None, None),
            f(
                Some("net/http.(*Transport).dial"),
                Some("/bin/app"),
                Some("/go/net/http/transport.go"),
                Some(1179),
            ),
            f(
                Some("net/http.(*Transport).dialConn"),
                Some("/bin/app"),
                Some("/go/net/http/transport.go"),
                Some(1608),
            ),
            f(
                Some("net/http.(*Transport).dialConnFor"),
                Some("/bin/app"),
                None,
                None,
            ),
            f(Some("runtime.goexit"), Some("/bin/app"), None, None),
        ];
        let cs = pick(&go);
        // Only the standard library is on the stack: no frame of it is blamed; the note says
        // the socket was made on net/http's own dial goroutine.
        assert_eq!(cs.name, None);
        assert!(cs.note.unwrap().contains("goroutine of its own"));
    }

    #[test]
    fn node_skips_libuv_and_v8_and_names_the_script() {
        let stack = [
            f(Some("__GI_socket"), LIBC, None, None),
            f(
                Some("uv__socket"),
                NODE,
                Some("deps/uv/src/unix/core.c"),
                Some(498),
            ),
            f(
                Some("node::TCPWrap::Connect(v8::FunctionCallbackInfo<v8::Value> const&)"),
                NODE,
                None,
                None,
            ),
            f(
                Some("Builtins_CEntry_Return1_ArgvOnStack_BuiltinExit"),
                NODE,
                None,
                None,
            ),
            f(
                Some("JS:^internalConnect node:net:1038:25"),
                None,
                None,
                None,
            ),
            f(
                Some("JS:*openLeakyConnection /srv/app/leak.js:6:8"),
                None,
                None,
                None,
            ),
        ];
        assert_eq!(
            pick(&stack).name.unwrap(),
            "openLeakyConnection (leak.js:6)"
        );
    }

    #[test]
    fn node_next_tick_says_so() {
        let stack = [
            f(Some("uv__socket"), NODE, None, None),
            f(
                Some("JS:~internalConnect node:net:1038:25"),
                None,
                None,
                None,
            ),
            f(
                Some("JS:^defaultTriggerAsyncIdScope node:internal/async_hooks:455:36"),
                None,
                None,
                None,
            ),
            f(
                Some("JS:^processTicksAndRejections node:internal/process/task_queues:67:35"),
                None,
                None,
                None,
            ),
            f(Some("Builtins_JSEntry"), NODE, None, None),
        ];
        let cs = pick(&stack);
        // Node's own frames are never the call site, whatever tier they run in.
        assert_eq!(cs.name, None);
        assert!(cs.note.as_deref().unwrap().contains("later tick"));
        assert!(cs.shared, "one group per process, not one per stack");
        let mut opt = stack.clone();
        opt[1] = f(
            Some("JS:^internalConnect node:net:1038:25"),
            None,
            None,
            None,
        );
        assert_eq!(pick(&opt), cs);
        // The DNS path has no dispatcher marker: still Node's, never libuv's uv__socket.
        let dns = [
            f(Some("uv__socket"), NODE, None, None),
            f(
                Some("JS:^internalConnect node:net:1038:25"),
                None,
                None,
                None,
            ),
            f(Some("JS:^onlookupall node:dns:120:21"), None, None, None),
            f(Some("uv__work_done"), NODE, None, None),
        ];
        let cs = pick(&dns);
        assert_eq!(cs.name, None);
        assert!(cs.note.unwrap().contains("later tick"));
        // libuv's threadpool thread (getaddrinfo's netlink sockets) is not the application.
        let pool = [
            f(Some("__GI_socket"), LIBC, None, None),
            f(Some("getaddrinfo"), LIBC, None, None),
            f(Some("uv__getaddrinfo_work"), NODE, None, None),
            f(
                Some("worker"),
                NODE,
                Some("deps/uv/src/threadpool.c"),
                Some(122),
            ),
            f(Some("start_thread"), LIBC, None, None),
        ];
        assert_eq!(pick(&pool).name, None);
        // A label inside V8's builtins is node's own code, not the application.
        let label = [
            f(Some("uv_tcp_init"), NODE, None, None),
            f(Some("construct_stub_create_deopt_addr"), NODE, None, None),
            f(Some("JS:^request node:http:102:17"), None, None, None),
        ];
        assert_eq!(pick(&label).name, None);
    }

    #[test]
    fn interpreted_javascript_says_which_flag_is_missing() {
        // --perf-basic-prof alone: compiled frames are named, interpreted ones are V8's
        // interpreter trampoline; the user's function may be one of them.
        let stack = [
            f(Some("uv_tcp_init"), NODE, None, None),
            f(
                Some("JS:^Socket.connect node:net:1202:36"),
                None,
                None,
                None,
            ),
            f(
                Some("Builtins_InterpreterEntryTrampoline"),
                NODE,
                None,
                None,
            ),
            f(
                Some("Builtins_InterpreterEntryTrampoline"),
                NODE,
                None,
                None,
            ),
            f(
                Some("JS:^processTicksAndRejections node:internal/process/task_queues:67:35"),
                None,
                None,
                None,
            ),
        ];
        let cs = pick(&stack);
        assert_eq!(cs.name, None);
        assert!(
            cs.note
                .as_deref()
                .unwrap()
                .contains("add --interpreted-frames-native-stack"),
            "{cs:?}"
        );
        assert!(cs.shared);
    }

    #[test]
    fn python_names_the_function_past_the_stdlib() {
        let py = Some("/usr/lib/libpython3.12.so.1.0");
        let stack = [
            f(Some("__GI_socket"), LIBC, None, None),
            f(
                Some("sock_initobj"),
                Some("/usr/lib/python3.12/lib-dynload/_socket.cpython-312-x86_64-linux-gnu.so"),
                None,
                None,
            ),
            f(Some("_PyEval_EvalFrameDefault"), py, None, None),
            f(
                Some("py::create_connection:/usr/lib/python3.12/socket.py"),
                None,
                None,
                None,
            ),
            f(Some("py_trampoline_evaluator"), py, None, None),
            f(
                Some("py::open_leaky_connection:/srv/app/leak.py"),
                None,
                None,
                None,
            ),
        ];
        assert_eq!(
            pick(&stack).name.unwrap(),
            "open_leaky_connection (leak.py)"
        );
    }

    #[test]
    fn java_names_the_method_past_the_jdk() {
        let stack = [
            f(Some("__GI_socket"), LIBC, None, None),
            f(
                Some("Java_sun_nio_ch_Net_socket0"),
                Some("/usr/lib/jvm/java-17/lib/libnio.so"),
                None,
                None,
            ),
            f(
                Some("int sun.nio.ch.Net.socket0(boolean, boolean, boolean)"),
                None,
                None,
                None,
            ),
            f(Some("Interpreter"), None, None, None),
            f(
                Some("void java.net.Socket.<init>(java.lang.String, int)"),
                None,
                None,
                None,
            ),
            f(None, None, None, None),
            f(Some("void Leak.openLeakyConnection(int)"), None, None, None),
            f(
                Some("thread_native_entry(Thread*)"),
                Some("/usr/lib/jvm/java-17/lib/server/libjvm.so"),
                None,
                None,
            ),
        ];
        assert_eq!(pick(&stack).name.unwrap(), "Leak.openLeakyConnection");
        assert_eq!(unnamed_jit_frames(&stack), 2);
    }

    #[test]
    fn unnamed_jit_code_says_which_flag_names_it() {
        let node = [
            f(Some("uv__socket"), NODE, None, None),
            f(
                Some("Builtins_CEntry_Return1_ArgvOnStack_BuiltinExit"),
                NODE,
                None,
                None,
            ),
            f(None, None, None, None),
            f(Some("Builtins_JSEntry"), NODE, None, None),
        ];
        let cs = pick(&node);
        assert_eq!(cs.name, None);
        assert!(cs.note.unwrap().contains("--perf-basic-prof"));
        let py = Some("/usr/lib/libpython3.12.so.1.0");
        let python = [
            f(
                Some("sock_initobj"),
                Some("/x/_socket.cpython-312-x86_64-linux-gnu.so"),
                None,
                None,
            ),
            f(Some("_PyEval_EvalFrameDefault"), py, None, None),
            f(Some("Py_RunMain"), py, None, None),
        ];
        assert!(pick(&python).note.unwrap().contains("-X perf"));
        let jvm = Some("/usr/lib/jvm/java-17/lib/server/libjvm.so");
        let jli = Some("/usr/lib/jvm/java-17/lib/libjli.so");
        let mut java = vec![
            f(
                Some("Java_sun_nio_ch_Net_socket0"),
                Some("/j/libnio.so"),
                None,
                None,
            ),
            f(None, None, None, None),
            f(Some("JavaCalls::call_helper"), jvm, None, None),
            f(Some("JavaMain"), jli, None, None),
        ];
        let cs = pick(&java);
        assert_eq!(
            cs.name, None,
            "libjli's JavaMain is the launcher, not the app"
        );
        assert!(cs.note.unwrap().contains("--java-perfmap"));
        java[1].symbol = Some("Interpreter".into());
        assert!(pick(&java).note.unwrap().contains("interpreter"));
    }

    fn rt(
        runtime: &'static str,
        sym: Option<&str>,
        file: Option<&str>,
        line: Option<u32>,
    ) -> Frame {
        Frame {
            runtime: Some(runtime),
            note: sym
                .is_none()
                .then(|| "not named: not a code object".to_string()),
            ..f(sym, None, file, line)
        }
    }

    #[test]
    fn interpreted_python_frames_name_the_function_with_its_line() {
        let py = Some("/usr/bin/python3.11");
        let stack = [
            f(Some("__GI_socket"), LIBC, None, None),
            f(Some("sock_initobj"), py, None, None),
            rt(
                "python",
                Some("socket.__init__"),
                Some("/usr/lib/python3.11/socket.py"),
                Some(232),
            ),
            rt(
                "python",
                Some("create_connection"),
                Some("/usr/lib/python3.11/socket.py"),
                Some(831),
            ),
            rt(
                "python",
                Some("open_leaky_connection"),
                Some("/srv/app/leak.py"),
                Some(15),
            ),
            rt(
                "python",
                Some("leak_many"),
                Some("/srv/app/leak.py"),
                Some(20),
            ),
            f(Some("_PyEval_EvalFrameDefault"), py, None, None),
        ];
        assert_eq!(
            pick(&stack),
            CallSite {
                name: Some("open_leaky_connection (leak.py:15)".into()),
                note: None,
                shared: false,
                deferred: false,
            }
        );
        // Frozen modules are the interpreter's too; a frame without a line keeps its file.
        let mut frozen = stack.clone();
        frozen[4] = rt(
            "python",
            Some("_find_and_load"),
            Some("<frozen importlib._bootstrap>"),
            Some(1),
        );
        assert_eq!(
            pick(&frozen).name.as_deref(),
            Some("leak_many (leak.py:20)")
        );
        frozen[5].line = None;
        assert_eq!(pick(&frozen).name.as_deref(), Some("leak_many (leak.py)"));
    }

    #[test]
    fn an_unnamed_interpreted_frame_before_the_app_leaves_the_call_site_unnamed() {
        let stack = [
            f(Some("__GI_socket"), LIBC, None, None),
            rt("python", None, None, None),
            rt(
                "python",
                Some("leak_many"),
                Some("/srv/app/leak.py"),
                Some(20),
            ),
        ];
        let cs = pick(&stack);
        assert_eq!(cs.name, None, "its caller would be a wrong call site");
        let note = cs.note.unwrap();
        assert!(
            note.contains("Python frame") && note.contains("not a code object"),
            "{note}"
        );
        assert!(note.contains("leak_many (leak.py:20)"), "{note}");
        // After the application's frame it does not matter.
        let later = [stack[0].clone(), stack[2].clone(), stack[1].clone()];
        assert_eq!(pick(&later).name.as_deref(), Some("leak_many (leak.py:20)"));
        let java = [
            f(
                Some("Java_sun_nio_ch_Net_socket0"),
                Some("/j/libnio.so"),
                None,
                None,
            ),
            rt("java", None, None, None),
        ];
        assert!(pick(&java).note.unwrap().contains("Java frame"));
    }

    #[test]
    fn interpreted_java_frames_skip_the_jdk() {
        let stack = [
            f(
                Some("Java_sun_nio_ch_Net_socket0"),
                Some("/j/libnio.so"),
                None,
                None,
            ),
            rt(
                "java",
                Some("sun.nio.ch.Net.socket0(boolean)"),
                Some("Net.java"),
                None,
            ),
            rt(
                "java",
                Some("java.net.Socket.<init>(java.lang.String, int)"),
                Some("Socket.java"),
                Some(287),
            ),
            rt(
                "java",
                Some("Leak.openLeakyConnection(int)"),
                Some("Leak.java"),
                Some(18),
            ),
        ];
        assert_eq!(
            pick(&stack).name.as_deref(),
            Some("Leak.openLeakyConnection")
        );
        // The JIT's perf map names the same method the same way: one suspect across tiers.
        let jit = [
            stack[0].clone(),
            f(Some("void Leak.openLeakyConnection(int)"), None, None, None),
        ];
        assert_eq!(pick(&jit).name, pick(&stack).name);
    }

    #[test]
    fn a_stack_cut_at_jit_code_says_so() {
        let mut cut = f(None, None, None, None);
        cut.note = Some(crate::symbols::runtime_frames::JIT_CUT_NOTE.into());
        let stack = [
            f(
                Some("Java_sun_nio_ch_Net_socket0"),
                Some("/j/libnio.so"),
                None,
                None,
            ),
            f(
                Some("int sun.nio.ch.Net.socket0(boolean)"),
                None,
                None,
                None,
            ),
            cut,
        ];
        let cs = pick(&stack);
        assert_eq!(cs.name, None, "never a runtime frame: {cs:?}");
        assert!(cs.note.unwrap().contains("PreserveFramePointer"));
        // Cut short without a note (an older walk): the JDK's library tells it is a JVM.
        let short = [
            f(
                Some("Java_sun_nio_ch_Net_socket0"),
                Some("/j/libnio.so"),
                None,
                None,
            ),
            f(None, None, None, None),
        ];
        assert!(pick(&short).note.unwrap().contains("--java-perfmap"));
    }

    #[test]
    fn perf_map_symbols_parse() {
        assert_eq!(v8("JS:^ node:net:1326:73").unwrap().0, "(anonymous)");
        assert_eq!(
            v8("JS:*leak file:///srv/a.js:3:1"),
            Some(("leak".into(), "file:///srv/a.js".into(), Some(3)))
        );
        // Names with spaces (getters), top levels, and paths with spaces.
        assert_eq!(
            v8("JS:~get hasSubscribers node:diagnostics_channel:287:21"),
            Some((
                "get hasSubscribers".into(),
                "node:diagnostics_channel".into(),
                Some(287)
            ))
        );
        assert_eq!(
            v8("Script:~ file:///work/leak.mjs:1:1"),
            Some((
                "(top level)".into(),
                "file:///work/leak.mjs".into(),
                Some(1)
            ))
        );
        assert_eq!(v8("Eval:~ /srv/app/x.js:1:1").unwrap().0, "(top level)");
        assert_eq!(
            v8("JS:~ /srv/app/x.js:1:1").unwrap().0,
            "(anonymous)",
            "a CommonJS module's wrapper"
        );
        assert_eq!(
            v8("JS:^send /home/me/My App/client.js:12:3"),
            Some(("send".into(), "/home/me/My App/client.js".into(), Some(12)))
        );
        assert_eq!(v8("LazyCompile:*leak /a.js:1:1").unwrap().0, "leak");
        assert_eq!(v8("Builtin:InterpreterEntryTrampoline"), None);
        assert_eq!(v8("RegExp:^a+"), None);
        // A user getter is the application; a getter of node's own modules is not.
        assert_eq!(
            classify(&f(
                Some("JS:~get hasSubscribers node:diagnostics_channel:287:21"),
                None,
                None,
                None
            )),
            Kind::Runtime(Some(
                "get hasSubscribers (node:diagnostics_channel:287)".into()
            ))
        );
        assert_eq!(
            classify(&f(
                Some("JS:*get total /srv/app/cart.js:4:28"),
                None,
                None,
                None
            )),
            Kind::App("get total (cart.js:4)".into())
        );
        assert_eq!(
            cpython("py::A.b:/x/y.py"),
            Some(("A.b".into(), "/x/y.py".into()))
        );
        assert_eq!(
            java("void Leak.openLeakyConnection(int)"),
            Some("Leak.openLeakyConnection".into())
        );
        assert_eq!(java("leak_here"), None);
        assert_eq!(pick(&[]), CallSite::default());
    }

    #[test]
    fn origins_name_the_code_that_asked() {
        let app = Some("/bin/app");
        let go = [
            f(Some("net/http.(*persistConn).roundTrip"), app, None, None),
            f(Some("net/http.(*Client).Get"), app, None, None),
            f(Some("main.request"), app, Some("/src/main.go"), Some(31)),
            f(Some("main.main"), app, Some("/src/main.go"), Some(40)),
        ];
        let o = pick_origin(join::GO_ROUNDTRIP, &[&go]).unwrap();
        assert_eq!(
            o.call_site.name.as_deref(),
            Some("main.request (main.go:31)")
        );
        assert!(
            o.call_site
                .note
                .unwrap()
                .contains("(*persistConn).roundTrip")
        );
        assert_eq!(o.stack, 0);
        let o = pick_origin(join::GO_WANTCONN, &[&go]).unwrap();
        assert!(o.call_site.note.unwrap().contains("tryDeliver"));
        assert_eq!(
            pick_origin(join::GO_ROUNDTRIP, &[&[]]),
            None,
            "no origin stack"
        );
        assert_eq!(join_name(join::NODE_HANDLE), Some("node-handle"));
        assert_eq!(join_name(join::NONE), None);
        // Only a Node retry inherits: a Go origin without an application frame stays unnamed.
        let runtime_only = &go[..2];
        let o = pick_origin(join::GO_ROUNDTRIP, &[runtime_only, &go]).unwrap();
        assert_eq!(o.call_site.name, None);
        assert_eq!(o.stack, 0);
        // A Node handle made by the user's own code that closed another is not a retry.
        let user = [
            f(Some("uv_tcp_init"), NODE, None, None),
            f(Some("JS:^reconnect /srv/app/db.js:40:3"), None, None, None),
        ];
        let earlier = [f(Some("JS:^connect /srv/app/db.js:10:3"), None, None, None)];
        let o = pick_origin(join::NODE_HANDLE, &[&user, &earlier]).unwrap();
        assert_eq!(o.call_site.name.as_deref(), Some("reconnect (db.js:40)"));
        // Node's own retry inherits, and the note says so.
        let retry = [
            f(Some("uv_tcp_init"), NODE, None, None),
            f(
                Some("JS:^internalConnectMultiple node:net:1106:33"),
                None,
                None,
                None,
            ),
        ];
        let o = pick_origin(join::NODE_HANDLE, &[&retry, &user]).unwrap();
        assert_eq!(o.call_site.name.as_deref(), Some("reconnect (db.js:40)"));
        assert_eq!(o.stack, 1);
        assert!(o.call_site.note.unwrap().contains("happy eyeballs"));
        // A retry of a retry: two levels.
        let o = pick_origin(join::NODE_HANDLE, &[&retry, &retry, &user]).unwrap();
        assert_eq!(o.stack, 2);
        // A retry with nothing to inherit is unnamed, one group.
        let o = pick_origin(join::NODE_HANDLE, &[&retry]).unwrap();
        assert_eq!(o.call_site.name, None);
        assert!(o.call_site.shared);
    }
}
