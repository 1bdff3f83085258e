//! Kubernetes in a session: the names of the containers traced processes run in, from the
//! node's CRI runtime, and the filters `--namespace`, `--pod`, `--container-name` and
//! `--selector`.
//!
//! A filter becomes one FILTERED cgroup target, the root under which the runtime puts its
//! pods (`/kubepods`, `/kubepods.slice`, ...), and a deny list of the cgroups of containers
//! that do not match. The kernel then starts tracing a process below the root on its first
//! socket unless its cgroup is denied, so a pod started after sockleak is traced from its
//! first socket; when the session meets such a process it looks its container up (listing
//! again when the id is new) and drops it, denying its cgroup, when it does not match.
//!
//! The runtime is listed every `--cri-resync` (10 s) and as soon as an unknown container id
//! shows up, on a task of its own (a hung runtime never holds the event loop). A runtime that
//! is absent or stops answering never stops the trace: names stay empty (for containers it
//! has not listed yet) and it is said once.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::Duration,
};

use log::{debug, info, warn};
use sockleak_common::target::{CgroupTarget, cgroup_flag};
use tokio::{sync::mpsc, time::Instant};

use super::Session;
use crate::{
    config::KubeOptions,
    error::UserError,
    host::{
        cgroup::{self, Cgroup},
        cri::{
            client::{CriError, Runtime},
            pods::{self, Filter, Index, Listing, Names},
        },
        procfs,
    },
    model::K8s,
};

/// At most one listing per this, however many unknown ids show up.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Processes per container id, and the container's own cgroup path, from one /proc scan.
type Scan = HashMap<String, (String, Vec<u32>)>;

fn scan() -> Scan {
    let mut out: Scan = HashMap::new();
    for pid in procfs::all_pids() {
        let Some(path) = cgroup::cgroup_of(pid) else {
            continue;
        };
        if let Some((id, dir)) = cgroup::container_cgroup(&path) {
            out.entry(id)
                .or_insert_with(|| (dir, Vec::new()))
                .1
                .push(pid);
        }
    }
    out
}

fn resolve(path: &str) -> Option<Cgroup> {
    cgroup::resolve_path(Path::new(path.trim_start_matches('/'))).ok()
}

/// What a listing of the runtime came to.
pub enum Answer {
    Listed(PathBuf, Listing),
    Failed(CriError),
    /// No runtime was found (said at start).
    Absent,
}

/// The runtime's client, on a task of its own: a runtime that hangs holds its own calls (up
/// to their deadline), never the session's event loop.
struct Lister {
    /// `--cri-socket`.
    socket: Option<PathBuf>,
    runtime: Option<Runtime>,
}

impl Lister {
    async fn answer(&mut self) -> Answer {
        if self.runtime.is_none() {
            match Runtime::find(self.socket.as_deref()).await {
                Ok(rt) => self.runtime = Some(rt),
                Err(_) => return Answer::Absent,
            }
        }
        let Some(rt) = self.runtime.as_mut() else {
            return Answer::Absent;
        };
        match rt.list().await {
            Ok(l) => Answer::Listed(rt.path.clone(), l),
            Err(e) => Answer::Failed(e),
        }
    }
}

/// The next answer of the lister task (never, when there is none).
pub async fn next_answer(rx: &mut Option<mpsc::Receiver<Answer>>) -> Option<Answer> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

pub struct Kube {
    /// Until `spawn` moves it onto its task.
    lister: Option<Lister>,
    /// Asks the lister task for a listing.
    requests: Option<mpsc::Sender<()>>,
    /// A listing was asked for and has not come back.
    in_flight: bool,
    index: Index,
    filter: Option<Filter>,
    /// The FILTERED cgroup targets (the runtime's pods roots).
    pub roots: Vec<Cgroup>,
    /// Cgroup ids denied, with their directories (removed when the container is gone).
    denied: HashMap<u64, PathBuf>,
    /// Container ids seen in processes and not listed by the runtime (listed again for them
    /// only once).
    unknown: HashSet<String>,
    want_list: bool,
    last_list: Option<Instant>,
    /// The runtime stopped answering (said once; said again when it is back).
    down: bool,
    /// Processes below a root whose container the runtime has not listed yet (kept across
    /// an outage of the runtime, decided when it answers again).
    undecided: Vec<u32>,
    /// Processes looked at by `kube_admit` (those still traced).
    admitted: HashSet<u32>,
    /// Listed at least this often (`--cri-resync`; 10 s: listing costs ~1-3 ms).
    resync: Duration,
    /// Processes of the matching containers at start.
    pub initial: Vec<u32>,
    /// Matching containers at start, for the "attached" line.
    pub matched: usize,
    /// The runtime that answered at start ("containerd 1.6.20~ds1 (CRI v1) at PATH").
    pub runtime: Option<String>,
}

