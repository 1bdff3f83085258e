//! What runs inside each VM, and what its output must show (pure: unit-tested).
//!
//! The kernel suite is a subset of the privileged integration tests, built once on the host
//! (release) and run by exact name: each covers a hook family against ground truth from /proc,
//! `ss` or bpftool, so the matrix runs the same assertions as the host, not a parallel suite.

use std::fmt::Write as _;

/// (test binary, exact test names, what they cover on the kernel under test).
pub const SUITE: &[(&str, &[&str], &str)] = &[
    (
        "reliability",
        &[
            "every_program_attaches",
            "signals_report_and_detach_everything",
        ],
        "no feature missing, BTF offsets read; detach leaves no program",
    ),
    (
        "lifecycle",
        &[
            "leaks_are_attributed_to_their_call_site",
            "dup_dup2_and_fdupfd_copies_are_sockets",
            "forked_child_inherits_and_closes",
            "close_range_and_preexisting_sockets",
            "exec_drops_close_on_exec_sockets",
        ],
        "socket, close, dup/dup2/F_DUPFD, fork, close_range, exec (close-on-exec) against /proc",
    ),
    (
        "truth",
        &[
            "sockets_received_over_scm_rights",
            "io_uring_sockets_accepts_and_closes",
        ],
        "SCM_RIGHTS, io_uring socket/accept/multishot/close against /proc",
    ),
    (
        "failures",
        &["accept_loop_spinning_on_emfile"],
        "accept4 failing with EMFILE",
    ),
    (
        "tcp_state",
        &["close_wait_at_the_accept_call_site"],
        "accept4, CLOSE_WAIT against ss",
    ),
    (
        "go_http",
        &["per_request_transport_leak_is_found_at_dial_conn"],
        "connect from Go, the dialConn uprobe diagnosis against /proc",
    ),
    (
        "containers",
        &["cgroup_subtree_with_pid_namespace_and_late_joiner"],
        "the in-kernel cgroup filter",
    ),
];

/// What a kernel must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Every test of the suite passes.
    Suite,
    /// sockleak refuses with exactly this stderr line, exits non-zero, attaches nothing.
    Refusal(String),
    /// sockleak refuses with a line starting and ending so (a kernel not in the table).
    RefusalLike { starts: String, ends: String },
}

/// Everything the guest needs, baked into its script.
pub struct Plan<'a> {
    pub path: &'a str,
    pub time_scale: u32,
    /// The host's RLIMIT_NOFILE (soft, hard): the guest runs with the same, as the host tests
    /// do (a VM's default of 1024 would earn the fd-limit diagnoses those tests rule out).
    pub nofile: (u64, u64),
    pub sockleak: &'a str,
    /// (test binary name, executable).
    pub binaries: &'a [(String, String)],
}

/// The guest's script (bash; run by virtme-ng as root in the VM, cwd the workspace).
pub fn script(plan: &Plan, expect: &Expect) -> String {
    let mut s =
        String::from("#!/bin/bash\n# Written by `cargo xtask vmtest`: runs inside the VM.\n");
    let _ = writeln!(
        s,
        "export CI=true RUST_BACKTRACE=1 HOME=/root SOCKLEAK_TEST_TIME_SCALE={}",
        plan.time_scale
    );
    let _ = writeln!(s, "export PATH='{}'", plan.path);
    let _ = writeln!(
        s,
        "ulimit -Hn {} && ulimit -Sn {}",
        plan.nofile.1, plan.nofile.0
    );
    s += "echo \"VMTEST-KERNEL $(uname -r)\"\n";
    s += "ms() { echo $(( $(date +%s%N) / 1000000 )); }\n";
    match expect {
        Expect::Suite => {
            for (name, tests, _) in SUITE {
                let Some((_, exe)) = plan.binaries.iter().find(|(n, _)| n == name) else {
                    continue;
                };
                let _ = writeln!(
                    s,
                    "t=$(ms); '{exe}' --exact {} --test-threads 2; rc=$?; echo \"VMTEST-BIN {name} rc=$rc ms=$(( $(ms) - t ))\"",
                    tests.join(" ")
                );
            }
        }
        Expect::Refusal(_) | Expect::RefusalLike { .. } => {
            // Count every loaded program before and after: a refusal attaches nothing.
            // (bpftool failing reports a word, not a count: the judge then fails.)
            s += "progs() { l=$(bpftool prog list) || { echo bpftool-failed; return; }; grep -c '^[0-9]*:' <<<\"$l\"; }\n";
            s += "before=$(progs)\n";
            let _ = writeln!(
                s,
                "err=$('{}' trace --pid 1 2>&1 >/dev/null); rc=$?",
                plan.sockleak
            );
            s += "echo \"VMTEST-REFUSAL rc=$rc before=$before after=$(progs)\"\n";
            s += "while IFS= read -r l; do echo \"VMTEST-STDERR $l\"; done <<<\"$err\"\n";
        }
    }
    s += "echo VMTEST-END\n";
    s
}

