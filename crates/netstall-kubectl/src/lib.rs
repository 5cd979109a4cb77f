//! `kubectl netstall`: netstall on a cluster, from kubectl.
//!
//! - `doctor NODE`: a short-lived privileged pod pinned to the node runs
//!   `netstall doctor`; its output is streamed back, the HTML report cut out
//!   of its log, and the pod deleted however the run ends (verdict, error,
//!   timeout, Ctrl-C).
//! - `status`: every node's `NetworkStall` condition beside its agent's
//!   latest verdict (the agent's `/healthz`, through the API server's pod
//!   proxy).
//!
//! The pod, the log splitting and the status table are pure ([`pod`],
//! [`logs`], [`status`]); this module talks to the API server (kube-rs).

pub mod logs;
pub mod pod;
pub mod status;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use netstall_agent::health::HealthReport;
use tokio::signal::unix::{signal, SignalKind};

use crate::logs::{Line, LogSplitter};
use crate::pod::DoctorPod;

/// Which cluster: the kubeconfig's current context, or another one.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub context: Option<String>,
}

/// `kubectl netstall doctor`.
#[derive(Debug, Clone)]
pub struct DoctorRequest {
    pub pod: DoctorPod,
    /// How long the pod may take to be scheduled, pulled and started.
    pub start_timeout: Duration,
    /// Where to write the HTML report (the pod is asked for one only then).
    pub report: Option<PathBuf>,
    /// How often the pod's state is read while it starts and ends.
    pub poll: Duration,
}

/// Runs the doctor on the node; returns its exit code (0 healthy, 1
/// findings). `output` gets the doctor's output line by line as it comes.
pub fn doctor(cluster: &Cluster, request: &DoctorRequest, output: impl FnMut(&str)) -> Result<u8> {
    runtime()?.block_on(async {
        let client = connect(cluster).await?;
        doctor_on(client, request, output).await
    })
}

