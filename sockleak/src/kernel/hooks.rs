//! Which tracepoint each program attaches to on this kernel, and what is lost where one is
//! missing or laid out differently. A pure plan from what tracefs shows ([`plan`], unit-tested);
//! `bpf::Tracer::attach` carries it out.

use std::path::Path;

use sockleak_common::tracepoint::{self as tp, Field};

use crate::{
    error::UserError,
    kernel::bpf::{PROBES, Probe, parse_field_offset},
};

/// Tracepoints renamed upstream, as (category, name sockleak's program has, older name).
/// `io_uring_submit_sqe` became `io_uring_submit_req` in Linux 6.4 with the same fields.
pub const RENAMED: &[(&str, &str, &str)] =
    &[("io_uring", "io_uring_submit_req", "io_uring_submit_sqe")];

/// Programs that see nothing useful without another, as (program, the program it needs): a
/// submission only records a call site for its completion.
const NEEDS: &[(&str, &str)] = &[("io_uring_submit_req", "io_uring_complete")];

/// Categories whose programs fail together, with what is lost: said once, not per tracepoint.
const FAMILIES: &[(&str, &str)] = &[("io_uring", "io_uring sockets are not counted")];

/// The fields a program reads from its tracepoint record at fixed offsets.
pub fn fields(p: &Probe) -> &'static [Field] {
    match (p.category, p.name) {
        ("syscalls", "sys_enter_close") => tp::sys_enter_close::FIELDS,
        ("syscalls", n) if n.starts_with("sys_exit_") => tp::sys_exit::FIELDS,
        ("task", "task_newtask") => tp::task_newtask::FIELDS,
        ("io_uring", "io_uring_submit_req") => tp::uring_submit::FIELDS,
        ("io_uring", "io_uring_complete") => tp::uring_complete::FIELDS,
        _ => &[],
    }
}

/// What the plan needs to know of tracefs.
pub trait Tracefs {
    fn exists(&self, category: &str, name: &str) -> bool;
    /// The tracepoint's `format` file, if readable.
    fn format(&self, category: &str, name: &str) -> Option<String>;
}

/// The tracefs mounted at a path.
pub struct Mounted<'a>(pub &'a Path);

impl Tracefs for Mounted<'_> {
    fn exists(&self, category: &str, name: &str) -> bool {
        self.0.join("events").join(category).join(name).exists()
    }
    fn format(&self, category: &str, name: &str) -> Option<String> {
        std::fs::read_to_string(
            self.0
                .join("events")
                .join(category)
                .join(name)
                .join("format"),
        )
        .ok()
    }
}

