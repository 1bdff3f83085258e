//! What a CRI listing says, as plain data: pods (sandboxes) and containers joined into the
//! Kubernetes names of every container id, the filters `--namespace`, `--pod`,
//! `--container-name` and `--selector`, what to say when they match nothing, and where a
//! runtime puts its pods' cgroups. No I/O: unit tests drive it with recorded listings.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use crate::host::cgroup;

/// A pod sandbox as ListPodSandbox gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// Sandbox id: also the container id of its pause process.
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The pod's labels (the kubelet copies them to the sandbox, with `io.kubernetes.pod.*`).
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
}

/// A pod's labels, shared by the names of its containers.
type Labels = Arc<BTreeMap<String, String>>;

/// A container as ListContainers gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    /// Its pod's sandbox id.
    pub pod_id: String,
    pub name: String,
    pub running: bool,
}

/// One ListPodSandbox + ListContainers answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub pods: Vec<Pod>,
    pub containers: Vec<Container>,
}

/// The Kubernetes names of one container id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// The container's name; empty for a pod's sandbox (pause) container.
    pub container: String,
    /// The pod's labels (for `--selector`).
    pub labels: Arc<BTreeMap<String, String>>,
}

impl Names {
    pub fn is_sandbox(&self) -> bool {
        self.container.is_empty()
    }
}

/// Containers removed from the runtime whose names are kept, so the processes they ran (now
/// exited) keep theirs in the report.
const RETIRED_KEPT: usize = 4096;

/// Container id (and sandbox id) -> names, from the latest listing, plus recently removed ones.
#[derive(Debug, Default)]
pub struct Index {
    by_id: HashMap<String, Arc<Names>>,
    retired: VecDeque<String>,
    /// Listings taken so far.
    pub listings: u64,
}

impl Index {
    pub fn get(&self, id: &str) -> Option<&Arc<Names>> {
        self.by_id.get(id)
    }

    /// Takes a new listing. Ids it no longer lists are kept (up to RETIRED_KEPT, oldest go
    /// first): a container removed since may have run processes still in the report.
    pub fn update(&mut self, l: &Listing) {
        let fresh = join(l);
        let mut old = std::mem::replace(&mut self.by_id, fresh);
        let already: std::collections::HashSet<&String> = self.retired.iter().collect();
        let gone: Vec<String> = old
            .keys()
            .filter(|id| !self.by_id.contains_key(*id) && !already.contains(id))
            .cloned()
            .collect();
        self.retired.extend(gone);
        self.retired.retain(|id| !self.by_id.contains_key(id));
        while self.retired.len() > RETIRED_KEPT {
            self.retired.pop_front();
        }
        for id in &self.retired {
            if let Some(n) = old.remove(id) {
                self.by_id.insert(id.clone(), n);
            }
        }
        self.listings += 1;
    }
}

/// Every container id and sandbox id of a listing with its names. A container whose sandbox
/// is not listed (removed between the two calls) is left out.
pub fn join(l: &Listing) -> HashMap<String, Arc<Names>> {
    let mut out = HashMap::with_capacity(l.pods.len() + l.containers.len());
    let mut pods: HashMap<&str, (&Pod, Labels)> = HashMap::new();
    for p in &l.pods {
        let labels = Arc::new(p.labels.clone());
        out.insert(p.id.clone(), Arc::new(names(p, "", &labels)));
        pods.insert(p.id.as_str(), (p, labels));
    }
    for c in &l.containers {
        if let Some((p, labels)) = pods.get(c.pod_id.as_str()) {
            out.insert(c.id.clone(), Arc::new(names(p, &c.name, labels)));
        }
    }
    out
}

fn names(p: &Pod, container: &str, labels: &Arc<BTreeMap<String, String>>) -> Names {
    Names {
        namespace: p.namespace.clone(),
        pod: p.name.clone(),
        pod_uid: p.uid.clone(),
        container: container.to_string(),
        labels: labels.clone(),
    }
}

/// One `--selector` requirement on a pod's labels, as kubectl writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `k=v` or `k==v`.
    Equals(String, String),
    /// `k!=v` (also true when the label is absent, as in Kubernetes).
    NotEquals(String, String),
    /// `k`: the label is set.
    Exists(String),
    /// `!k`: the label is not set.
    Absent(String),
}

impl Requirement {
    pub fn key(&self) -> &str {
        match self {
            Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::Exists(k)
            | Requirement::Absent(k) => k,
        }
    }

    fn holds(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Absent(k) => !labels.contains_key(k),
        }
    }
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::Absent(k) => write!(f, "!{k}"),
        }
    }
}

