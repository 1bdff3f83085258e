//! The builder on recorded facts: no root, no /proc, no kernel. Each test builds a report from
//! a tracker state and facts written down here, diagnoses included.

use hashbrown::HashMap;
use sockleak_common::socket::{Endpoint, Origin, SocketRecord};

use super::{
    build::{self, BuildCtx, Facts},
    limits::seconds_to_fd_limit,
};
use crate::{
    host::{
        procfs::FdLimit,
        sockdiag::{NetView, SockInfo, SocketTable},
        tcp_ages::StateAges,
    },
    model::ProcessReport,
    symbols::stacks::{Site, Stacks},
    tracker::{Process, Socket},
};

fn sock(created: u64, stack: i32, origin: Origin, port: u16) -> Socket {
    let mut r = SocketRecord::EMPTY;
    r.created_ns = created;
    r.stack_id = stack;
    r.origin = origin as u8;
    r.family = 2;
    r.sock_type = 1;
    r.remote = Endpoint {
        family: 2,
        port,
        addr: [0; 32],
    };
    r.remote.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    Socket::new(r, 7)
}

static AGES: std::sync::LazyLock<StateAges> = std::sync::LazyLock::new(StateAges::default);

fn ctx(stacks: &Stacks) -> BuildCtx<'_> {
    BuildCtx {
        stacks,
        ages: &AGES,
        now_ns: 100_000_000_000,
        start_ns: 0,
        min_age_ns: 5_000_000_000,
        min_count: 1,
        max_remotes: 10,
    }
}

/// Facts with the given socket tables as the default network namespace's.
fn facts_with(views: HashMap<u64, NetView>) -> Facts {
    Facts {
        views,
        default_netns: Some(1),
        ..Facts::default()
    }
}

/// The full report of `p`: built, then diagnosed from what the facts and evidence hold.
fn process_report(p: &Process, stacks: &Stacks, facts: &Facts) -> ProcessReport {
    let (r, ev) = build::process(p, facts, &ctx(stacks));
    build::diagnosed(r, &ev)
}

#[test]
fn groups_by_call_site_and_ages() {
    let mut p = Process::new(7, None, 0);
    // Exited, so /proc is not consulted for inodes.
    p.exited_ns = Some(100_000_000_000);
    for fd in 0..4 {
        p.sockets
            .insert(fd, sock(10_000_000_000, 1, Origin::Socket, 4200));
    }
    p.sockets
        .insert(10, sock(50_000_000_000, 2, Origin::Accept4, 80));
    p.sockets
        .insert(11, sock(99_000_000_000, 2, Origin::Accept4, 80)); // too young
    let stacks = Stacks::default();
    let r = process_report(&p, &stacks, &Facts::default());
    assert_eq!(r.suspects.len(), 2);
    assert_eq!(r.suspects[0].count, 4);
    assert_eq!(r.suspects[0].origin, "socket");
    assert_eq!(r.suspects[0].oldest_age_s, 90.0);
    assert_eq!(r.suspects[0].kinds["tcp"], 4);
    assert_eq!(r.suspects[0].remotes[0].endpoint, "127.0.0.1:4200");
    assert_eq!(r.suspects[0].remotes[0].count, 4);
    assert_eq!(r.suspects[1].count, 1);
    assert_eq!(r.live_sockets, 6);
    assert!(r.exited);
}

