//! `sockleak serve --web-config`: TLS, client certificates and basic auth in the exporter-toolkit
//! format, driven with curl over certificates made by openssl; bad files stop it at startup.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{Trace, Workload, build_c, proc_socket_fds, sockleak_bin};

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn make_certs(dir: &Path) {
    let sh = |script: &str| {
        let st = Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            st.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=sockleak-test-ca",
    );
    sh(
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 \
        && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext \
        && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext",
    );
    sh(
        "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=prometheus \
        && printf 'extendedKeyUsage=clientAuth\\n' > client.ext \
        && openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext",
    );
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sockleak-web-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// curl's exit status and the HTTP code it printed ("000" when no response).
fn curl(args: &[&str]) -> (bool, String, String) {
    let body = std::env::temp_dir().join(format!("sockleak-curl-{}", std::process::id()));
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-o"])
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = std::fs::read_to_string(&body).unwrap_or_default();
    let _ = std::fs::remove_file(&body);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        text,
    )
}

fn base_url(t: &Trace) -> String {
    let line = t.wait_log("serving /metrics");
    let start = line.find("https://").expect("an https URL");
    line[start..].split_whitespace().next().unwrap().to_string()
}

/// A workload (that leaked `leak` sockets) and `serve` for it with `dir`/web.yml; the HTTPS
/// base URL.
fn serve_with_web_config(dir: &Path, leak: u32) -> (Workload, Trace, String) {
    let mut w = Workload::spawn(&mut Command::new(build_c("sockets")));
    w.expect("ready");
    if leak > 0 {
        w.cmd(&format!("leak {leak}"));
    }
    let pid = w.pid.to_string();
    let web = dir.join("web.yml");
    let t = Trace::serve(&[
        "--pid",
        &pid,
        "--listen",
        "127.0.0.1:0",
        "--web-config",
        web.to_str().unwrap(),
    ]);
    let base = base_url(&t);
    (w, t, base)
}

#[test]
fn tls_and_basic_auth() {
    if !common::require_bpf() {
        return;
    }
    let dir = tempdir("auth");
    make_certs(&dir);
    let hash = bcrypt::hash("s3cret", 6).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\nbasic_auth_users:\n  prometheus: {hash}\n"
        ),
    )
    .unwrap();
    let (w, _t, base) = serve_with_web_config(&dir, 3);
    let pid = w.pid.to_string();
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let metrics = format!("{base}/metrics");

    assert_eq!(curl(&["--cacert", ca, &metrics]).1, "401", "no credentials");
    assert_eq!(
        curl(&["--cacert", ca, "-u", "prometheus:wrong", &metrics]).1,
        "401"
    );
    assert_eq!(
        curl(&["--cacert", ca, "-u", "nobody:s3cret", &metrics]).1,
        "401"
    );
    let (_, code, body) = curl(&["--cacert", ca, "-u", "prometheus:s3cret", &metrics]);
    assert_eq!(code, "200", "{body}");
    let truth = proc_socket_fds(w.pid).len();
    let want = format!("sockleak_live_sockets{{pid=\"{pid}\",");
    let line = body
        .lines()
        .find(|l| l.starts_with(&want))
        .unwrap_or_else(|| panic!("{body}"));
    assert!(line.ends_with(&format!(" {truth}")), "{line}");
    assert_eq!(
        curl(&[
            "--cacert",
            ca,
            "-u",
            "prometheus:s3cret",
            &format!("{base}/report")
        ])
        .1,
        "200"
    );
    // Liveness probes need no credentials; it says only "ok".
    let (_, code, body) = curl(&["--cacert", ca, &format!("{base}/healthz")]);
    assert_eq!((code.as_str(), body.trim()), ("200", "ok"));
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = metrics.replacen("https://", "http://", 1);
    let (ok, code, _) = curl(&["-u", "prometheus:s3cret", &plain]);
    assert!(!ok || code != "200", "plain HTTP answered {code}");
    // A client that does not trust the certificate refuses it.
    assert!(!curl(&["-u", "prometheus:s3cret", &metrics]).0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn client_certificate_required_when_configured() {
    if !common::require_bpf() {
        return;
    }
    let dir = tempdir("mtls");
    make_certs(&dir);
    std::fs::write(
        dir.join("web.yml"),
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n",
    )
    .unwrap();
    let (_w, _t, base) = serve_with_web_config(&dir, 0);
    let metrics = format!("{base}/metrics");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let (ok, code, _) = curl(&["--cacert", &p("ca.pem"), &metrics]);
    assert!(!ok && code == "000", "no client certificate: {ok} {code}");
    // A certificate the CA did not sign is refused too.
    let (ok, _, _) = curl(&[
        "--cacert",
        &p("ca.pem"),
        "--cert",
        &p("ca.pem"),
        "--key",
        &p("ca.key"),
        &metrics,
    ]);
    assert!(!ok, "self-signed client certificate accepted");
    let (_, code, body) = curl(&[
        "--cacert",
        &p("ca.pem"),
        "--cert",
        &p("client.pem"),
        "--key",
        &p("client.key"),
        &metrics,
    ]);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("sockleak_live_sockets"), "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `sockleak serve` expecting it to refuse at startup.
fn refused(args: &[&str]) -> String {
    let out = Command::new(sockleak_bin())
        .arg("serve")
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} started");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("attached"), "{err}");
    err
}

#[test]
fn bad_web_configs_stop_at_startup_naming_the_field() {
    if !common::require_bpf() {
        return;
    }
    let dir = tempdir("bad");
    let pid = std::process::id().to_string();
    let cases: &[(&str, &str)] = &[
        ("tls_server_config: [\n", "not a valid web configuration"),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.key\n",
            "tls_server_config.cert_file: cannot read",
        ),
        (
            "basic_auth_users:\n  alice: hunter2\n",
            "basic_auth_users.alice: not a bcrypt hash",
        ),
        ("basic_auth_userz:\n  alice: x\n", "basic_auth_userz"),
        (
            "tls_server_config:\n  cert_file: /etc/hostname\n  key_file: /etc/hostname\n",
            "tls_server_config.cert_file",
        ),
    ];
    for (i, (yaml, want)) in cases.iter().enumerate() {
        let f = dir.join(format!("web{i}.yml"));
        std::fs::write(&f, yaml).unwrap();
        let f = f.to_str().unwrap();
        let err = refused(&["--pid", &pid, "--web-config", f]);
        assert!(
            err.starts_with(&format!("sockleak: --web-config {f}: ")) && err.contains(want),
            "{yaml:?}: {err}"
        );
    }
    let err = refused(&["--pid", &pid, "--web-config", "/nonexistent/web.yml"]);
    assert!(
        err.starts_with("sockleak: --web-config /nonexistent/web.yml: cannot read it"),
        "{err}"
    );
    // An unknown flag points at the help of the subcommand that was run.
    let err = refused(&["--pid", &pid, "--bogus"]);
    assert!(err.contains("`sockleak serve --help`"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn non_loopback_without_web_config_warns_of_what_it_exposes() {
    if !common::require_bpf() {
        return;
    }
    let mut w = Workload::spawn(&mut Command::new(build_c("sockets")));
    w.expect("ready");
    let pid = w.pid.to_string();
    let t = Trace::serve(&["--pid", &pid, "--listen", "0.0.0.0:0"]);
    let line = t.wait_log("non-loopback");
    assert!(line.contains("without --web-config"), "{line}");
    assert!(line.contains("call stacks, peers"), "{line}");
    // It still serves.
    t.wait_log("serving /metrics");
}