/// Every node's condition and agent verdict.
pub fn status(cluster: &Cluster, namespace: &str) -> Result<Vec<status::NodeStatus>> {
    runtime()?.block_on(async {
        let client = connect(cluster).await?;
        status_of(client, namespace).await
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the Kubernetes client's runtime")
}

async fn connect(cluster: &Cluster) -> Result<Client> {
    let config = match &cluster.context {
        None => Config::infer().await.map_err(|e| anyhow!("{e}")),
        Some(context) => {
            let options = KubeConfigOptions {
                context: Some(context.clone()),
                ..Default::default()
            };
            let kubeconfig = Kubeconfig::read().map_err(|e| anyhow!("{e}"))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| anyhow!("{e}"))
        }
    }
    .context("no Kubernetes API config (KUBECONFIG, ~/.kube/config, or in-cluster)")?;
    Client::try_from(config)
        .map_err(|e| anyhow!("{e}"))
        .context("cannot make a Kubernetes client")
}

/// An API error as one line that says what to do.
fn explain(error: kube::Error, doing: &str) -> anyhow::Error {
    match error {
        kube::Error::Api(status) if status.is_forbidden() => anyhow!(
            "no permission to {doing}: {} (kubectl auth can-i {doing} shows it; ask your cluster admin)",
            status.message
        ),
        kube::Error::Api(status) => anyhow!("cannot {doing}: {} ({})", status.message, status.code),
        other => anyhow!("cannot {doing}: {other}"),
    }
}

/// Resolves when the user asks to stop (Ctrl-C, SIGTERM).
struct Interrupt {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn new() -> Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

async fn doctor_on(
    client: Client,
    request: &DoctorRequest,
    output: impl FnMut(&str),
) -> Result<u8> {
    // Caught from here on, so that a Ctrl-C while the pod is created still
    // reaches the select below (and the pod's deletion).
    let mut interrupt = Interrupt::new()?;
    let node = &request.pod.node;
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes
        .get_opt(node)
        .await
        .map_err(|e| explain(e, "get nodes"))?
        .is_none()
    {
        bail!("no node named {node} (kubectl get nodes lists them)");
    }
    let namespace = &request.pod.namespace;
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let mut pod = request.pod.clone();
    pod.report = request.report.is_some();
    let created = pods
        .create(&PostParams::default(), &pod.build())
        .await
        .map_err(|e| explain(e, &format!("create pods -n {namespace}")))?;
    let name = created.name_any();
    let outcome = tokio::select! {
        outcome = run_pod(&pods, &name, request, output) => outcome,
        _ = interrupt.wait() => Err(anyhow!("interrupted")),
    };
    // Whatever happened, the pod goes (no grace: the doctor has nothing to save).
    let deleted = pods
        .delete(&name, &DeleteParams::default().grace_period(0))
        .await;
    let outcome = outcome.map_err(|e| anyhow!("{e:#} (pod {namespace}/{name} deleted)"));
    match deleted {
        Ok(_) => outcome,
        Err(kube::Error::Api(status)) if status.is_not_found() => outcome,
        Err(e) => {
            let deleting = explain(e, &format!("delete pods -n {namespace}"));
            Err(match outcome {
                Ok(_) => deleting,
                Err(first) => anyhow!("{first:#}; and {deleting:#}"),
            })
        }
    }
}

/// Waits for the pod to start, streams its log, and returns the doctor's
/// exit code once it has ended.
async fn run_pod(
    pods: &Api<Pod>,
    name: &str,
    request: &DoctorRequest,
    mut output: impl FnMut(&str),
) -> Result<u8> {
    wait_started(pods, name, request).await?;
    let params = LogParams {
        follow: true,
        container: Some("doctor".into()),
        ..Default::default()
    };
    let stream = pods
        .log_stream(name, &params)
        .await
        .map_err(|e| explain(e, "get pods/log"))?;
    let mut lines = stream.lines();
    let mut splitter = LogSplitter::default();
    while let Some(line) = lines.next().await {
        let line = line.context("the doctor pod's log stream broke")?;
        if let Line::Output(text) = splitter.line(&line) {
            output(text);
        }
    }
    let code = wait_exit_code(pods, name, request).await?;
    if let Some(path) = &request.report {
        let report = splitter.report().ok_or_else(|| {
            anyhow!("the doctor wrote no (or a cut-off) report; its exit code was {code}")
        })?;
        std::fs::write(path, report)
            .with_context(|| format!("cannot write the report {}", path.display()))?;
    }
    Ok(code)
}

/// Polls the pod until its container runs (or has already ended); fails
/// at once on an image pull error, and after the start timeout otherwise,
/// saying why the pod is still pending.
async fn wait_started(pods: &Api<Pod>, name: &str, request: &DoctorRequest) -> Result<()> {
    let started = Instant::now();
    loop {
        let pod = pods.get(name).await.map_err(|e| explain(e, "get pods"))?;
        let status = pod.status.unwrap_or_default();
        let phase = status.phase.clone().unwrap_or_default();
        if matches!(phase.as_str(), "Running" | "Succeeded" | "Failed") {
            return Ok(());
        }
        let waiting = status
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
            .next();
        if let Some(waiting) = waiting {
            let reason = waiting.reason.as_deref().unwrap_or("");
            if matches!(
                reason,
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName"
            ) {
                bail!(
                    "the node cannot pull the image {}: {reason}: {} (push it where the nodes pull from, or pass --image)",
                    request.pod.image,
                    waiting.message.as_deref().unwrap_or("no message")
                );
            }
        }
        if started.elapsed() >= request.start_timeout {
            let why = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                .map(|c| {
                    format!(
                        "not scheduled: {}",
                        c.message
                            .as_deref()
                            .or(c.reason.as_deref())
                            .unwrap_or("no reason given")
                    )
                })
                .or_else(|| {
                    waiting.map(|w| format!("waiting: {}", w.reason.as_deref().unwrap_or("?")))
                })
                .unwrap_or_else(|| format!("phase {phase}"));
            bail!(
                "the doctor pod did not start on {} within {} s ({why}); --start-timeout waits longer",
                request.pod.node,
                request.start_timeout.as_secs()
            );
        }
        tokio::time::sleep(request.poll).await;
    }
}

/// The doctor container's exit code once it has terminated.
async fn wait_exit_code(pods: &Api<Pod>, name: &str, request: &DoctorRequest) -> Result<u8> {
    // The log ends when the container does; the kubelet reports the exit a
    // moment later.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pod = pods.get(name).await.map_err(|e| explain(e, "get pods"))?;
        let terminated = pod
            .status
            .and_then(|s| s.container_statuses)
            .into_iter()
            .flatten()
            .find(|c| c.name == "doctor")
            .and_then(|c| c.state?.terminated);
        if let Some(t) = terminated {
            return match u8::try_from(t.exit_code) {
                Ok(code @ 0..=2) => Ok(code),
                _ => bail!(
                    "the doctor ended with exit code {} ({})",
                    t.exit_code,
                    t.reason.as_deref().unwrap_or("no reason given")
                ),
            };
        }
        if Instant::now() >= deadline {
            bail!("the doctor's log ended but its container did not terminate within 30 s");
        }
        tokio::time::sleep(request.poll).await;
    }
}

/// The agents' port (deploy/kubernetes/daemonset.yaml).
const AGENT_PORT: u16 = 9977;

async fn status_of(client: Client, namespace: &str) -> Result<Vec<status::NodeStatus>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let nodes = nodes
        .list(&ListParams::default())
        .await
        .map_err(|e| explain(e, "list nodes"))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let agents = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=netstall-agent"))
        .await
        .map_err(|e| explain(e, &format!("list pods -n {namespace}")))?;
    let mut rows = Vec::new();
    for node in &nodes.items {
        let node_name = node.name_any();
        let agent = agents
            .items
            .iter()
            .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node_name));
        let verdict = match agent {
            None => None,
            Some(agent) => Some(agent_health(&client, namespace, &agent.name_any()).await),
        };
        rows.push(status::node_status(node, verdict));
    }
    Ok(rows)
}

/// An agent's `/healthz`, through the API server's pod proxy.
async fn agent_health(client: &Client, namespace: &str, pod: &str) -> Result<HealthReport, String> {
    let request = http_get(&format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}:{AGENT_PORT}/proxy/healthz"
    ));
    let body = client
        .request_text(request)
        .await
        .map_err(|e| format!("{:#}", explain(e, "get pods/proxy")))?;
    HealthReport::from_json(&body)
}

fn http_get(path: &str) -> http::Request<Vec<u8>> {
    let mut request = http::Request::new(Vec::new());
    *request.uri_mut() = path.parse().expect("a valid path");
    request
}