/// What the guest reported.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub kernel: Option<String>,
    /// (binary, exit code, milliseconds).
    pub binaries: Vec<(String, i32, u64)>,
    /// (exit code, programs before, programs after).
    pub refusal: Option<(i32, u32, u32)>,
    pub stderr: Vec<String>,
    pub ended: bool,
}

fn kv<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?
        .parse()
        .ok()
}

pub fn parse(output: &str) -> Outcome {
    let mut o = Outcome::default();
    for line in output.lines() {
        // The guest's lines may come behind a console prefix.
        let Some(at) = line.find("VMTEST-") else {
            continue;
        };
        let l = &line[at..];
        if let Some(k) = l.strip_prefix("VMTEST-KERNEL ") {
            o.kernel = Some(k.trim().to_string());
        } else if let Some(rest) = l.strip_prefix("VMTEST-BIN ") {
            let name = rest.split_whitespace().next().unwrap_or("").to_string();
            o.binaries.push((
                name,
                kv(rest, "rc").unwrap_or(-1),
                kv(rest, "ms").unwrap_or(0),
            ));
        } else if let Some(rest) = l.strip_prefix("VMTEST-REFUSAL ") {
            o.refusal = Some((
                kv(rest, "rc").unwrap_or(0),
                kv(rest, "before").unwrap_or(0),
                kv(rest, "after").unwrap_or(u32::MAX),
            ));
        } else if let Some(rest) = l.strip_prefix("VMTEST-STDERR ") {
            o.stderr.push(rest.to_string());
        } else if l.starts_with("VMTEST-END") {
            o.ended = true;
        }
    }
    o
}