/// Parses `k=v,k2!=v2,k3,!k4` (kubectl's equality-based selectors). The error says what is
/// wrong with which part.
pub fn parse_selector(s: &str) -> Result<Vec<Requirement>, String> {
    // Before splitting on commas: `env in (a,b)` holds one.
    if s.contains(" in ") || s.contains(" notin ") || s.contains('(') {
        return Err(
            "set-based requirements (in, notin) are not supported; give k=v, k!=v, k or !k".into(),
        );
    }
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err("an empty requirement (give k=v,k2=v2)".into());
        }
        let req = if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEquals(key(k, part)?, value(v, part)?)
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Requirement::Equals(key(k, part)?, value(v, part)?)
        } else if let Some(k) = part.strip_prefix('!') {
            Requirement::Absent(key(k, part)?)
        } else {
            Requirement::Exists(key(part, part)?)
        };
        out.push(req);
    }
    Ok(out)
}

/// A label key: `[prefix/]name`, the name 1-63 of [A-Za-z0-9._-] starting and ending
/// alphanumeric (the prefix a DNS subdomain).
fn key(k: &str, part: &str) -> Result<String, String> {
    let k = k.trim();
    let name = k.rsplit('/').next().unwrap_or(k);
    let ok_chars = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    let edges = |s: &str| {
        s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    let prefix_ok = match k.rsplit_once('/') {
        Some((p, _)) => !p.is_empty() && p.len() <= 253 && ok_chars(p) && edges(p),
        None => true,
    };
    if name.is_empty() || name.len() > 63 || !ok_chars(name) || !edges(name) || !prefix_ok {
        return Err(format!("`{part}`: `{k}` is not a label key"));
    }
    Ok(k.to_string())
}

/// A label value: empty, or up to 63 of [A-Za-z0-9._-] starting and ending alphanumeric.
fn value(v: &str, part: &str) -> Result<String, String> {
    let v = v.trim();
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && v.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric()));
    if !ok {
        return Err(format!("`{part}`: `{v}` is not a label value"));
    }
    Ok(v.to_string())
}