#[test]
fn jit_variants_of_one_call_site_are_one_suspect() {
    use crate::symbols::stacks::Frame;
    let js = |addr: u64, sym: &str| Frame {
        addr,
        symbol: Some(sym.into()),
        module: None,
        file: None,
        line: None,
        runtime: None,
        note: None,
    };
    let mut stacks = Stacks::default();
    let site = |id| Site {
        stack_id: id,
        caller: 0,
    };
    // Interpreted and optimized code of one function: different addresses, one name.
    stacks.insert_resolved(7, site(1), vec![js(0x10, "JS:~leak file:///a.js:3:1")]);
    stacks.insert_resolved(7, site(2), vec![js(0x90, "JS:*leak file:///a.js:3:1")]);
    stacks.insert_resolved(7, site(3), vec![js(0x50, "JS:~other file:///b.js:9:1")]);
    let mut p = Process::new(7, None, 0);
    p.exited_ns = Some(100_000_000_000);
    for fd in 0..9 {
        let (id, port) = match fd {
            0..5 => (1, 80),
            5..8 => (2, 81),
            _ => (3, 82),
        };
        p.sockets
            .insert(fd, sock(10_000_000_000, id, Origin::Socket, port));
    }
    let r = process_report(&p, &stacks, &Facts::default());
    assert_eq!(r.suspects.len(), 2);
    let s = &r.suspects[0];
    assert_eq!(s.call_site.as_deref(), Some("leak (a.js:3)"));
    assert_eq!((s.count, s.stack_count), (8, 5));
    assert_eq!(s.stack[0].addr, 0x10, "the most frequent stack first");
    assert_eq!(s.other_stacks.len(), 1);
    assert_eq!(s.other_stacks[0].count, 3);
    assert_eq!(s.other_stacks[0].stack[0].addr, 0x90);
    let remotes: Vec<_> = s
        .remotes
        .iter()
        .map(|r| (r.endpoint.as_str(), r.count))
        .collect();
    assert_eq!(remotes, [("127.0.0.1:80", 5), ("127.0.0.1:81", 3)]);
    assert_eq!(s.kinds["tcp"], 8);
    assert_eq!(r.suspects[1].call_site.as_deref(), Some("other (b.js:9)"));
    assert_eq!(r.suspects[1].count, 1);
}

#[test]
fn busy_established_and_listeners_are_not_suspects() {
    let mut p = Process::new(7, None, 0);
    p.exited_ns = Some(100_000_000_000);
    let mut busy = sock(0, 1, Origin::Socket, 1);
    busy.inode = Some(1);
    let mut idle = sock(0, 1, Origin::Socket, 1);
    idle.inode = Some(2);
    let mut listener = sock(0, 3, Origin::Socket, 0);
    listener.inode = Some(3);
    let mut closewait = sock(0, 4, Origin::Accept, 0);
    closewait.inode = Some(4);
    p.sockets.insert(3, busy);
    p.sockets.insert(4, idle);
    p.sockets.insert(5, listener);
    p.sockets.insert(6, closewait);
    let mut t = SocketTable::default();
    let info = |state, idle_ms| SockInfo {
        kind: "tcp",
        state: Some(state),
        state_code: None,
        local: None,
        remote: None,
        idle_ms,
        rx_queue: 0,
        tx_queue: 0,
        cookie: 0,
    };
    t.by_inode.insert(1, info("ESTABLISHED", Some(100)));
    t.by_inode.insert(2, info("ESTABLISHED", Some(60_000)));
    t.by_inode.insert(3, info("LISTEN", None));
    t.by_inode.insert(4, info("CLOSE_WAIT", Some(100)));
    let stacks = Stacks::default();
    let mut views = HashMap::new();
    views.insert(
        1,
        NetView {
            table: t,
            port_range: None,
        },
    );
    let r = process_report(&p, &stacks, &facts_with(views));
    let states: Vec<_> = r
        .suspects
        .iter()
        .flat_map(|s| s.states.keys().cloned())
        .collect();
    assert_eq!(r.suspects.len(), 2, "{states:?}");
    assert!(states.contains(&"CLOSE_WAIT".to_string()));
    assert!(states.contains(&"ESTABLISHED".to_string()));
    let est = r
        .suspects
        .iter()
        .find(|s| s.states.contains_key("ESTABLISHED"))
        .unwrap();
    assert_eq!(est.count, 1);
    assert_eq!(est.max_idle_s, Some(60.0));
}

#[test]
fn time_to_limit() {
    let mut p = Process::new(7, None, 0);
    p.meta.fd_limit = Some(FdLimit {
        soft: 1024,
        hard: 4096,
    });
    for i in 0..5u64 {
        p.sample(i * 1_000_000_000, Some(24 + i * 100));
    }
    p.meta.open_fds = Some(424);
    assert_eq!(seconds_to_fd_limit(&p), Some(6.0));
    p.meta.open_fds = Some(1024);
    assert_eq!(seconds_to_fd_limit(&p), Some(0.0));
}