/// Checks an outcome against the expectation: Ok(summary) or what went wrong.
pub fn judge(o: &Outcome, expect: &Expect) -> Result<String, String> {
    if !o.ended {
        return Err("the guest did not finish its script (see the log above)".into());
    }
    match expect {
        Expect::Suite => {
            let failed: Vec<&str> = o
                .binaries
                .iter()
                .filter(|(_, rc, _)| *rc != 0)
                .map(|(n, _, _)| n.as_str())
                .collect();
            let ran: Vec<&str> = o.binaries.iter().map(|(n, _, _)| n.as_str()).collect();
            let missing: Vec<&str> = SUITE
                .iter()
                .map(|(n, _, _)| *n)
                .filter(|n| !ran.contains(n))
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "test binaries that did not run: {}",
                    missing.join(", ")
                ));
            }
            if !failed.is_empty() {
                return Err(format!("failing test binaries: {}", failed.join(", ")));
            }
            let tests: usize = SUITE.iter().map(|(_, t, _)| t.len()).sum();
            Ok(format!(
                "{tests} tests in {} binaries passed",
                o.binaries.len()
            ))
        }
        Expect::Refusal(_) | Expect::RefusalLike { .. } => {
            let Some((rc, before, after)) = o.refusal else {
                return Err("no refusal reported".into());
            };
            let line = match o.stderr.as_slice() {
                [l] => l,
                other => {
                    return Err(format!(
                        "expected one stderr line, got {}: {other:?}",
                        other.len()
                    ));
                }
            };
            let ok = match expect {
                Expect::Refusal(want) => line == want,
                Expect::RefusalLike { starts, ends } => {
                    line.starts_with(starts.as_str()) && line.ends_with(ends.as_str())
                }
                Expect::Suite => unreachable!(),
            };
            if !ok {
                return Err(format!(
                    "unexpected refusal line: {line:?} (expected {expect:?})"
                ));
            }
            if rc == 0 {
                return Err("sockleak exited 0".into());
            }
            if before != after {
                return Err(format!(
                    "BPF programs loaded before {before}, after {after}"
                ));
            }
            Ok(format!(
                "refused as expected (exit {rc}, nothing attached): {line}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> (Vec<(String, String)>, String) {
        let bins = SUITE
            .iter()
            .map(|(n, _, _)| (n.to_string(), format!("/t/{n}-abc")))
            .collect();
        (bins, "/usr/bin:/bin".into())
    }

    #[test]
    fn the_suite_script_runs_every_binary_by_exact_name() {
        let (bins, path) = plan();
        let p = Plan {
            path: &path,
            time_scale: 10,
            nofile: (20000, 20000),
            sockleak: "/t/sockleak",
            binaries: &bins,
        };
        let s = script(&p, &Expect::Suite);
        assert!(s.contains("SOCKLEAK_TEST_TIME_SCALE=10"), "{s}");
        assert!(s.contains("ulimit -Hn 20000 && ulimit -Sn 20000"), "{s}");
        assert!(s.contains(
            "'/t/truth-abc' --exact sockets_received_over_scm_rights io_uring_sockets_accepts_and_closes --test-threads 2"
        ), "{s}");
        assert_eq!(s.matches("VMTEST-BIN").count(), SUITE.len());
        let r = script(&p, &Expect::Refusal("x".into()));
        assert!(r.contains("'/t/sockleak' trace --pid 1"), "{r}");
        assert!(!r.contains("VMTEST-BIN"));
    }

    fn suite_output(rc_of_truth: i32) -> String {
        let mut out = String::from("boot noise\nVMTEST-KERNEL 6.1.0-57-amd64\n");
        for (n, _, _) in SUITE {
            let rc = if *n == "truth" { rc_of_truth } else { 0 };
            out += &format!("VMTEST-BIN {n} rc={rc} ms=1234\n");
        }
        out + "VMTEST-END\n"
    }

    #[test]
    fn a_suite_passes_only_when_every_binary_ran_and_passed() {
        let o = parse(&suite_output(0));
        assert_eq!(o.kernel.as_deref(), Some("6.1.0-57-amd64"));
        assert_eq!(o.binaries.len(), SUITE.len());
        assert_eq!(o.binaries[0].2, 1234);
        assert!(judge(&o, &Expect::Suite).is_ok());
        let e = judge(&parse(&suite_output(101)), &Expect::Suite).unwrap_err();
        assert_eq!(e, "failing test binaries: truth");
        let short = suite_output(0).replace("VMTEST-BIN go_http rc=0 ms=1234\n", "");
        assert!(
            judge(&parse(&short), &Expect::Suite)
                .unwrap_err()
                .contains("did not run: go_http")
        );
        let cut = suite_output(0).replace("VMTEST-END\n", "");
        assert!(judge(&parse(&cut), &Expect::Suite).is_err());
    }

    #[test]
    fn a_refusal_is_one_exact_line_a_failure_and_nothing_attached() {
        let want = "sockleak: kernel 5.10 lacks bpf_loop (5.17) (sockleak needs 5.17 or later); nothing was attached";
        let out = |rc: i32, after: u32, lines: &[&str]| {
            let mut s = format!(
                "VMTEST-KERNEL 5.10.0-46-amd64\nVMTEST-REFUSAL rc={rc} before=0 after={after}\n"
            );
            for l in lines {
                s += &format!("VMTEST-STDERR {l}\n");
            }
            s + "VMTEST-END\n"
        };
        let e = Expect::Refusal(want.into());
        assert!(judge(&parse(&out(1, 0, &[want])), &e).is_ok());
        assert!(
            judge(&parse(&out(0, 0, &[want])), &e)
                .unwrap_err()
                .contains("exited 0")
        );
        assert!(
            judge(&parse(&out(1, 3, &[want])), &e)
                .unwrap_err()
                .contains("after 3")
        );
        assert!(judge(&parse(&out(1, 0, &[want, "more"])), &e).is_err());
        assert!(
            judge(
                &parse(&out(1, 0, &["sockleak: attaching ... Verifier output"])),
                &e
            )
            .is_err()
        );
        let like = Expect::RefusalLike {
            starts: "sockleak: kernel 5.10 lacks ".into(),
            ends: "; nothing was attached".into(),
        };
        assert!(judge(&parse(&out(1, 0, &[want])), &like).is_ok());
    }
}
