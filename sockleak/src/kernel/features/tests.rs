use std::collections::BTreeSet;

use super::{object::Program, *};

const LOOP: u32 = 181;
const TASK_PT_REGS: u32 = 175;
const TASK_BTF: u32 = 158;
const ANCESTOR_CGROUP: u32 = 123;
const RINGBUF_RESERVE: u32 = 131;
const PROBE_READ_USER: u32 = 112;
const RINGBUF: u32 = 27;

fn prog(name: &str, kind: Kind, helpers: &[u32]) -> Program {
    Program {
        name: name.into(),
        stack_bytes: 64,
        stack_chain: Vec::new(),
        kind,
        helpers: helpers.iter().copied().collect(),
        subprogram_calls: false,
        callbacks: false,
        kfunc_calls: 0,
    }
}

/// An object shaped like sockleak's: required syscall programs, an optional one, a uprobe.
fn uses() -> Uses {
    let all = [
        LOOP,
        TASK_PT_REGS,
        TASK_BTF,
        ANCESTOR_CGROUP,
        RINGBUF_RESERVE,
    ];
    Uses {
        programs: vec![
            prog("sys_exit_socket", Kind::Tracepoint, &all),
            prog("task_newtask", Kind::Tracepoint, &[RINGBUF_RESERVE]),
            prog("go_dial_conn", Kind::Uprobe, &[PROBE_READ_USER]),
        ],
        maps: [("EVENTS".to_string(), RINGBUF)].into(),
        global_data: true,
    }
}

