//! The CRI runtime's gRPC API over its unix socket: connect (with deadlines: tonic has none,
//! and a peer that accepts but never answers would hold a call forever), identify it with
//! `Version`, and list pods and containers. Errors are one line naming the socket and what
//! to do. The channel reconnects by itself when the runtime restarts.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{
    pods::{Container, Listing, Pod},
    v1::{self, runtime_service_client::RuntimeServiceClient},
};

/// Probed in this order without `--cri-socket`: containerd, k3s's containerd, CRI-O.
pub const DEFAULT_SOCKETS: &[&str] = &[
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Per call (also sent to the server as grpc-timeout).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a CRI socket could not be used. Each prints as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CriError {
    /// Nothing at that path, or nothing listening: the runtime is not running (or not here).
    #[error("{}: {reason}", path.display())]
    Down { path: PathBuf, reason: String },
    /// Something answers, but not a CRI v1 runtime.
    #[error("{}: {reason}", path.display())]
    NotCri { path: PathBuf, reason: String },
    /// No default socket exists.
    #[error("no CRI runtime socket on this host (looked for {})", DEFAULT_SOCKETS.join(", "))]
    NoneFound,
}

impl CriError {
    /// The runtime is absent or stopped (not a wrong socket).
    pub fn is_down(&self) -> bool {
        matches!(self, CriError::Down { .. } | CriError::NoneFound)
    }
}

fn endpoint() -> Endpoint {
    // The URI only becomes the :authority header; the connector ignores it.
    Endpoint::from_static("http://localhost")
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
}

type Connecting = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::io::Result<TokioIo<UnixStream>>> + Send>,
>;
type Connector = tower::util::ServiceFn<Box<dyn Fn(Uri) -> Connecting + Send>>;

fn connector(path: &Path) -> Connector {
    let p = path.to_path_buf();
    tower::service_fn(Box::new(move |_: Uri| -> Connecting {
        let p = p.clone();
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(p).await?)) })
    }))
}

/// The client the kubelet uses, on a channel over the unix socket at `path`. Connecting is
/// lazy: errors show on the first call (and the channel reconnects by itself). Must be called
/// inside a tokio runtime.
pub fn channel(path: &Path) -> RuntimeServiceClient<Channel> {
    RuntimeServiceClient::new(endpoint().connect_with_connector_lazy(connector(path)))
}

/// A CRI runtime that answered `Version`.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub path: PathBuf,
    /// "containerd 1.6.20~ds1 (CRI v1)".
    pub describe: String,
    client: RuntimeServiceClient<Channel>,
}

impl Runtime {
    /// Connects to `path` and checks that a CRI v1 runtime answers there.
    pub async fn open(path: &Path) -> Result<Runtime, CriError> {
        // Connected first: a peer that is not a CRI runtime then fails the first call at once
        // (a lazy channel would keep reconnecting to it until the call's deadline).
        let ch = endpoint()
            .connect_with_connector(connector(path))
            .await
            .map_err(|e| classify_connect(path, &e))?;
        let mut client = RuntimeServiceClient::new(ch);
        let v = client
            .version(v1::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(|s| classify(path, "Version", &s, true))?
            .into_inner();
        Ok(Runtime {
            path: path.to_path_buf(),
            describe: format!(
                "{} {} (CRI {})",
                v.runtime_name, v.runtime_version, v.runtime_api_version
            ),
            client,
        })
    }

    /// `--cri-socket PATH`, else the first default socket that exists. A default socket that
    /// exists but fails is the answer (its error says why): it is the runtime of this host.
    pub async fn find(explicit: Option<&Path>) -> Result<Runtime, CriError> {
        if let Some(p) = explicit {
            return Runtime::open(p).await;
        }
        match DEFAULT_SOCKETS.iter().map(Path::new).find(|p| p.exists()) {
            Some(p) => Runtime::open(p).await,
            None => Err(CriError::NoneFound),
        }
    }

    /// ListPodSandbox + ListContainers.
    pub async fn list(&mut self) -> Result<Listing, CriError> {
        let pods = self
            .client
            .list_pod_sandbox(v1::ListPodSandboxRequest { filter: None })
            .await
            .map_err(|s| classify(&self.path, "ListPodSandbox", &s, false))?
            .into_inner()
            .items;
        let containers = self
            .client
            .list_containers(v1::ListContainersRequest { filter: None })
            .await
            .map_err(|s| classify(&self.path, "ListContainers", &s, false))?
            .into_inner()
            .containers;
        Ok(listing(pods, containers))
    }
}

/// The plain-data view of the two answers.
pub fn listing(pods: Vec<v1::PodSandbox>, containers: Vec<v1::Container>) -> Listing {
    Listing {
        pods: pods
            .into_iter()
            .map(|p| {
                let m = p.metadata.unwrap_or_default();
                Pod {
                    id: p.id,
                    namespace: m.namespace,
                    name: m.name,
                    uid: m.uid,
                    labels: p.labels.into_iter().collect(),
                    ready: p.state == v1::PodSandboxState::SandboxReady as i32,
                }
            })
            .collect(),
        containers: containers
            .into_iter()
            .map(|c| Container {
                id: c.id,
                pod_id: c.pod_sandbox_id,
                name: c.metadata.map(|m| m.name).unwrap_or_default(),
                running: c.state == v1::ContainerState::ContainerRunning as i32,
            })
            .collect(),
    }
}

/// The innermost cause of an error chain (tonic's own Display says only "transport error").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The io error kind somewhere in an error's chain.
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = e.source();
    }
    None
}