/// A frame the symbolizer would have named.
fn named(addr: u64, symbol: &str, file: &str, line: u32) -> crate::symbols::stacks::Frame {
    crate::symbols::stacks::Frame {
        addr,
        symbol: Some(symbol.into()),
        module: Some("/usr/bin/httpclient".into()),
        file: Some(file.into()),
        line: Some(line),
        runtime: None,
        note: None,
    }
}

fn tcp(state: &'static str, local: &str, remote: Option<&str>, idle_ms: u32) -> SockInfo {
    SockInfo {
        kind: "tcp",
        state: Some(state),
        state_code: None,
        local: local.parse().ok(),
        remote: remote.and_then(|r| r.parse().ok()),
        idle_ms: Some(idle_ms),
        rx_queue: 0,
        tx_queue: 0,
        cookie: 0,
    }
}

/// Seed incident 1, recorded: a Go client whose 40 idle keep-alive connections were dialed
/// for 40 Transports, near its fd limit, started from a shell.
fn go_client() -> (Process, Stacks, Facts) {
    use crate::symbols::gohttp::{DIAL_CONN, Probe};
    let mut stacks = Stacks::default();
    stacks.insert_resolved(
        7,
        Site {
            stack_id: 1,
            caller: 0,
        },
        vec![
            named(0x403a2e, "syscall.RawSyscall", "syscall_linux.go", 61),
            named(0x61313f, DIAL_CONN, "transport.go", 1608),
        ],
    );
    let mut p = Process::new(7, None, 0);
    p.meta.comm = "httpclient".into();
    p.meta.go_http = Some(Probe::Attached);
    p.meta.fd_limit = Some(FdLimit {
        soft: 1024,
        hard: 1024,
    });
    p.meta.open_fds = Some(1000);
    let mut table = SocketTable::default();
    let mut pf = super::facts::ProcFacts::default();
    for fd in 0..40u32 {
        let mut s = sock(10_000_000_000, 1, Origin::Socket, 8080);
        s.record.owner = 0x1000 + u64::from(fd);
        p.sockets.insert(fd + 3, s);
        let inode = 500 + u64::from(fd);
        pf.inodes.insert(fd + 3, inode);
        table.by_inode.insert(
            inode,
            tcp(
                "ESTABLISHED",
                &format!("127.0.0.1:{}", 40000 + fd),
                Some("127.0.0.1:8080"),
                60_000,
            ),
        );
    }
    let mut facts = facts_with(
        [(
            1,
            NetView {
                table,
                port_range: None,
            },
        )]
        .into_iter()
        .collect(),
    );
    facts.procs.insert(7, pf);
    facts
        .connects
        .insert(7, vec![("127.0.0.1:8080".parse().unwrap(), 40)]);
    (p, stacks, facts)
}

#[test]
fn a_full_report_with_diagnoses_from_recorded_facts() {
    use crate::host::launcher::{Ancestor, Launcher};
    let (p, stacks, facts) = go_client();
    let (r, mut ev) = build::process(&p, &facts, &ctx(&stacks));
    let wants = crate::diagnose::wants(&r, &ev);
    assert!(wants.launcher, "1000 of 1024 fds: the limit matters");
    assert!(!wants.environment, "it does not connect to itself");
    // What the edge would read for it: its shell, with the same limit.
    ev.launcher = Some(Launcher::Shell(Ancestor {
        pid: 6,
        comm: "bash".into(),
        fd_limit: Some(FdLimit {
            soft: 1024,
            hard: 1024,
        }),
    }));
    let r = build::diagnosed(r, &ev);
    let patterns: Vec<&str> = r.diagnoses.iter().map(|d| d.pattern).collect();
    assert_eq!(patterns, ["go-transport-per-request", "fd-limit-too-low"]);
    let go = &r.diagnoses[0];
    assert!(
        go.evidence
            .iter()
            .any(|e| e.contains("40 distinct *http.Transport objects")),
        "{:#?}",
        go.evidence
    );
    assert!(go.evidence.iter().any(|e| e == "all 40 to 127.0.0.1:8080"));
    assert_eq!(r.suspects.len(), 1);
    assert_eq!(r.suspects[0].count, 40);
    assert_eq!(r.suspects[0].states["ESTABLISHED"], 40);
    assert_eq!(r.suspects[0].max_idle_s, Some(60.0));
    assert_eq!(r.tcp_states["ESTABLISHED"], 40);
    assert!(r.limit_advice.as_deref().unwrap().contains("ulimit -n"));
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
}

