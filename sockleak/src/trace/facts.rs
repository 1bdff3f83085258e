//! Where reports meet the host: everything a report needs from /proc, the socket tables and
//! the kernel's maps is read here, once per report, into [`Facts`]; the builder itself reads
//! nothing. After the build, what a diagnosis asked for (`diagnose::wants`: the environment,
//! how a process was started) is read here too, and only then.

use hashbrown::HashMap;
use log::warn;
use sockleak_common::socket::SAMPLED_OUT;

use super::{Session, present::Namespaces};
use crate::{
    diagnose::{Evidence, connects_to_itself::PROXY_VARS, wants},
    host::{launcher, netns, procfs, sockdiag::NetView},
    model::{ProcessReport, names},
    report::{
        facts::{Facts, ProcFacts},
        failures::ENFILE,
    },
    tracker::Process,
};

impl Session {
    /// The facts for a report on `procs` (the reportable processes, live and exited).
    pub(super) fn gather_facts(&self, procs: &[&Process]) -> Facts {
        let Namespaces {
            own,
            of_pid,
            with_pid,
        } = self.namespaces();
        let mut facts = Facts {
            netns: of_pid,
            default_netns: own,
            stack_fallbacks: self.stack_fallbacks(),
            ..Facts::default()
        };
        for (ns, pid) in with_pid {
            match NetView::of(pid) {
                Ok(v) => {
                    facts.views.insert(ns, v);
                }
                Err(e) => warn!("TCP states unavailable for pid {pid}'s network namespace: {e:#}"),
            }
        }
        for (k, v) in self.tracer.dests() {
            if let Some(a) = names::dest_addr(&k) {
                facts
                    .connects
                    .entry(k.tgid)
                    .or_default()
                    .push((a, v.connects));
            }
        }
        for p in procs {
            if p.exited_ns.is_none() {
                let pf = self.proc_facts(p, &facts);
                facts.procs.insert(p.tgid, pf);
            }
            for s in p.sockets.values() {
                let site = self.stacks.site(&s.record);
                if site.stack_id == SAMPLED_OUT
                    && let Some(id) = self.tracer.last_stack(s.stack_pid, site.caller)
                {
                    facts.sampled.insert((s.stack_pid, site.caller), id);
                }
                let sender = s.record.peer_pid;
                if s.record.origin == sockleak_common::socket::Origin::Received as u8
                    && sender != 0
                    && !facts.comms.contains_key(&sender)
                    && let Some(c) = procfs::comm(sender)
                {
                    facts.comms.insert(sender, c);
                }
            }
        }
        facts.k8s = self.kube_names(procs.iter().copied());
        if procs
            .iter()
            .any(|p| p.failures.keys().any(|k| k.errno == ENFILE))
        {
            facts.host_files = netns::host_file_nr();
        }
        facts
    }

    /// /proc's view of a live process's sockets: inodes, and the kind of those that neither
    /// the kernel record nor the socket tables name.
    fn proc_facts(&self, p: &Process, facts: &Facts) -> ProcFacts {
        let inodes: HashMap<u32, u64> = procfs::socket_fds(p.tgid)
            .map(|v| v.into_iter().collect())
            .unwrap_or_default();
        let view = facts.view(p.tgid);
        let kinds = p
            .sockets
            .iter()
            .filter(|(_, s)| names::kind_of(&s.record) == "unknown")
            .filter(|(fd, s)| {
                let inode = inodes.get(*fd).copied().or(s.inode);
                !inode.is_some_and(|i| view.is_some_and(|v| v.table.by_inode.contains_key(&i)))
            })
            .filter_map(|(fd, _)| Some((*fd, procfs::socket_kind(p.tgid, *fd)?)))
            .collect();
        ProcFacts { inodes, kinds }
    }

    /// Adds to `ev` what the diagnoses of `r` can use and only /proc tells.
    pub(super) fn read_wanted(&self, p: &Process, r: &ProcessReport, ev: &mut Evidence) {
        let w = wants(r, ev);
        if w.environment {
            // Masked as it is read (host::redact): raw values go no further.
            ev.proxy_env = procfs::environ_vars(p.tgid, PROXY_VARS);
        }
        if w.launcher {
            ev.launcher = Some(launcher::of(p.tgid, p.meta.cgroup.as_deref()));
        }
    }
}