/// A program to attach, and the tracepoint it goes to on this kernel.
#[derive(Debug, Clone, Copy)]
pub struct Attach {
    pub probe: &'static Probe,
    pub tracepoint: &'static str,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub attach: Vec<Attach>,
    /// One line per loss: what is not seen, and why.
    pub degraded: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Usable(&'static str),
    Missing,
    /// The record has another layout (the mismatch, named).
    Layout(String),
    /// Useless without a program that cannot be attached.
    Skipped,
}

/// Checks the fields a program reads against a format file: None when they match, else the
/// first difference. Only what the program reads must match; other fields may move.
pub fn layout_mismatch(format: &str, want: &[Field]) -> Option<String> {
    want.iter()
        .find_map(|(field, off)| match parse_field_offset(format, field) {
            Some(o) if o as usize == *off => None,
            Some(o) => Some(format!("{field} at offset {o}, not {off}")),
            None => Some(format!("no field {field}")),
        })
}

fn status(t: &impl Tracefs, p: &Probe) -> Status {
    let older = RENAMED
        .iter()
        .find(|(c, n, _)| *c == p.category && *n == p.name)
        .map(|(_, _, o)| *o);
    let Some(name) = std::iter::once(p.name)
        .chain(older)
        .find(|n| t.exists(p.category, n))
    else {
        return Status::Missing;
    };
    // A tracefs without format files (a test's fake view) cannot be checked: trust it.
    match t
        .format(p.category, name)
        .and_then(|f| layout_mismatch(&f, fields(p)))
    {
        Some(why) => Status::Layout(why),
        None => Status::Usable(name),
    }
}

fn reason(p: &Probe, s: &Status) -> String {
    match s {
        Status::Layout(why) => format!(
            "tracepoint {}:{} has another layout on this kernel ({why})",
            p.category, p.name
        ),
        _ => format!(
            "tracepoint {}:{} is missing on this kernel",
            p.category, p.name
        ),
    }
}

/// What to attach: a required tracepoint that cannot be used is an error; every optional one
/// that cannot is one line naming what is not seen.
pub fn plan(t: &impl Tracefs) -> Result<Plan, UserError> {
    let mut st: Vec<(&'static Probe, Status)> = PROBES.iter().map(|p| (p, status(t, p))).collect();
    for (p, s) in &st {
        if p.optional.is_none() {
            let name = format!("{}:{}", p.category, p.name);
            match s {
                Status::Usable(_) => {}
                Status::Layout(why) => {
                    return Err(UserError::TracepointLayout {
                        tracepoint: name,
                        detail: why.clone(),
                    });
                }
                _ => return Err(UserError::MissingTracepoint(name)),
            }
        }
    }
    let unusable = |st: &[(&Probe, Status)], name: &str| {
        st.iter()
            .any(|(p, s)| p.name == name && !matches!(s, Status::Usable(_)))
    };
    // Before skipping: a family of which nothing exists is said as such.
    let absent = |cat: &str| {
        st.iter()
            .filter(|(q, _)| q.category == cat)
            .all(|(_, s)| *s == Status::Missing)
    };
    let absent: Vec<&str> = FAMILIES
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| absent(c))
        .collect();
    let skip: Vec<usize> = (0..st.len())
        .filter(|&i| {
            NEEDS
                .iter()
                .any(|(prog, dep)| *prog == st[i].0.name && unusable(&st, dep))
        })
        .collect();
    for i in skip {
        st[i].1 = Status::Skipped;
    }
    let mut out = Plan::default();
    let mut said = Vec::new();
    for (p, s) in &st {
        match s {
            Status::Usable(tracepoint) => out.attach.push(Attach {
                probe: p,
                tracepoint,
            }),
            _ => {
                let family = FAMILIES.iter().find(|(c, _)| *c == p.category);
                match family {
                    Some((cat, lost))
                        if st.iter().all(|(q, s)| {
                            q.category != *cat || !matches!(s, Status::Usable(_))
                        }) =>
                    {
                        if said.contains(cat) {
                            continue;
                        }
                        said.push(*cat);
                        let members: Vec<_> =
                            st.iter().filter(|(q, _)| q.category == *cat).collect();
                        let why = if absent.contains(cat) {
                            format!("this kernel has no {cat} tracepoints")
                        } else {
                            members
                                .iter()
                                .filter(|(_, s)| !matches!(s, Status::Skipped))
                                .map(|(q, s)| reason(q, s))
                                .collect::<Vec<_>>()
                                .join("; ")
                        };
                        out.degraded.push(format!("{lost}: {why}"));
                    }
                    _ => {
                        let lost = p.optional.unwrap_or("its events");
                        out.degraded
                            .push(format!("{}: {lost} are not tracked", reason(p, s)));
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A tracefs view: tracepoint -> format file (None: no format file).
    #[derive(Default)]
    struct Fake(HashMap<String, Option<String>>);

    impl Fake {
        /// Every tracepoint sockleak uses, with the layout its programs expect.
        fn full() -> Fake {
            let mut f = Fake::default();
            for p in PROBES {
                f.put(p.category, p.name, Some(format_of(fields(p))));
            }
            f
        }
        fn put(&mut self, cat: &str, name: &str, format: Option<String>) {
            self.0.insert(format!("{cat}:{name}"), format);
        }
        fn remove(&mut self, cat: &str, name: &str) {
            self.0.remove(&format!("{cat}:{name}"));
        }
    }

    impl Tracefs for Fake {
        fn exists(&self, c: &str, n: &str) -> bool {
            self.0.contains_key(&format!("{c}:{n}"))
        }
        fn format(&self, c: &str, n: &str) -> Option<String> {
            self.0.get(&format!("{c}:{n}")).cloned().flatten()
        }
    }

    fn format_of(fields: &[Field]) -> String {
        let mut f = String::from(
            "name: x\nID: 1\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n",
        );
        for (name, off) in fields {
            f += &format!("\tfield:u64 {name};\toffset:{off};\tsize:8;\tsigned:0;\n");
        }
        f
    }

    fn attached(p: &Plan) -> Vec<String> {
        p.attach
            .iter()
            .map(|a| format!("{}->{}", a.probe.name, a.tracepoint))
            .collect()
    }

    #[test]
    fn a_complete_kernel_attaches_everything_silently() {
        let p = plan(&Fake::full()).unwrap();
        assert_eq!(p.attach.len(), PROBES.len());
        assert!(p.degraded.is_empty(), "{:?}", p.degraded);
        assert!(p.attach.iter().all(|a| a.tracepoint == a.probe.name));
    }

    #[test]
    fn the_older_io_uring_submit_name_is_used() {
        // Linux 6.1: io_uring_submit_sqe, same fields.
        let mut f = Fake::full();
        f.remove("io_uring", "io_uring_submit_req");
        f.put(
            "io_uring",
            "io_uring_submit_sqe",
            Some(format_of(tp::uring_submit::FIELDS)),
        );
        let p = plan(&f).unwrap();
        assert!(p.degraded.is_empty(), "{:?}", p.degraded);
        assert!(
            attached(&p).contains(&"io_uring_submit_req->io_uring_submit_sqe".to_string()),
            "{:?}",
            attached(&p)
        );
    }

    #[test]
    fn no_io_uring_is_one_warning() {
        let mut f = Fake::full();
        f.remove("io_uring", "io_uring_submit_req");
        f.remove("io_uring", "io_uring_complete");
        let p = plan(&f).unwrap();
        assert_eq!(
            p.degraded,
            vec!["io_uring sockets are not counted: this kernel has no io_uring tracepoints"]
        );
        assert_eq!(p.attach.len(), PROBES.len() - 2);
    }

    #[test]
    fn a_submission_without_its_completion_is_not_attached() {
        let mut f = Fake::full();
        f.remove("io_uring", "io_uring_complete");
        let p = plan(&f).unwrap();
        assert_eq!(
            p.degraded,
            vec![
                "io_uring sockets are not counted: tracepoint io_uring:io_uring_complete is missing on this kernel"
            ]
        );
        assert!(!attached(&p).iter().any(|a| a.starts_with("io_uring")));
    }

    #[test]
    fn a_missing_submission_costs_only_call_sites() {
        let mut f = Fake::full();
        f.remove("io_uring", "io_uring_submit_req");
        let p = plan(&f).unwrap();
        assert_eq!(
            p.degraded,
            vec![
                "tracepoint io_uring:io_uring_submit_req is missing on this kernel: call sites of io_uring sockets are not tracked"
            ]
        );
        assert!(attached(&p).contains(&"io_uring_complete->io_uring_complete".to_string()));
    }

    #[test]
    fn another_layout_is_not_attached() {
        // Linux 5.10's io_uring_complete has no `req`: res sits at 24.
        let mut f = Fake::full();
        f.put(
            "io_uring",
            "io_uring_complete",
            Some(format_of(&[
                ("ctx", 8),
                ("user_data", 16),
                ("res", 24),
                ("cflags", 28),
            ])),
        );
        let p = plan(&f).unwrap();
        assert_eq!(
            p.degraded,
            vec![
                "io_uring sockets are not counted: tracepoint io_uring:io_uring_complete has another layout on this kernel (no field req)"
            ]
        );
        let mut f = Fake::full();
        f.put(
            "task",
            "task_newtask",
            Some(format_of(&[("pid", 8), ("clone_flags", 40)])),
        );
        let p = plan(&f).unwrap();
        assert_eq!(
            p.degraded,
            vec![
                "tracepoint task:task_newtask has another layout on this kernel (clone_flags at offset 40, not 32): children forked after start are not tracked"
            ]
        );
    }

    #[test]
    fn a_required_tracepoint_refuses() {
        let mut f = Fake::full();
        f.remove("syscalls", "sys_exit_socket");
        let e = plan(&f).unwrap_err();
        assert!(
            e.to_string()
                .contains("lacks the required tracepoint syscalls:sys_exit_socket"),
            "{e}"
        );
        let mut f = Fake::full();
        f.put(
            "syscalls",
            "sys_enter_close",
            Some(format_of(&[("fd", 24)])),
        );
        let e = plan(&f).unwrap_err().to_string();
        assert!(
            e.contains("syscalls:sys_enter_close") && e.contains("fd at offset 24, not 16"),
            "{e}"
        );
    }

    #[test]
    fn layouts() {
        let f = format_of(&[("ret", 16)]);
        assert_eq!(layout_mismatch(&f, tp::sys_exit::FIELDS), None);
        assert_eq!(
            layout_mismatch(&f, &[("ret", 8)]),
            Some("ret at offset 16, not 8".into())
        );
        assert_eq!(
            layout_mismatch("", &[("ret", 16)]),
            Some("no field ret".into())
        );
        // Every program that reads its record names the fields it reads.
        for p in PROBES {
            if p.category == "syscalls" || p.name == "task_newtask" || p.category == "io_uring" {
                assert!(!fields(p).is_empty(), "{}", p.name);
            }
        }
    }
}