impl Kube {
    /// Finds the runtime and, with a filter, what it selects now. Errors only for a filter
    /// that cannot work (no runtime, nothing matches) or a `--cri-socket` that is no CRI
    /// runtime's.
    pub async fn start(opts: &KubeOptions) -> Result<Kube, UserError> {
        let mut lister = Lister {
            socket: opts.socket.clone(),
            runtime: None,
        };
        let mut k = Kube {
            lister: None,
            requests: None,
            in_flight: false,
            index: Index::default(),
            filter: opts.filter.clone(),
            roots: Vec::new(),
            denied: HashMap::new(),
            unknown: HashSet::new(),
            want_list: false,
            last_list: None,
            down: false,
            undecided: Vec::new(),
            admitted: HashSet::new(),
            initial: Vec::new(),
            matched: 0,
            runtime: None,
            resync: opts.resync,
        };
        let listing = match Runtime::find(opts.socket.as_deref()).await {
            Ok(mut rt) => {
                let l = rt.list().await;
                // Said in the "attached" line: an error before it stays one line.
                k.runtime = Some(format!("{} at {}", rt.describe, rt.path.display()));
                lister.runtime = Some(rt);
                l
            }
            Err(e) => Err(e),
        };
        k.lister = Some(lister);
        k.last_list = Some(Instant::now());
        let listing = match (listing, &k.filter) {
            (Ok(l), _) => l,
            (Err(e), Some(f)) => {
                return Err(UserError::Cri {
                    filter: f.describe(),
                    reason: e.to_string(),
                });
            }
            (Err(e), None) if opts.socket.is_some() && !e.is_down() => {
                return Err(UserError::CriSocket(e.to_string()));
            }
            (Err(CriError::NoneFound), None) => {
                debug!("no CRI runtime socket on this host: no Kubernetes names");
                k.down = true;
                return Ok(k);
            }
            (Err(e), None) if e.is_down() => {
                warn!("{e}; Kubernetes names stay empty until it answers");
                k.down = true;
                return Ok(k);
            }
            // A probed socket that is no CRI runtime's (Docker's containerd has its CRI plugin
            // off): not a Kubernetes node, nothing to warn about.
            (Err(e), None) => {
                debug!("no Kubernetes names: {e}");
                k.down = true;
                return Ok(k);
            }
        };
        k.index.update(&listing);
        let Some(f) = k.filter.clone() else {
            return Ok(k);
        };
        if let Some(why) = f.no_match(&listing) {
            return Err(UserError::K8sNoMatch(why));
        }
        let procs = scan();
        let mut roots: Vec<String> = Vec::new();
        for (id, (dir, _)) in &procs {
            if k.index.get(id).is_none() {
                continue;
            }
            if let Some(r) = pods::pods_root(dir)
                && !roots.contains(&r)
            {
                roots.push(r);
            }
        }
        for r in &roots {
            match resolve(r) {
                Some(c) => k.roots.push(c),
                None => {
                    warn!("cannot follow the pods cgroup {r}: pods started there are not traced")
                }
            }
        }
        if k.roots.is_empty() {
            return Err(UserError::K8sNoMatch(format!(
                "{}: no process of the CRI runtime's containers is in a cgroup v2 directory sockleak can follow (is cgroup v2 mounted?)",
                f.describe()
            )));
        }
        for (id, (dir, pids)) in &procs {
            let Some(n) = k.index.get(id) else { continue };
            if f.matches(n) {
                k.matched += 1;
                k.initial.extend(pids.iter().copied());
            } else if let Some(c) = resolve(dir) {
                k.denied.insert(c.id, c.dir);
            }
        }
        Ok(k)
    }