#[test]
fn the_same_facts_build_the_same_report() {
    let (p, stacks, facts) = go_client();
    let once = || serde_json::to_string(&process_report(&p, &stacks, &facts)).unwrap();
    assert_eq!(once(), once());
}

#[test]
fn a_process_connecting_to_its_own_listener_wants_its_environment() {
    let mut p = Process::new(7, None, 0);
    let mut listener = sock(0, 3, Origin::Socket, 0);
    listener.inode = Some(9);
    p.sockets.insert(3, listener);
    let mut table = SocketTable::default();
    table
        .by_inode
        .insert(9, tcp("LISTEN", "127.0.0.1:18080", None, 0));
    let mut facts = facts_with(
        [(
            1,
            NetView {
                table,
                port_range: None,
            },
        )]
        .into_iter()
        .collect(),
    );
    facts
        .connects
        .insert(7, vec![("127.0.0.1:18080".parse().unwrap(), 50)]);
    let stacks = Stacks::default();
    let (r, mut ev) = build::process(&p, &facts, &ctx(&stacks));
    assert_eq!(r.listening, ["127.0.0.1:18080"]);
    assert!(crate::diagnose::wants(&r, &ev).environment);
    ev.proxy_env = vec![("HTTP_PROXY".into(), "http://***@127.0.0.1:18080".into())];
    let r = build::diagnosed(r, &ev);
    assert_eq!(r.diagnoses[0].pattern, "connects-to-itself");
    assert!(
        r.diagnoses[0]
            .summary
            .contains("HTTP_PROXY points at its own port 18080")
    );

    // The same process after it exited: nothing is read from /proc for it.
    p.exited_ns = Some(50_000_000_000);
    let (r, ev) = build::process(&p, &facts, &ctx(&stacks));
    assert_eq!(
        crate::diagnose::wants(&r, &ev),
        crate::diagnose::Wants::default()
    );
}

#[test]
fn sampled_out_stacks_take_the_recorded_sample_and_senders_their_names() {
    use sockleak_common::socket::SAMPLED_OUT;
    let mut stacks = Stacks::default();
    stacks.insert_resolved(
        7,
        Site {
            stack_id: 4,
            caller: 0x77,
        },
        vec![named(0x77, "leak_here", "leak.c", 12)],
    );
    let mut p = Process::new(7, None, 0);
    p.exited_ns = Some(100_000_000_000);
    for fd in 0..3 {
        let mut s = sock(1_000_000_000, SAMPLED_OUT, Origin::Socket, 80);
        s.record.caller = 0x77;
        p.sockets.insert(fd, s);
    }
    let mut received = sock(1_000_000_000, 5, Origin::Received, 81);
    received.record.peer_pid = 99;
    p.sockets.insert(9, received);
    let mut facts = Facts::default();
    facts.sampled.insert((7, 0x77), 4);
    facts.comms.insert(99, "sender".into());
    let r = process_report(&p, &stacks, &facts);
    let leak = r
        .suspects
        .iter()
        .find(|s| s.call_site.is_some())
        .expect("the sampled stack names the call site");
    assert_eq!(leak.call_site.as_deref(), Some("leak_here (leak.c:12)"));
    assert_eq!(leak.count, 3);
    let recv = r.suspects.iter().find(|s| s.origin == "received").unwrap();
    assert_eq!(recv.senders[0].comm.as_deref(), Some("sender"));
}