/// `--namespace`, `--pod`, `--container-name` and `--selector`: a container is traced when
/// all that are given hold. Sandbox (pause) containers never match: they make no sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub selector: Vec<Requirement>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none()
            && self.pod.is_none()
            && self.container.is_none()
            && self.selector.is_empty()
    }

    fn pod_matches(&self, namespace: &str, pod: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
            && self.pod.as_deref().is_none_or(|p| p == pod)
            && self.selector.iter().all(|r| r.holds(labels))
    }

    pub fn matches(&self, n: &Names) -> bool {
        !n.is_sandbox()
            && self.pod_matches(&n.namespace, &n.pod, &n.labels)
            && self.container.as_deref().is_none_or(|c| c == n.container)
    }

    /// The filter as the user wrote it, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = &self.namespace {
            parts.push(format!("--namespace {n}"));
        }
        if let Some(p) = &self.pod {
            parts.push(format!("--pod {p}"));
        }
        if let Some(c) = &self.container {
            parts.push(format!("--container-name {c}"));
        }
        if !self.selector.is_empty() {
            let s: Vec<String> = self.selector.iter().map(|r| r.to_string()).collect();
            parts.push(format!("--selector {}", s.join(",")));
        }
        parts.join(" ")
    }

    /// Why nothing on this node matches, as one line naming the input that excluded
    /// everything and what exists nearby; None when some container (in any state) matches or
    /// a matching pod has no container yet and no container name was asked for.
    pub fn no_match(&self, l: &Listing) -> Option<String> {
        if l.pods.is_empty() {
            return Some(format!(
                "{}: the CRI runtime lists no pods on this node",
                self.describe()
            ));
        }
        // Narrowed one input at a time, in the order the user thinks of them.
        let in_ns: Vec<&Pod> = l
            .pods
            .iter()
            .filter(|p| self.namespace.as_deref().is_none_or(|n| n == p.namespace))
            .collect();
        if let (Some(ns), true) = (&self.namespace, in_ns.is_empty()) {
            let all: BTreeSet<&str> = l.pods.iter().map(|p| p.namespace.as_str()).collect();
            return Some(format!(
                "--namespace {ns}: no pod of namespace {ns} runs on this node; namespaces with pods here: {}",
                nearby(ns, all.into_iter())
            ));
        }
        let scope = |ns: &Option<String>| match ns {
            Some(n) => format!("in namespace {n}"),
            None => "on this node".to_string(),
        };
        let named: Vec<&Pod> = in_ns
            .iter()
            .copied()
            .filter(|p| self.pod.as_deref().is_none_or(|n| n == p.name))
            .collect();
        if let (Some(pod), true) = (&self.pod, named.is_empty()) {
            let elsewhere: BTreeSet<&str> = l
                .pods
                .iter()
                .filter(|p| p.name == *pod)
                .map(|p| p.namespace.as_str())
                .collect();
            let also = if elsewhere.is_empty() {
                String::new()
            } else {
                format!(
                    " (a pod {pod} runs in namespace {})",
                    elsewhere.into_iter().collect::<Vec<_>>().join(", ")
                )
            };
            return Some(format!(
                "--pod {pod}: no pod {pod} {} on this node; pods there: {}{also}",
                scope(&self.namespace),
                nearby(pod, in_ns.iter().map(|p| p.name.as_str()))
            ));
        }
        let selected: Vec<&Pod> = named
            .iter()
            .copied()
            .filter(|p| self.selector.iter().all(|r| r.holds(&p.labels)))
            .collect();
        if !self.selector.is_empty() && selected.is_empty() {
            let sel: Vec<String> = self.selector.iter().map(|r| r.to_string()).collect();
            let keys: BTreeSet<&str> = self.selector.iter().map(|r| r.key()).collect();
            let seen: BTreeSet<String> = named
                .iter()
                .flat_map(|p| p.labels.iter())
                .filter(|(k, _)| keys.contains(k.as_str()))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let there = if seen.is_empty() {
                format!(
                    "none of their {} pod(s) has a label {}",
                    named.len(),
                    keys.into_iter().collect::<Vec<_>>().join(" or ")
                )
            } else {
                format!("their labels: {}", first(seen.iter().map(String::as_str)))
            };
            return Some(format!(
                "--selector {}: no pod {} on this node has these labels; {there}",
                sel.join(","),
                scope(&self.namespace)
            ));
        }
        let Some(want) = &self.container else {
            return None;
        };
        let ids: BTreeSet<&str> = selected.iter().map(|p| p.id.as_str()).collect();
        let names: BTreeSet<&str> = l
            .containers
            .iter()
            .filter(|c| ids.contains(c.pod_id.as_str()))
            .map(|c| c.name.as_str())
            .collect();
        if names.contains(want.as_str()) {
            return None;
        }
        let pods = match selected.as_slice() {
            [p] => format!("pod {}/{}", p.namespace, p.name),
            ps => format!("the {} matching pods", ps.len()),
        };
        Some(if names.is_empty() {
            format!("--container-name {want}: {pods} has no containers yet")
        } else {
            format!(
                "--container-name {want}: no container {want} in {pods}; containers there: {}",
                nearby(want, names.into_iter())
            )
        })
    }
}

/// Up to this many names in a message.
const NEARBY: usize = 8;

/// The candidates closest to `want` first (those it begins, then by edit distance), at most NEARBY, and how many more there are.
pub fn nearby<'a>(want: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let mut c: Vec<&str> = candidates.collect::<BTreeSet<_>>().into_iter().collect();
    c.sort_by_key(|s| (!s.starts_with(want), edit_distance(want, s)));
    first(c.into_iter())
}

fn first<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = items.collect();
    let mut s = all
        .iter()
        .take(NEARBY)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > NEARBY {
        s.push_str(&format!(" and {} more", all.len() - NEARBY));
    }
    if s.is_empty() {
        s.push_str("none");
    }
    s
}