    /// The kernel's cgroup targets for the filter.
    pub fn targets(&self) -> Vec<CgroupTarget> {
        self.roots
            .iter()
            .map(|c| CgroupTarget {
                id: c.id,
                level: c.level,
                flags: cgroup_flag::FILTERED,
            })
            .collect()
    }

    pub fn denied(&self) -> impl Iterator<Item = u64> + '_ {
        self.denied.keys().copied()
    }

    pub fn filtering(&self) -> bool {
        self.filter.is_some()
    }

    /// The names of a process's container (by its cgroup path); notes an unknown id so the
    /// runtime is listed again.
    fn lookup(&mut self, cgroup_path: &str) -> Option<(String, Option<std::sync::Arc<Names>>)> {
        let (id, _) = cgroup::container_cgroup(cgroup_path)?;
        let n = self.index.get(&id).cloned();
        if n.is_none() && !self.down && self.unknown.insert(id.clone()) {
            self.want_list = true;
        }
        Some((id, n))
    }

    /// Whether a process in `cgroup_path` lies below a FILTERED root.
    fn below_root(&self, cgroup_path: &str) -> bool {
        self.roots.iter().any(|r| {
            cgroup_path
                .strip_prefix(r.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// What the report says of a container id.
    pub fn k8s(&self, id: &str) -> Option<K8s> {
        let n = self.index.get(id)?;
        Some(K8s {
            namespace: n.namespace.clone(),
            pod: n.pod.clone(),
            pod_uid: n.pod_uid.clone(),
            container: if n.is_sandbox() {
                "POD".into()
            } else {
                n.container.clone()
            },
        })
    }

    fn due(&self) -> bool {
        let since = self.last_list.map_or(Duration::MAX, |t| t.elapsed());
        since >= self.resync || (self.want_list && since >= MIN_GAP)
    }

    /// Starts the lister task (inside the session's runtime); its answers come on the
    /// returned receiver.
    pub fn spawn(&mut self) -> Option<mpsc::Receiver<Answer>> {
        let mut lister = self.lister.take()?;
        let (req_tx, mut req_rx) = mpsc::channel::<()>(1);
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            while req_rx.recv().await.is_some() {
                if tx.send(lister.answer().await).await.is_err() {
                    break;
                }
            }
        });
        self.requests = Some(req_tx);
        Some(rx)
    }

    /// Asks for a listing when one is due and none is under way.
    fn ask(&mut self) {
        if self.in_flight || !self.due() {
            return;
        }
        if let Some(r) = &self.requests
            && r.try_send(()).is_ok()
        {
            self.in_flight = true;
            self.want_list = false;
            self.last_list = Some(Instant::now());
        }
    }

    /// Takes a listing's answer; says once when the runtime stops answering and when it is
    /// back. True when there is a new listing.
    fn listed(&mut self, a: Answer) -> bool {
        self.in_flight = false;
        match a {
            Answer::Listed(path, l) => {
                if self.down {
                    info!(
                        "CRI runtime {} answers again: Kubernetes names are back",
                        path.display()
                    );
                    self.down = false;
                }
                self.index.update(&l);
                self.unknown.retain(|id| self.index.get(id).is_none());
                true
            }
            Answer::Failed(e) => {
                if !self.down {
                    warn!(
                        "the CRI runtime stopped answering ({e}); tracing goes on, but containers started from now on get no Kubernetes names{}",
                        if self.filter.is_some() {
                            " and are traced whether or not they match the filter"
                        } else {
                            ""
                        }
                    );
                    self.down = true;
                }
                false
            }
            Answer::Absent => false,
        }
    }
}

impl Session {
    /// Looks at every process new since the last call (see `kube_admit`).
    pub(super) fn kube_admit_new(&mut self) {
        if self.kube.filter.is_some() {
            // Processes that made sockets and exited between two syncs, never placed in a
            // container (a runtime's short-lived `runc init` stages, whose sync socketpairs
            // the kernel sees): a filter cannot be said to match them.
            self.tracker.exited.retain(|p| p.meta.cgroup.is_some());
        }
        let procs = &self.tracker.procs;
        self.kube.admitted.retain(|p| procs.contains_key(p));
        let new: Vec<u32> = procs
            .keys()
            .copied()
            .filter(|p| !self.kube.admitted.contains(p))
            .collect();
        for pid in new {
            if !self.kube_admit(pid) {
                self.kube.admitted.insert(pid);
            }
        }
    }

    /// Decides a new process: in a container no filter matches, it is dropped (and its
    /// cgroup denied). Notes container ids the runtime has not listed. True when dropped.
    fn kube_admit(&mut self, pid: u32) -> bool {
        let known = self
            .tracker
            .procs
            .get(&pid)
            .and_then(|p| p.meta.cgroup.clone());
        let Some(path) = known.or_else(|| cgroup::cgroup_of(pid)) else {
            return false;
        };
        let Some((_, names)) = self.kube.lookup(&path) else {
            return false;
        };
        let Some(f) = self.kube.filter.as_ref() else {
            return false;
        };
        if self.cfg.pids.contains(&pid) || !self.kube.below_root(&path) {
            return false;
        }
        match names {
            Some(n) if f.matches(&n) => false,
            Some(_) => {
                self.kube_drop(pid, &path);
                true
            }
            // Decided after the next listing; traced meanwhile (also while the runtime is
            // down: it cannot tell, and a leak is not to be missed).
            None => {
                self.kube.undecided.push(pid);
                false
            }
        }
    }

    /// Stops tracing a process of a container no filter matches.
    fn kube_drop(&mut self, pid: u32, cgroup_path: &str) {
        if let Some((_, dir)) = cgroup::container_cgroup(cgroup_path)
            && let Some(c) = resolve(&dir)
            && self.kube.denied.insert(c.id, c.dir).is_none()
            && !self.tracer.deny_cgroup(c.id)
        {
            warn!("the kernel's deny list is full: cgroup {dir} stays traced");
        }
        self.tracer.drop_process(pid);
        self.tracker.procs.remove(&pid);
        self.refresh.forget(pid);
        self.seeded.retain(|(p, _)| *p != pid);
    }

    /// Asks the runtime for a listing when one is due.
    pub(super) fn kube_tick(&mut self) {
        self.kube.ask();
    }

    /// Takes a listing: decides the processes that waited for it and denies the cgroups of
    /// new containers no filter matches.
    pub(super) fn kube_listed(&mut self, a: Answer) {
        if !self.kube.listed(a) {
            return; // the undecided stay traced until the runtime answers
        }
        let Some(f) = self.kube.filter.clone() else {
            return;
        };
        // Containers gone since: their entries go, or a long trace on a busy node would fill
        // the kernel's deny list.
        let gone: Vec<u64> = self
            .kube
            .denied
            .iter()
            .filter(|(_, dir)| !dir.exists())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.kube.denied.remove(&id);
            self.tracer.allow_cgroup(id);
        }
        for pid in std::mem::take(&mut self.kube.undecided) {
            let Some(path) = self
                .tracker
                .procs
                .get(&pid)
                .and_then(|p| p.meta.cgroup.clone())
            else {
                continue;
            };
            let keep = cgroup::container_cgroup(&path)
                .and_then(|(id, _)| self.kube.index.get(&id).cloned())
                .is_some_and(|n| f.matches(&n));
            // Still unknown after a listing: not a container of this runtime's pods.
            if !keep {
                self.kube_drop(pid, &path);
            }
        }
        for (id, (dir, _)) in scan() {
            if !self.kube.below_root(&dir) {
                continue;
            }
            // Unknown ids are left to `kube_admit`: a container started since the listing.
            let denied = self.kube.index.get(&id).is_some_and(|n| !f.matches(n));
            if denied
                && let Some(c) = resolve(&dir)
                && !self.kube.denied.contains_key(&c.id)
            {
                self.tracer.deny_cgroup(c.id);
                self.kube.denied.insert(c.id, c.dir);
            }
        }
    }

    /// Kubernetes names of the containers of `procs`, for a report.
    pub(super) fn kube_names<'a>(
        &self,
        procs: impl Iterator<Item = &'a crate::tracker::Process>,
    ) -> hashbrown::HashMap<String, K8s> {
        let mut out = hashbrown::HashMap::new();
        for p in procs {
            if let Some(id) = p.meta.cgroup.as_deref().and_then(cgroup::container_id)
                && !out.contains_key(&id)
                && let Some(k) = self.kube.k8s(&id)
            {
                out.insert(id, k);
            }
        }
        out
    }
}