#[test]
fn kubernetes_names_come_from_the_facts_and_head_the_text() {
    const ID: &str = "277a48ab1a483e12fb79957c49b707eb942285ac4e778b3e51ca178bd7e9ff4e";
    let (mut p, stacks, mut facts) = go_client();
    p.meta.cgroup = Some(format!("/kubepods/besteffort/pod1/{ID}"));
    let r = process_report(&p, &stacks, &facts);
    assert_eq!(r.container.as_deref(), Some(ID));
    assert!(r.k8s.is_none(), "no runtime answered: no names");
    let k8s = crate::model::K8s {
        namespace: "payments".into(),
        pod: "checkout-7d9f".into(),
        pod_uid: "0f1e".into(),
        container: "api".into(),
    };
    facts.k8s.insert(ID.to_string(), k8s.clone());
    let r = process_report(&p, &stacks, &facts);
    assert_eq!(r.k8s.as_ref(), Some(&k8s));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["k8s"],
        serde_json::json!({"namespace": "payments", "pod": "checkout-7d9f", "pod_uid": "0f1e", "container": "api"})
    );
    let report = build::report(
        vec![r],
        &facts,
        build::Totals {
            duration_s: 1.0,
            lost: Vec::new(),
            lost_events: 0,
            all: false,
            own_cost: Default::default(),
        },
    );
    let text = super::text::report(&report, 5.0);
    assert!(
        text.contains("\n== pod payments/checkout-7d9f container api (277a48ab1a48) ==\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "\nPID {} (httpclient) pod payments/checkout-7d9f container api\n",
            p.tgid
        )),
        "{text}"
    );
}

/// The Go client of `go_client`, its sockets joined to the requests that asked for them: 30
/// by the latest request of `main.request` (two callers, so two origin stacks), 10 made before
/// the probes were attached.
fn go_client_with_origins() -> (Process, Stacks, Facts) {
    use sockleak_common::origin::{conn_state, join};
    let (mut p, mut stacks, facts) = go_client();
    p.meta.origins = Some(Origins::Joined);
    let origin = |callers: &[(&str, u32)]| {
        let mut v = vec![
            named(0x618580, ROUND_TRIP, "transport.go", 2534),
            named(
                0x60cc5a,
                "net/http.(*Transport).roundTrip",
                "transport.go",
                595,
            ),
            named(0x6227f9, "main.request", "main.go", 31),
        ];
        v.extend(
            callers
                .iter()
                .map(|(f, l)| named(0x6227ff, f, "main.go", *l)),
        );
        v
    };
    stacks.insert_resolved(7, site(20, 0x60cc5a), origin(&[("main.main", 40)]));
    stacks.insert_resolved(7, site(21, 0x60cc5a), origin(&[("main.poll", 50)]));
    for (i, s) in p.sockets.values_mut().enumerate() {
        if i >= 30 {
            continue;
        }
        s.record.conn.join = join::GO_ROUNDTRIP;
        s.record.conn.stack_id = if i < 20 { 20 } else { 21 };
        s.record.conn.caller = 0x60cc5a;
        s.record.conn.state = conn_state::GO_IDLE;
    }
    (p, stacks, facts)
}

fn site(stack_id: i32, caller: u64) -> Site {
    Site { stack_id, caller }
}

use crate::symbols::{callsite::Origins, gohttp::ROUND_TRIP};