fn optional() -> Optional {
    [
        ("task_newtask", "children forked after start"),
        ("go_dial_conn", "Go net/http dials per Transport"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

/// Every probe of `uses` answered yes, except those in `no`.
fn answers(u: &Uses, no: &[Need]) -> Vec<(Need, Answer)> {
    let mut needs: BTreeSet<Need> = u.programs.iter().map(|p| Need::Program(p.kind)).collect();
    needs.extend(u.maps.values().map(|t| Need::Map(*t)));
    needs.extend(
        u.helper_pairs()
            .into_iter()
            .map(|(k, h)| Need::Helper(k, h)),
    );
    needs
        .into_iter()
        .map(|n| (n, Some(!no.contains(&n))))
        .collect()
}

#[test]
fn linux_5_10_is_refused_in_one_line() {
    // What the probes answer on Debian 11's 5.10 (measured in the VM matrix).
    let tp = |h| Need::Helper(Kind::Tracepoint, h);
    let no = [
        tp(LOOP),
        tp(TASK_PT_REGS),
        tp(TASK_BTF),
        tp(ANCESTOR_CGROUP),
    ];
    let v = decide(
        "5.10.0-46-amd64",
        &uses(),
        &answers(&uses(), &no),
        &optional(),
    );
    assert_eq!(
        v,
        Verdict::Refuse(
            "kernel 5.10 lacks bpf_get_current_task_btf (5.11), bpf_get_current_ancestor_cgroup_id (5.14), \
             bpf_task_pt_regs (5.15), bpf_loop (5.17) (sockleak needs 5.17 or later); nothing was attached"
                .into()
        )
    );
}

#[test]
fn a_kernel_with_everything_loads_everything() {
    let v = decide(
        "6.12.95+deb12-amd64",
        &uses(),
        &answers(&uses(), &[]),
        &optional(),
    );
    assert_eq!(
        v,
        Verdict::Go {
            without: BTreeMap::new()
        }
    );
}

#[test]
fn unknown_answers_leave_it_to_the_load() {
    let mut a = answers(&uses(), &[]);
    for (_, ans) in &mut a {
        *ans = None;
    }
    assert_eq!(
        decide("5.4.0", &uses(), &a, &optional()),
        Verdict::Go {
            without: BTreeMap::new()
        }
    );
}

#[test]
fn what_only_an_optional_program_lacks_is_one_warning() {
    let no = [Need::Helper(Kind::Uprobe, PROBE_READ_USER)];
    let v = decide(
        "6.1.0-57-amd64",
        &uses(),
        &answers(&uses(), &no),
        &optional(),
    );
    let Verdict::Go { without } = v else {
        panic!("refused: {v:?}")
    };
    assert_eq!(without.len(), 1);
    assert_eq!(
        without["go_dial_conn"],
        "program go_dial_conn cannot be loaded: this kernel lacks bpf_probe_read_user (5.5); \
         Go net/http dials per Transport are not tracked"
    );
    // A program type the kernel lacks costs its programs too.
    let no = [Need::Program(Kind::Uprobe)];
    let Verdict::Go { without } = decide("6.1", &uses(), &answers(&uses(), &no), &optional())
    else {
        panic!("refused")
    };
    assert!(
        without["go_dial_conn"].contains("lacks uprobe (BPF_PROG_TYPE_KPROBE) programs (4.3)"),
        "{without:?}"
    );
}

#[test]
fn a_missing_map_type_refuses_even_for_optional_programs() {
    let no = [Need::Map(RINGBUF)];
    assert_eq!(
        decide("5.4.0-150-generic", &uses(), &answers(&uses(), &no), &optional()),
        Verdict::Refuse(
            "kernel 5.4 lacks ringbuf maps (5.8) (sockleak needs 5.17 or later); nothing was attached"
                .into()
        )
    );
}

#[test]
fn a_new_kernel_built_without_a_feature_is_told_so() {
    let no = [Need::Helper(Kind::Tracepoint, LOOP)];
    let Verdict::Refuse(line) = decide(
        "6.8.0-31-generic",
        &uses(),
        &answers(&uses(), &no),
        &optional(),
    ) else {
        panic!("not refused")
    };
    assert_eq!(
        line,
        "kernel 6.8.0-31-generic lacks bpf_loop (5.17), which 5.17 and later normally have: \
         it was built or configured without it; nothing was attached"
    );
}

#[test]
fn releases() {
    assert_eq!(major_minor("5.10.0-46-amd64"), Some(R(5, 10)));
    assert_eq!(major_minor("6.12.95+deb12-amd64"), Some(R(6, 12)));
    assert_eq!(major_minor("5.14.0-427.13.1.el9_4.x86_64"), Some(R(5, 14)));
    assert_eq!(major_minor("6.1"), Some(R(6, 1)));
    assert_eq!(major_minor("6"), None);
    assert_eq!(major_minor("linux"), None);
    assert!(R(5, 17) > R(5, 10) && R(6, 1) > R(5, 17) && R(5, 9) < R(5, 10));
    assert_eq!(R(5, 17).to_string(), "5.17");
    assert!(!kernel_release().is_empty());
}

#[test]
fn tables_cover_every_id_once() {
    let ids: Vec<u32> = table::HELPERS.iter().map(|(i, _, _)| *i).collect();
    assert_eq!(ids, (1..=211).collect::<Vec<_>>());
    for (id, name, _) in table::HELPERS {
        assert!(name.starts_with("bpf_"), "{name}");
        // The probe's id conversion is exact for every helper.
        assert_eq!(helper_id(*id).map(|h| h as u32), Some(*id));
    }
    assert_eq!(helper_id(212), None);
    assert_eq!(table::helper(LOOP), Some(("bpf_loop", R(5, 17))));
    assert_eq!(table::helper(0), None);
    let maps: Vec<u32> = table::MAPS.iter().map(|(i, _, _)| *i).collect();
    assert_eq!(maps, (1..=33).collect::<Vec<_>>());
    for (t, _, _) in table::MAPS {
        assert!(map_type(*t).is_some(), "map type {t}");
    }
    assert_eq!(map_type(999), None);
}

/// The object sockleak embeds: everything it needs is known to the tables and no newer than
/// MIN_KERNEL (what `cargo xtask kernel-features` checks at build time, here on the binary).
#[test]
fn the_embedded_object_is_known_and_within_the_minimum() {
    let obj = crate::kernel::bpf::object();
    if obj.is_empty() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "CI=true: the eBPF object must be built (cargo xtask build-ebpf)"
        );
        eprintln!("SKIPPED: stub build without the eBPF object");
        return;
    }
    let u = object::analyze(obj).expect("the embedded object parses");
    assert!(u.programs.iter().any(|p| p.name == "sys_exit_socket"));
    let loop_users: Vec<_> = u.callers(Kind::Tracepoint, LOOP).collect();
    assert!(
        !loop_users.is_empty(),
        "bpf_loop is used by tracepoint programs"
    );
    assert!(
        u.programs.iter().any(|p| p.callbacks),
        "bpf_loop callbacks are seen"
    );
    assert!(u.maps.values().any(|t| *t == RINGBUF));
    assert!(u.global_data);
    for (k, h) in u.helper_pairs() {
        let (_, r) = Need::Helper(k, h).describe();
        let r = r.unwrap_or_else(|| panic!("helper {h} not in the table"));
        assert!(r <= MIN_KERNEL, "helper {h} needs {r}");
    }
    for p in &u.programs {
        assert_ne!(p.kind, Kind::Other, "{}", p.name);
        assert_eq!(p.kfunc_calls, 0, "{}", p.name);
    }
}
