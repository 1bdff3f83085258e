//! The alert rules in deploy/ pass `promtool check rules` and their unit tests, every metric they
//! use is one a real `serve` scrape produces, and that scrape passes `promtool check metrics`.
//! promtool comes from Debian's `prometheus` package (`cargo xtask test` installs it).

mod common;

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::{Trace, Workload, build_c, set_nofile, sleep_ms};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus package; cargo xtask test installs it)");
    if let (Some(text), Some(mut si)) = (stdin, child.stdin.take()) {
        si.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn rules_check_and_unit_tests_pass() {
    let rules = deploy("prometheus-rules.yaml");
    let (ok, out) = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    assert!(ok, "{out}");
    let tests = deploy("prometheus-rules.test.yaml");
    let (ok, out) = promtool(&["test", "rules", tests.to_str().unwrap()], None);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Every `sockleak_*` name in the rules' expressions.
fn rule_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(deploy("prometheus-rules.yaml")).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut names = BTreeSet::new();
    for g in doc["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let expr = r["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("sockleak_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    names
}

#[test]
fn a_real_scrape_lints_and_has_every_metric_the_rules_use() {
    if !common::require_bpf() {
        return;
    }
    let used = rule_metrics();
    assert!(used.len() >= 6, "{used:?}");
    // A process that listens, leaks up to its fd limit and fails with EMFILE: every series the
    // rules watch exists.
    let mut w = Workload::spawn(&mut Command::new(build_c("sockets")));
    w.expect("ready");
    set_nofile(w.pid, 24, 16384);
    let pid = w.pid.to_string();
    let t = Trace::serve(&[
        "--pid",
        &pid,
        "--listen",
        "127.0.0.1:0",
        "--min-age",
        "0",
        "--interval",
        "0.5",
    ]);
    let line = t.wait_log("serving /metrics");
    let base = line[line.find("http://").unwrap()..].trim().to_string();
    w.cmd("listen 16");
    w.cmd("leak 6");
    sleep_ms(600);
    w.cmd("leak 30");
    sleep_ms(1500);
    // As curl or promtool would fetch it: no OpenMetrics Accept header.
    let (_, ctype, body) = common::http_get(&format!("{base}/metrics"), None);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");

    let (ok, out) = promtool(&["check", "metrics"], Some(&body));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics: {out}\n{body}"
    );

    let emitted: BTreeSet<String> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect();
    let missing: Vec<&String> = used.difference(&emitted).collect();
    assert!(
        missing.is_empty(),
        "the rules use metrics serve did not emit: {missing:?}\n{body}"
    );
}