#[test]
fn joined_sockets_are_grouped_by_the_origin_call_site() {
    let (p, stacks, facts) = go_client_with_origins();
    let r = process_report(&p, &stacks, &facts);
    assert_eq!(r.suspects.len(), 2, "{:#?}", r.suspects);
    let joined = &r.suspects[0];
    assert_eq!(joined.count, 30);
    assert_eq!(
        joined.call_site.as_deref(),
        Some("main.request (main.go:31)")
    );
    assert!(
        joined
            .call_site_note
            .as_deref()
            .unwrap()
            .contains("(*persistConn).roundTrip")
    );
    let o = joined.origin_call.as_ref().unwrap();
    assert_eq!(o.join, "go-roundtrip");
    assert_eq!(o.call_site, joined.call_site);
    // The most frequent origin stack (20 of the 30), with the caller.
    assert_eq!(o.stack.last().unwrap().symbol.as_deref(), Some("main.main"));
    // The socket's own stack stays net/http's dial.
    assert_eq!(
        joined.stack.last().unwrap().symbol.as_deref(),
        Some(crate::symbols::gohttp::DIAL_CONN)
    );
    // Made before the probes: not joined, and the report does not pretend.
    let rest = &r.suspects[1];
    assert_eq!(rest.count, 10);
    assert_eq!(rest.call_site, None);
    assert!(rest.origin_call.is_none());
    // The diagnosis names the origin and carries it.
    let d = &r.diagnoses[0];
    assert_eq!(d.pattern, "go-transport-per-request");
    let per_suspect: Vec<_> = r
        .diagnoses
        .iter()
        .filter(|d| d.pattern == "go-transport-per-request")
        .collect();
    assert_eq!(per_suspect.len(), 2);
    assert_eq!(d.call_site.as_deref(), Some("main.request (main.go:31)"));
    assert_eq!(d.origin_call.as_ref(), joined.origin_call.as_ref());
    assert!(
        d.evidence
            .iter()
            .any(|e| e.starts_with("the requests were sent by main.request (main.go:31)")),
        "{:#?}",
        d.evidence
    );
    assert!(
        d.evidence
            .iter()
            .any(|e| e.contains("30 of them went back to their Transport's idle pool")),
        "{:#?}",
        d.evidence
    );
    // The text report shows where the requests came from, then where the socket was made.
    let text = super::text::report(
        &crate::model::Report {
            kind: "report",
            duration_s: 1.0,
            lost_events: 0,
            lost: Default::default(),
            counts_are_lower_bounds: false,
            unseen_opened: 0,
            unseen_closed: 0,
            time_wait: vec![],
            processes: vec![r.clone()],
            own_cost: Default::default(),
        },
        5.0,
    );
    let requested = text.find("requested at (go-roundtrip):").expect(&text);
    let made = text.find("socket made on").expect(&text);
    assert!(requested < made, "{text}");
    assert!(
        text.contains("call site: main.request (main.go:31)"),
        "{text}"
    );
    // The JSON contract.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["suspects"][0]["origin_call"]["join"], "go-roundtrip");
    assert_eq!(
        json["suspects"][0]["origin_call"]["call_site"],
        "main.request (main.go:31)"
    );
    assert!(json["suspects"][1]["origin_call"].is_null());
    assert_eq!(
        json["diagnoses"][0]["origin_call"],
        json["suspects"][0]["origin_call"]
    );
}

#[test]
fn unjoined_deferred_sockets_say_why() {
    let (mut p, mut stacks, facts) = go_client();
    // The dial goroutine's stack, as Go shows it: no application frame.
    stacks.insert_resolved(
        7,
        site(1, 0),
        vec![
            named(0x403a2e, "syscall.RawSyscall", "syscall_linux.go", 61),
            named(
                0x61313f,
                crate::symbols::gohttp::DIAL_CONN,
                "transport.go",
                1608,
            ),
            named(
                0x610000,
                "net/http.(*Transport).dialConnFor",
                "transport.go",
                1449,
            ),
        ],
    );
    p.meta.origins = Some(Origins::Unavailable(
        "uprobes are turned off (--no-uprobes)".into(),
    ));
    let r = process_report(&p, &stacks, &facts);
    let note = r.suspects[0].call_site_note.as_deref().unwrap();
    assert!(note.contains("goroutine of its own"), "{note}");
    assert!(
        note.ends_with("could not join it to that code: uprobes are turned off (--no-uprobes)"),
        "{note}"
    );
    assert!(
        r.diagnoses[0].evidence.iter().any(
            |e| e.ends_with("could not be joined to it: uprobes are turned off (--no-uprobes)")
        ),
        "{:#?}",
        r.diagnoses[0].evidence
    );
}