/// One line for a socket that could not be connected to.
fn classify_connect(path: &Path, e: &tonic::transport::Error) -> CriError {
    use std::io::ErrorKind;
    let down = |reason: &str| CriError::Down {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    match io_kind(e) {
        Some(ErrorKind::NotFound) => down(NO_SOCKET),
        Some(ErrorKind::ConnectionRefused) => down(REFUSED),
        Some(ErrorKind::PermissionDenied) => CriError::NotCri {
            path: path.to_path_buf(),
            reason: PERMISSION.into(),
        },
        _ => CriError::NotCri {
            path: path.to_path_buf(),
            reason: format!("cannot connect ({})", root_cause(e)),
        },
    }
}

const NO_SOCKET: &str = "no such socket: the CRI runtime is not running, or its socket is elsewhere (give --cri-socket PATH)";
const REFUSED: &str = "connection refused: nothing listens there (the CRI runtime stopped?)";
const PERMISSION: &str = "permission denied: run sockleak as root";

/// One line for a failed call. `first`: the first call on this socket, where an answer that is
/// not gRPC means the socket is not a CRI runtime's; later, the runtime went away.
fn classify(path: &Path, call: &str, s: &tonic::Status, first: bool) -> CriError {
    use std::io::ErrorKind;
    use tonic::Code;
    let down = |reason: String| CriError::Down {
        path: path.to_path_buf(),
        reason,
    };
    let not_cri = |reason: String| CriError::NotCri {
        path: path.to_path_buf(),
        reason,
    };
    let io = std::error::Error::source(s).and_then(io_kind);
    let cause = std::error::Error::source(s)
        .map(root_cause)
        .unwrap_or_else(|| s.message().to_string());
    match (s.code(), io) {
        (_, Some(ErrorKind::NotFound)) => down(NO_SOCKET.into()),
        (_, Some(ErrorKind::ConnectionRefused)) => down(REFUSED.into()),
        (_, Some(ErrorKind::PermissionDenied)) => not_cri(PERMISSION.into()),
        (Code::Unimplemented, _) => not_cri(format!(
            "answers gRPC but not the CRI v1 RuntimeService ({}): a containerd with its cri plugin disabled (as Docker installs it), or a runtime older than Kubernetes 1.23",
            s.message()
        )),
        (Code::Cancelled | Code::DeadlineExceeded, _) => {
            let r = format!("no answer to {call} within {}s", CALL_TIMEOUT.as_secs());
            if first {
                not_cri(format!("{r}: is it a CRI runtime's socket?"))
            } else {
                down(r)
            }
        }
        // The first call on a socket that connected: whatever answered is no CRI runtime.
        (Code::Unavailable, _) if !first => down(format!("{call}: unavailable ({cause})")),
        _ if first => not_cri(format!("not a CRI gRPC server ({call} failed: {cause})")),
        _ => down(format!("{call} failed: {cause}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_keeps_names_labels_and_states() {
        let pods = vec![v1::PodSandbox {
            id: "sb".into(),
            metadata: Some(v1::PodSandboxMetadata {
                name: "leaky".into(),
                uid: "u1".into(),
                namespace: "team-a".into(),
                attempt: 0,
            }),
            state: v1::PodSandboxState::SandboxReady as i32,
            labels: [("app".to_string(), "leaky".to_string())].into(),
            ..Default::default()
        }];
        let ctrs = vec![v1::Container {
            id: "c1".into(),
            pod_sandbox_id: "sb".into(),
            metadata: Some(v1::ContainerMetadata {
                name: "app".into(),
                attempt: 1,
            }),
            state: v1::ContainerState::ContainerExited as i32,
            ..Default::default()
        }];
        let l = listing(pods, ctrs);
        assert_eq!(l.pods[0].namespace, "team-a");
        assert!(l.pods[0].ready);
        assert_eq!(l.pods[0].labels["app"], "leaky");
        assert_eq!(l.containers[0].pod_id, "sb");
        assert!(!l.containers[0].running);
    }

    #[test]
    fn errors_say_what_to_do() {
        let p = Path::new("/run/x.sock");
        let s = tonic::Status::unimplemented("unknown service runtime.v1.RuntimeService");
        let e = classify(p, "Version", &s, true);
        assert!(!e.is_down());
        assert!(e.to_string().starts_with("/run/x.sock: answers gRPC but not the CRI v1 RuntimeService (unknown service runtime.v1.RuntimeService)"), "{e}");
        let s = tonic::Status::internal("h2 protocol error: http2 error");
        assert!(
            classify(p, "Version", &s, true)
                .to_string()
                .contains("not a CRI gRPC server (Version failed: h2 protocol error")
        );
        assert!(classify(p, "ListContainers", &s, false).is_down());
        let s = tonic::Status::cancelled("Timeout expired");
        assert!(
            classify(p, "Version", &s, true)
                .to_string()
                .contains("no answer to Version within 5s")
        );
        assert!(
            CriError::NoneFound
                .to_string()
                .contains("/run/containerd/containerd.sock")
        );
    }
}