/// Levenshtein distance (names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Where a runtime puts the cgroups of its pods, from one container's cgroup v2 path: the
/// highest directory named like the kubelet's `kubepods` (cgroupfs `/kubepods`, systemd
/// `/kubepods.slice`, kind's `/kubelet.slice/kubelet-kubepods.slice`), else the container's
/// parent (containerd without a cgroup parent puts containers in `/k8s.io`). New pods appear
/// below it.
pub fn pods_root(path: &str) -> Option<String> {
    let (_, dir) = cgroup::container_cgroup(path)?;
    let comps: Vec<&str> = dir.split('/').collect();
    let last = comps.len().checked_sub(1)?;
    let upto = comps[..last]
        .iter()
        .position(|c| c.contains("kubepods"))
        .unwrap_or(last.checked_sub(1)?);
    if upto == 0 {
        return None; // the container sits at the root: no directory holds only pods
    }
    Some(comps[..=upto].join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ListPodSandbox + ListContainers of containerd 1.6.20 with the test pods (recorded from
    /// a run of tests/kube.rs's kubelet, plus a pod of another namespace and a removed one).
    fn recorded() -> Listing {
        serde_json::from_str(include_str!("testdata/listing.json")).unwrap()
    }

    const LEAKY_APP: &str = "277a48ab1a483e12fb79957c49b707eb942285ac4e778b3e51ca178bd7e9ff4e";
    const LEAKY_SANDBOX: &str = "12c2c25d13fe9acc2b4b0d5ec0f8a9c9e3f2d1b0a9f8e7d6c5b4a3f2e1d074ff";
    const QUIET_APP: &str = "34909c2ccd1b5bd0f0f2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4";

    #[test]
    fn containers_and_sandboxes_get_their_pods_names() {
        let m = join(&recorded());
        let a = &m[LEAKY_APP];
        assert_eq!(
            (a.namespace.as_str(), a.pod.as_str(), a.container.as_str()),
            ("team-a", "leaky", "app")
        );
        assert_eq!(a.pod_uid, "0000aaaa-0000-4000-8000-000000000001");
        assert_eq!(a.labels.get("app").map(String::as_str), Some("leaky"));
        assert!(m[LEAKY_SANDBOX].is_sandbox());
        assert_eq!(m[QUIET_APP].namespace, "team-b");
        // Both containers are named app: the pods tell them apart.
        assert_eq!(m[QUIET_APP].container, "app");
        assert_eq!(m[QUIET_APP].pod, "quiet");
    }

    #[test]
    fn a_container_whose_pod_is_gone_is_left_out() {
        let mut l = recorded();
        l.pods.retain(|p| p.namespace != "team-b");
        let m = join(&l);
        assert!(!m.contains_key(QUIET_APP));
        assert!(m.contains_key(LEAKY_APP));
    }

    #[test]
    fn removed_containers_keep_their_names_for_a_while() {
        let mut idx = Index::default();
        idx.update(&recorded());
        let mut later = recorded();
        later.containers.retain(|c| c.id != QUIET_APP);
        idx.update(&later);
        assert_eq!(idx.get(QUIET_APP).unwrap().pod, "quiet", "retired, kept");
        assert_eq!(idx.listings, 2);
        // A listing that has it again takes it back from the retired list.
        idx.update(&recorded());
        assert_eq!(idx.retired.len(), 0);
        // Bounded.
        let mut many = Listing {
            pods: recorded().pods,
            containers: Vec::new(),
        };
        for i in 0..(RETIRED_KEPT + 10) {
            many.containers.push(Container {
                id: format!("{i:064x}"),
                pod_id: LEAKY_SANDBOX.into(),
                name: "c".into(),
                running: false,
            });
        }
        idx.update(&many);
        idx.update(&recorded());
        assert_eq!(idx.retired.len(), RETIRED_KEPT);
    }

    fn filter(ns: Option<&str>, pod: Option<&str>, c: Option<&str>, sel: &str) -> Filter {
        Filter {
            namespace: ns.map(str::to_string),
            pod: pod.map(str::to_string),
            container: c.map(str::to_string),
            selector: if sel.is_empty() {
                Vec::new()
            } else {
                parse_selector(sel).unwrap()
            },
        }
    }

    fn matching(f: &Filter) -> Vec<String> {
        let mut v: Vec<String> = join(&recorded())
            .into_iter()
            .filter(|(_, n)| f.matches(n))
            .map(|(_, n)| format!("{}/{}/{}", n.namespace, n.pod, n.container))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn filters_combine_and_never_match_a_sandbox() {
        assert_eq!(
            matching(&filter(Some("team-a"), Some("leaky"), None, "")),
            ["team-a/leaky/app"]
        );
        assert_eq!(
            matching(&filter(None, None, Some("app"), "")),
            ["team-a/leaky/app", "team-b/quiet/app", "team-b/quiet2/app"]
        );
        assert_eq!(
            matching(&filter(Some("team-b"), None, Some("app"), "")),
            ["team-b/quiet/app", "team-b/quiet2/app"]
        );
        assert_eq!(
            matching(&filter(None, None, None, "app=quiet")),
            ["team-b/quiet/app"]
        );
        assert_eq!(
            matching(&filter(None, None, None, "app!=quiet,tier")),
            ["team-b/quiet2/app"]
        );
        assert_eq!(
            matching(&filter(Some("team-b"), None, None, "!tier")),
            ["team-b/quiet/app"]
        );
        assert!(matching(&filter(Some("team-a"), Some("quiet"), None, "")).is_empty());
    }

    #[test]
    fn selectors_parse_like_kubectl() {
        assert_eq!(
            parse_selector("app=web, tier==db,env!=prod,release,!canary,k8s.io/x=").unwrap(),
            vec![
                Requirement::Equals("app".into(), "web".into()),
                Requirement::Equals("tier".into(), "db".into()),
                Requirement::NotEquals("env".into(), "prod".into()),
                Requirement::Exists("release".into()),
                Requirement::Absent("canary".into()),
                Requirement::Equals("k8s.io/x".into(), String::new()),
            ]
        );
        for (bad, says) in [
            ("app=web,", "empty requirement"),
            ("env in (a,b)", "set-based"),
            ("-app=x", "not a label key"),
            ("app=we b", "not a label value"),
            ("a/=x", "not a label key"),
        ] {
            let e = parse_selector(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn no_match_names_the_input_and_what_is_near() {
        let l = recorded();
        let e = filter(Some("team-x"), None, None, "").no_match(&l).unwrap();
        assert_eq!(
            e,
            "--namespace team-x: no pod of namespace team-x runs on this node; namespaces with pods here: team-a, team-b, kube-system"
        );
        let e = filter(Some("team-b"), Some("quiet-7d9f"), None, "")
            .no_match(&l)
            .unwrap();
        assert_eq!(
            e,
            "--pod quiet-7d9f: no pod quiet-7d9f in namespace team-b on this node; pods there: quiet, quiet2"
        );
        let e = filter(Some("team-b"), Some("leaky"), None, "")
            .no_match(&l)
            .unwrap();
        assert!(
            e.ends_with("pods there: quiet, quiet2 (a pod leaky runs in namespace team-a)"),
            "{e}"
        );
        let e = filter(None, None, Some("api"), "").no_match(&l).unwrap();
        assert_eq!(
            e,
            "--container-name api: no container api in the 5 matching pods; containers there: app, job, coredns"
        );
        let e = filter(Some("team-a"), Some("leaky"), Some("ap"), "")
            .no_match(&l)
            .unwrap();
        assert_eq!(
            e,
            "--container-name ap: no container ap in pod team-a/leaky; containers there: app"
        );
        let e = filter(Some("team-b"), None, None, "app=leaky")
            .no_match(&l)
            .unwrap();
        assert_eq!(
            e,
            "--selector app=leaky: no pod in namespace team-b on this node has these labels; their labels: app=quiet, app=quiet2"
        );
        let e = filter(None, None, None, "team=x").no_match(&l).unwrap();
        assert!(
            e.ends_with("none of their 5 pod(s) has a label team"),
            "{e}"
        );
        assert_eq!(
            filter(None, None, None, "").no_match(&Listing::default()),
            Some(": the CRI runtime lists no pods on this node".into())
        );
        // Matches (a removed container counts: its pod may start a new one).
        assert_eq!(
            filter(Some("team-a"), Some("leaky"), Some("app"), "").no_match(&l),
            None
        );
        assert_eq!(filter(Some("team-b"), None, None, "").no_match(&l), None);
    }

    #[test]
    fn nearby_puts_shared_prefixes_first_and_bounds_the_list() {
        let names = [
            "checkout-7d9f8c6b5-x2k4z",
            "cart-1",
            "chekout",
            "payments-0",
            "a",
            "b",
            "c",
            "d",
            "e",
            "f",
        ];
        let s = nearby("checkout-7d9f", names.iter().copied());
        assert!(s.starts_with("checkout-7d9f8c6b5-x2k4z, chekout,"), "{s}");
        assert!(s.ends_with(" and 2 more"), "{s}");
        assert_eq!(nearby("x", std::iter::empty()), "none");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn pods_roots_of_the_usual_layouts() {
        let id = LEAKY_APP;
        for (path, root) in [
            (
                format!("/kubepods/besteffort/pod0000aaaa-0000-4000-8000-000000000001/{id}"),
                Some("/kubepods"),
            ),
            (format!("/kubepods/pod1/{id}"), Some("/kubepods")),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{id}.scope"
                ),
                Some("/kubepods.slice"),
            ),
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod1.slice/cri-containerd-{id}.scope"
                ),
                Some("/kubelet.slice/kubelet-kubepods.slice"),
            ),
            (format!("/k8s.io/{id}"), Some("/k8s.io")),
            (format!("/{id}"), None),
            ("/user.slice/session-1.scope".to_string(), None),
        ] {
            assert_eq!(pods_root(&path).as_deref(), root, "{path}");
        }
    }
}