#[test]
fn node_origins_inherit_through_happy_eyeballs_and_unnamed_ones_are_one_group() {
    use sockleak_common::{origin::join, socket::NO_STACK};

    use crate::symbols::stacks::Frame;
    let js = |sym: &str| Frame {
        addr: 0x7f00_0000_1000,
        symbol: Some(sym.into()),
        module: None,
        file: None,
        line: None,
        runtime: None,
        note: None,
    };
    let native = |sym: &str| Frame {
        addr: 0x18b_9f80,
        symbol: Some(sym.into()),
        module: Some("/usr/bin/node".into()),
        file: None,
        line: None,
        runtime: None,
        note: None,
    };
    let mut stacks = Stacks::default();
    // The socket: Node's later tick.
    stacks.insert_resolved(
        7,
        site(1, 0),
        vec![
            native("uv__socket"),
            js("JS:^internalConnect node:net:1038:25"),
            js("JS:^processTicksAndRejections node:internal/process/task_queues:67:35"),
        ],
    );
    // Handles: the user's, a retry's (Node's own), an interpreted user frame (unnamed).
    stacks.insert_resolved(
        7,
        site(10, 0x1),
        vec![
            native("uv_tcp_init"),
            js("JS:^connect node:net:227:17"),
            js("JS:^openLeakyConnection /srv/app/leak.js:9:29"),
        ],
    );
    stacks.insert_resolved(
        7,
        site(10, 0),
        vec![
            native("uv_tcp_init"),
            js("JS:^openLeakyConnection /srv/app/leak.js:9:29"),
        ],
    );
    stacks.insert_resolved(
        7,
        site(11, 0x1),
        vec![
            native("uv_tcp_init"),
            js("JS:^internalConnectMultiple node:net:1106:33"),
            js("JS:^afterConnectMultiple node:net:1600:30"),
        ],
    );
    for (id, top) in [(12, 0x2), (13, 0x3)] {
        stacks.insert_resolved(
            7,
            site(id, top),
            vec![
                native("uv_tcp_init"),
                js("JS:^Socket.connect node:net:1202:36"),
                native("Builtins_InterpreterEntryTrampoline"),
                js("JS:^processTimers node:internal/timers:504:25"),
            ],
        );
    }
    let mut p = Process::new(7, None, 0);
    p.exited_ns = Some(100_000_000_000);
    p.meta.origins = Some(Origins::Joined);
    let mut fd = 3;
    let mut add = |n: usize, stack: i32, caller: u64, alt: i32| {
        for _ in 0..n {
            let mut s = sock(10_000_000_000, 1, Origin::Socket, 80);
            s.record.conn.join = join::NODE_HANDLE;
            s.record.conn.stack_id = stack;
            s.record.conn.caller = caller;
            s.record.conn.alt_stack_id = alt;
            s.record.conn.alt2_stack_id = NO_STACK;
            p.sockets.insert(fd, s);
            fd += 1;
        }
    };
    add(40, 10, 0x1, NO_STACK);
    add(8, 11, 0x1, 10);
    add(7, 12, 0x2, NO_STACK);
    add(5, 13, 0x3, NO_STACK);
    let r = process_report(&p, &stacks, &Facts::default());
    assert_eq!(r.suspects.len(), 2, "{:#?}", r.suspects);
    // The retries inherit the connection they replaced: one leak of 48.
    assert_eq!(r.suspects[0].count, 48);
    assert_eq!(
        r.suspects[0].call_site.as_deref(),
        Some("openLeakyConnection (leak.js:9)")
    );
    assert_eq!(
        r.suspects[0].origin_call.as_ref().unwrap().join,
        "node-handle"
    );
    // Interpreted user frames: one group whatever their stacks, saying which flag names them.
    assert_eq!(r.suspects[1].count, 12);
    assert_eq!(r.suspects[1].call_site, None);
    assert!(
        r.suspects[1]
            .call_site_note
            .as_deref()
            .unwrap()
            .contains("--interpreted-frames-native-stack")
    );
}
