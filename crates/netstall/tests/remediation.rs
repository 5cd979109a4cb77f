//! Agent remediation (`--remediate`) against a stand-in for the Kubernetes
//! API server: no API server can run here, so a small HTTP server on
//! loopback keeps Nodes, Pods, a Lease and Events, applies the patches the
//! way the API server does (merge patch; strategic merge of node conditions
//! by type), answers evictions (a PodDisruptionBudget's 429 on request),
//! and records every request. The client is the agent's real kube-rs
//! client, reached through a kubeconfig. Every object written, and every
//! object a patch produced, is validated at the end of each test against
//! the official Kubernetes 1.33 schemas with kubernetes-validate --strict.
//!
//! The node's stalls are fed to the agent's health verdict through the
//! function the kernel tracer calls for each stall (`tracer::record`): the
//! tracer itself is tested for real elsewhere (tests/agent.rs, tests/trace.rs).

mod common;

use common::*;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netstall_agent::events::EventLog;
use netstall_agent::remediator::Remediator;
use netstall_agent::tracer;
use netstall_agent::{AgentOptions, State};
use netstall_core::shutdown::Shutdown;
use netstall_testkit::{privileged, MachineLock};
use serde_json::{json, Value};

const KUBERNETES: &str = "1.33.0";

/// One request the stand-in saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    status: u16,
    body: Option<Value>,
}

impl Seen {
    fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

#[derive(Default)]
struct Cluster {
    nodes: BTreeMap<String, Value>,
    pods: Vec<Value>,
    lease: Option<Value>,
    resource_version: u64,
    log: Vec<Seen>,
    /// Every object written or produced by a patch, for the schema check.
    written: Vec<Value>,
    /// Pods whose first eviction a PodDisruptionBudget refuses (429).
    refuse_once: HashSet<String>,
    /// Answer every request with 500 once an eviction was asked for.
    fail_after_eviction: bool,
    failing: bool,
    /// Instead of answering 500: close every connection (an API server gone).
    unreachable: bool,
}

struct ApiServer {
    addr: SocketAddr,
    cluster: Arc<Mutex<Cluster>>,
}

fn node(name: &str, network_stall: bool) -> Value {
    let mut conditions = vec![json!({
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "kubelet is posting ready status",
        "lastHeartbeatTime": "2026-12-04T09:00:00Z", "lastTransitionTime": "2026-12-04T08:00:00Z",
    })];
    if network_stall {
        conditions.push(json!({
            "type": "NetworkStall", "status": "True", "reason": "Unexplained",
            "message": "stalls", "lastHeartbeatTime": "2026-12-04T09:00:00Z",
            "lastTransitionTime": "2026-12-04T09:00:00Z",
        }));
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "resourceVersion": "1", "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {"conditions": conditions},
    })
}

fn pod(namespace: &str, name: &str, node: &str, owner: Option<&str>, extra: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]},
        "status": {"phase": "Running"},
    });
    if let Some(kind) = owner {
        pod["metadata"]["ownerReferences"] = json!([{
            "apiVersion": if kind == "Node" { "v1" } else { "apps/v1" },
            "kind": kind, "name": format!("{name}-owner"), "uid": format!("uid-{name}"), "controller": true,
        }]);
    }
    merge(&mut pod, &extra);
    pod
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let object = target.as_object_mut().unwrap();
            for (key, value) in fields {
                if value.is_null() {
                    object.remove(key);
                } else {
                    merge(object.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// A strategic merge patch of a Node's status: conditions merged by type,
/// the rest as a merge patch.
fn strategic_merge_status(node: &mut Value, patch: &Value) {
    let mut patch = patch.clone();
    if let Some(conditions) = patch["status"]
        .as_object_mut()
        .and_then(|s| s.remove("conditions"))
    {
        let current = node["status"]["conditions"].as_array_mut().unwrap();
        for condition in conditions.as_array().unwrap() {
            match current.iter_mut().find(|c| c["type"] == condition["type"]) {
                Some(existing) => merge(existing, condition),
                None => current.push(condition.clone()),
            }
        }
    }
    merge(node, &patch);
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "metadata": {},
           "status": if code < 300 { "Success" } else { "Failure" },
           "reason": reason, "message": message, "code": code})
}

impl ApiServer {
    fn start(cluster: Cluster) -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cluster = Arc::new(Mutex::new(cluster));
        let shared = Arc::clone(&cluster);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let cluster = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &cluster));
            }
        });
        ApiServer { addr, cluster }
    }

    fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("kubeconfig-{}", self.addr.port()));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: standin\n\
                 clusters:\n- name: standin\n  cluster:\n    server: http://{}\n\
                 contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin\n\
                 users:\n- name: standin\n  user: {{}}\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }

    fn log(&self) -> Vec<Seen> {
        self.cluster.lock().unwrap().log.clone()
    }

    fn writes(&self) -> Vec<Seen> {
        self.log().into_iter().filter(Seen::is_write).collect()
    }

    fn node(&self, name: &str) -> Value {
        self.cluster.lock().unwrap().nodes[name].clone()
    }

    fn lease_holder(&self) -> Option<String> {
        let cluster = self.cluster.lock().unwrap();
        cluster
            .lease
            .as_ref()
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    }

    /// Every object written or produced, against the official schemas.
    fn validate(&self, dir: &Path) {
        let written = self.cluster.lock().unwrap().written.clone();
        assert!(!written.is_empty(), "nothing was written");
        let files: Vec<String> = written
            .iter()
            .enumerate()
            .map(|(i, object)| {
                let path = dir.join(format!("object-{i}.json"));
                std::fs::write(&path, object.to_string()).unwrap();
                path.display().to_string()
            })
            .collect();
        let out = kubernetes_validate(&files);
        assert!(
            out.status.success(),
            "{} objects against the Kubernetes {KUBERNETES} schemas:\n{}{}",
            files.len(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn kubernetes_validate(files: &[String]) -> std::process::Output {
    Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", KUBERNETES])
        .args(files)
        .output()
        .expect("python3 -m kubernetes_validate (scripts/setup.sh installs it)")
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, String, String, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let (mut length, mut content_type) = (0usize, String::new());
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "content-type" => content_type = value.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((method, target, content_type, body))
}

fn serve(stream: TcpStream, cluster: &Mutex<Cluster>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    while let Some((method, target, content_type, body)) = read_request(&mut reader) {
        let body: Option<Value> = serde_json::from_slice(&body).ok();
        let path = target.split('?').next().unwrap_or("").to_string();
        if path.ends_with("/endpointslices") && target.contains("watch=") {
            // A watch that ends at once is asked again at once: pace it.
            std::thread::sleep(Duration::from_secs(1));
        }
        let query = target.split_once('?').map_or("", |q| q.1).to_string();
        let (code, response) = {
            let mut c = cluster.lock().unwrap();
            if c.failing && c.unreachable {
                c.log.push(Seen {
                    method,
                    path,
                    status: 0,
                    body,
                });
                return;
            }
            let answer = if c.failing {
                (
                    500,
                    status(500, "InternalError", "etcdserver: request timed out"),
                )
            } else {
                route(&mut c, &method, &path, &query, &content_type, body.as_ref())
            };
            c.log.push(Seen {
                method: method.clone(),
                path: path.clone(),
                status: answer.0,
                body: body.clone(),
            });
            answer
        };
        if code == 0 {
            return; // gone: the connection closes without an answer
        }
        let text = response.to_string();
        let reason = match code {
            200 => "OK",
            201 => "Created",
            404 => "Not Found",
            409 => "Conflict",
            415 => "Unsupported Media Type",
            429 => "Too Many Requests",
            _ => "Internal Server Error",
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
    }
}

fn route(
    c: &mut Cluster,
    method: &str,
    path: &str,
    query: &str,
    content_type: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    c.resource_version += 1;
    let rv = c.resource_version.to_string();
    match (method, segments.as_slice()) {
        ("GET", ["api", "v1", "nodes"]) => {
            let items: Vec<Value> = c.nodes.values().cloned().collect();
            (
                200,
                json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": rv}, "items": items}),
            )
        }
        ("GET", ["api", "v1", "nodes", name]) => match c.nodes.get(*name) {
            Some(n) => (200, n.clone()),
            None => (404, status(404, "NotFound", "node not found")),
        },
        ("PATCH", ["api", "v1", "nodes", name, rest @ ..]) => {
            let Some(mut node) = c.nodes.get(*name).cloned() else {
                return (404, status(404, "NotFound", "node not found"));
            };
            let patch = body.cloned().unwrap_or(Value::Null);
            match rest {
                ["status"] => {
                    if content_type != "application/strategic-merge-patch+json" {
                        return (
                            415,
                            status(
                                415,
                                "UnsupportedMediaType",
                                "conditions need a strategic merge",
                            ),
                        );
                    }
                    strategic_merge_status(&mut node, &patch);
                }
                [] => {
                    if content_type != "application/merge-patch+json" {
                        return (415, status(415, "UnsupportedMediaType", content_type));
                    }
                    merge(&mut node, &patch);
                }
                _ => return (404, status(404, "NotFound", "no such subresource")),
            }
            node["metadata"]["resourceVersion"] = json!(rv);
            c.written.push(node.clone());
            c.nodes.insert(name.to_string(), node.clone());
            (200, node)
        }
        ("GET", ["api", "v1", "pods"]) => {
            let on = query
                .split('&')
                .find_map(|q| q.strip_prefix("fieldSelector=spec.nodeName%3D"))
                .unwrap_or("")
                .to_string();
            if on.is_empty() {
                return (
                    400,
                    status(400, "BadRequest", "the drain lists pods by node"),
                );
            }
            let items: Vec<Value> = c
                .pods
                .iter()
                .filter(|p| p["spec"]["nodeName"] == on.as_str())
                .cloned()
                .collect();
            (
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": rv}, "items": items}),
            )
        }
        ("POST", ["api", "v1", "namespaces", ns, "pods", name, "eviction"]) => {
            let eviction = body.cloned().unwrap_or(Value::Null);
            c.written.push(eviction.clone());
            if c.fail_after_eviction {
                c.failing = true;
                if c.unreachable {
                    return (0, Value::Null);
                }
                return (
                    500,
                    status(500, "InternalError", "etcdserver: leader changed"),
                );
            }
            if eviction["kind"] != "Eviction" || eviction["metadata"]["name"] != *name {
                return (
                    400,
                    status(400, "BadRequest", "not an Eviction of this pod"),
                );
            }
            if c.refuse_once.remove(*name) {
                return (
                    429,
                    status(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                    ),
                );
            }
            let before = c.pods.len();
            c.pods
                .retain(|p| !(p["metadata"]["namespace"] == *ns && p["metadata"]["name"] == *name));
            if c.pods.len() == before {
                return (404, status(404, "NotFound", "pod not found"));
            }
            (201, status(201, "", ""))
        }
        ("POST", ["api", "v1", "namespaces", ns, "events"]) => {
            let mut event = body.cloned().unwrap_or(Value::Null);
            if event["metadata"]["namespace"] != *ns {
                return (400, status(400, "BadRequest", "event namespace"));
            }
            c.written.push(event.clone());
            event["metadata"]["resourceVersion"] = json!(rv);
            (201, event)
        }
        ("GET", ["apis", "coordination.k8s.io", "v1", "namespaces", _, "leases", _]) => {
            match &c.lease {
                Some(lease) => (200, lease.clone()),
                None => (
                    404,
                    status(404, "NotFound", "leases.coordination.k8s.io not found"),
                ),
            }
        }
        ("POST", ["apis", "coordination.k8s.io", "v1", "namespaces", _, "leases"]) => {
            if c.lease.is_some() {
                return (409, status(409, "AlreadyExists", "lease exists"));
            }
            let mut lease = body.cloned().unwrap_or(Value::Null);
            c.written.push(lease.clone());
            lease["metadata"]["resourceVersion"] = json!(rv);
            c.lease = Some(lease.clone());
            (201, lease)
        }
        ("PUT", ["apis", "coordination.k8s.io", "v1", "namespaces", _, "leases", _]) => {
            let mut lease = body.cloned().unwrap_or(Value::Null);
            let current = c
                .lease
                .as_ref()
                .map(|l| l["metadata"]["resourceVersion"].clone());
            if current != Some(lease["metadata"]["resourceVersion"].clone()) {
                return (409, status(409, "Conflict", "the object has been modified"));
            }
            c.written.push(lease.clone());
            lease["metadata"]["resourceVersion"] = json!(rv);
            c.lease = Some(lease.clone());
            (200, lease)
        }
        ("GET", ["apis", "discovery.k8s.io", "v1", "namespaces", _, "endpointslices"]) => {
            // Peer discovery's list and watch: no agents, and the watch ends at once.
            if query.contains("watch=") {
                (
                    200,
                    json!({"type": "BOOKMARK", "object": {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"resourceVersion": rv}, "addressType": "IPv4", "endpoints": []}}),
                )
            } else {
                (
                    200,
                    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {"resourceVersion": rv}, "items": []}),
                )
            }
        }
        _ => (404, status(404, "NotFound", &format!("{method} {path}"))),
    }
}

/// One agent's remediation, in this process: its State (health, metrics,
/// event log), its stalls, and its remediator thread.
struct Agent {
    state: Arc<State>,
    log: PathBuf,
    stop: Arc<Shutdown>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Settings<'a> {
    node: &'a str,
    mode: &'a str,
    window: &'a str,
    extra: &'a [(&'a str, &'a str)],
}

impl Agent {
    fn start(api: &ApiServer, dir: &Path, s: &Settings) -> Agent {
        let mut options = AgentOptions {
            node_name: Some(s.node.into()),
            remediate: Some(s.mode.into()),
            problem_window: Some(netstall_core::duration::parse_nonzero(s.window).unwrap()),
            probation: Some(Duration::from_secs(2)),
            lease_duration: Some(Duration::from_secs(3)),
            drain_timeout: Some(Duration::from_secs(10)),
            reboot_sentinel: Some(dir.join(format!("reboot-required-{}", s.node))),
            ..Default::default()
        };
        for (key, value) in s.extra {
            match *key {
                "dry-run" => options.dry_run = Some(value.parse().unwrap()),
                "min-healthy" => options.min_healthy = Some(value.to_string()),
                "reboot-command" => options.reboot_command = Some(value.to_string()),
                "remediate-memcg" => options.remediate_memcg = Some(value.parse().unwrap()),
                "dying-memcg-limit" => options.dying_memcg_limit = Some(value.parse().unwrap()),
                "lease-duration" => {
                    options.lease_duration =
                        Some(netstall_core::duration::parse_nonzero(value).unwrap())
                }
                other => panic!("no setting {other}"),
            }
        }
        let config = options.resolve().unwrap();
        let log = dir.join(format!(
            "events-{}-{}.jsonl",
            s.node,
            netstall_testkit::unique_prefix()
        ));
        let state = Arc::new(State::new(&config, EventLog::file(&log, 16 << 20).unwrap()));
        let remediator = Remediator::connect_with(
            config.remediation.clone(),
            s.node,
            config.dying_memcg_limit,
            Some(&api.kubeconfig(dir)),
        )
        .unwrap();
        let stop = Arc::new(Shutdown::new().unwrap());
        let thread = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::spawn(move || remediator.run(&state, &stop))
        };
        Agent {
            state,
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// Stalls as the kernel tracer reports them: 117 ms on CPU 3, by cadvisor in read().
    fn stalls(&self, n: usize) {
        for _ in 0..n {
            let stall = tracer::cadvisor_stall(netstall_core::clock::realtime_ns());
            tracer::record(&self.state, &stall);
        }
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn steps(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter(|l| l["type"] == "remediation")
            .map(|l| {
                format!(
                    "{}:{}",
                    l["step"].as_str().unwrap(),
                    l["reason"].as_str().unwrap()
                )
            })
            .collect()
    }

    /// Stops the agent (as a host reboot or a pod restart does).
    fn stop(mut self) {
        self.stop.request();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.request();
    }
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The index of the first write matching, after `from`.
fn first(writes: &[Seen], from: usize, what: &str, matches: impl Fn(&Seen) -> bool) -> usize {
    writes
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, w)| matches(w))
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no {what} after write {from}: {:#?}", summary(writes)))
}

fn summary(writes: &[Seen]) -> Vec<String> {
    writes
        .iter()
        .map(|w| {
            let detail = match &w.body {
                Some(b) if w.path.ends_with("/events") => b["reason"].to_string(),
                Some(b) if w.path.ends_with("/status") => {
                    b["status"]["conditions"][0]["status"].to_string()
                }
                Some(b) if w.path.contains("/leases") => b["spec"]["holderIdentity"].to_string(),
                Some(b) => b["spec"].to_string(),
                None => String::new(),
            };
            format!("{} {} {} {detail}", w.method, w.path, w.status)
        })
        .collect()
}

fn is_event(w: &Seen, reason: &str) -> bool {
    w.path == "/api/v1/namespaces/default/events"
        && w.body.as_ref().is_some_and(|b| b["reason"] == reason)
}

fn is_condition(w: &Seen, node: &str, value: &str) -> bool {
    w.method == "PATCH"
        && w.path == format!("/api/v1/nodes/{node}/status")
        && w.body
            .as_ref()
            .is_some_and(|b| b["status"]["conditions"][0]["status"] == value)
}

fn is_unschedulable(w: &Seen, node: &str, value: Value) -> bool {
    w.method == "PATCH"
        && w.path == format!("/api/v1/nodes/{node}")
        && w.body
            .as_ref()
            .is_some_and(|b| b["spec"].get("unschedulable") == Some(&value))
}

fn is_lease_write(w: &Seen, holder: Value) -> bool {
    w.path.contains("/leases")
        && w.status < 300
        && w.body
            .as_ref()
            .is_some_and(|b| b["spec"]["holderIdentity"] == holder)
}

fn cluster(nodes: &[(&str, bool)], pods: Vec<Value>) -> Cluster {
    Cluster {
        nodes: nodes
            .iter()
            .map(|(n, stall)| (n.to_string(), node(n, *stall)))
            .collect(),
        pods,
        ..Default::default()
    }
}

fn evictions(writes: &[Seen]) -> Vec<String> {
    writes
        .iter()
        .filter(|w| w.path.ends_with("/eviction"))
        .map(|w| format!("{} {}", w.path.split('/').nth(6).unwrap(), w.status))
        .collect()
}

/// The whole story on one bad node in mode `reboot`: Lease → condition and
/// Event → cordon → evictions (DaemonSet, mirror and agent pods skipped, a
/// PDB's 429 retried) → sentinel; then, after the restart with the stalls
/// gone and the probation passed: uncordon → condition False → Lease
/// released → proof Event. Every body passes the official schemas.
#[test]
fn a_bad_node_is_flagged_cordoned_drained_rebooted_and_proven_in_order() {
    let tmp = TempDir::new();
    let pods = vec![
        pod("shop", "web-1", "node-a", Some("ReplicaSet"), json!({})),
        pod("shop", "db-0", "node-a", Some("StatefulSet"), json!({})),
        pod(
            "kube-system",
            "kube-proxy-x1",
            "node-a",
            Some("DaemonSet"),
            json!({}),
        ),
        pod(
            "kube-system",
            "etcd-node-a",
            "node-a",
            Some("Node"),
            json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "abc"}}}),
        ),
        pod(
            "netstall",
            "netstall-agent-q",
            "node-a",
            None,
            json!({"metadata": {"labels": {"app.kubernetes.io/name": "netstall-agent"}}}),
        ),
        pod("shop", "web-2", "node-b", Some("ReplicaSet"), json!({})),
    ];
    let mut c = cluster(
        &[("node-a", false), ("node-b", false), ("node-c", false)],
        pods,
    );
    c.refuse_once.insert("web-1".into());
    let api = ApiServer::start(c);
    let settings = Settings {
        node: "node-a",
        mode: "reboot",
        window: "5m",
        extra: &[],
    };
    let agent = Agent::start(&api, &tmp.0, &settings);
    agent.stalls(3);
    let sentinel = tmp.0.join("reboot-required-node-a");
    wait_for("the reboot sentinel", Duration::from_secs(30), || {
        sentinel.exists()
    });

    let w = api.writes();
    let lease = first(&w, 0, "Lease taken", |w| is_lease_write(w, json!("node-a")));
    let condition = first(&w, lease, "condition True", |w| {
        is_condition(w, "node-a", "True")
    });
    let flagged = first(&w, condition, "condition Event", |w| {
        is_event(w, "DyingMemcgStatFlush") || is_event(w, "Unexplained")
    });
    let cordon = first(&w, flagged, "cordon", |w| {
        is_unschedulable(w, "node-a", json!(true))
    });
    let evicted = first(&w, cordon, "first eviction", |w| {
        w.path.ends_with("/eviction")
    });
    assert!(lease < condition && condition < flagged && flagged < cordon && cordon < evicted);
    let condition_body = &w[condition].body.as_ref().unwrap()["status"]["conditions"][0];
    assert_eq!(condition_body["type"], "NetworkStall");
    assert_eq!(condition_body["reason"], "Unexplained");
    assert!(
        condition_body["message"]
            .as_str()
            .unwrap()
            .contains("culprit cadvisor/read; CPU 3, worst stall 117 ms"),
        "{condition_body}"
    );
    let mut evicted_pods = evictions(&w);
    evicted_pods.sort();
    assert_eq!(
        evicted_pods,
        ["db-0 201", "web-1 201", "web-1 429"],
        "{:#?}",
        summary(&w)
    );
    let node_a = api.node("node-a");
    assert_eq!(node_a["spec"]["unschedulable"], true);
    let conditions: Vec<&str> = node_a["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        conditions,
        ["Ready", "NetworkStall"],
        "the kubelet's condition stays"
    );
    assert!(
        !w.iter().any(|w| w.method == "DELETE"),
        "evictions only, never deletes"
    );
    assert!(std::fs::read_to_string(&sentinel)
        .unwrap()
        .contains("node-a"));
    assert_eq!(api.lease_holder().as_deref(), Some("node-a"));

    // The host restarts: the agent stops, /var/run (a tmpfs) loses the
    // sentinel, and the new agent starts with no stalls.
    agent.stop();
    std::fs::remove_file(&sentinel).unwrap();
    let before_restart = api.writes().len();
    let agent = Agent::start(&api, &tmp.0, &settings);
    wait_for("the Lease released", Duration::from_secs(30), || {
        api.lease_holder().is_none()
    });
    wait_for("the proof", Duration::from_secs(10), || {
        agent
            .lines()
            .iter()
            .any(|l| l["type"] == "remediation-proof")
    });
    let w = api.writes();
    let uncordon = first(&w, before_restart, "uncordon", |w| {
        is_unschedulable(w, "node-a", Value::Null)
    });
    let cleared = first(&w, uncordon, "condition False", |w| {
        is_condition(w, "node-a", "False")
    });
    let released = first(&w, cleared, "Lease released", |w| {
        is_lease_write(w, Value::Null)
    });
    let proof = first(&w, released, "proof Event", |w| {
        is_event(w, "NetworkStallRemediated")
    });
    assert!(uncordon < cleared && cleared < released && released < proof);
    let lines = agent.lines();
    let proof_line = lines
        .iter()
        .find(|l| l["type"] == "remediation-proof")
        .unwrap();
    assert_eq!(
        proof_line["before"]["worst_stall_ms"], 117.0,
        "{proof_line}"
    );
    assert_eq!(
        proof_line["after"]["worst_stall_ms"],
        Value::Null,
        "{proof_line}"
    );
    assert_eq!(proof_line["cause_gone"], true, "{proof_line}");
    assert!(
        proof_line["duration_s"].as_f64().unwrap() >= 2.0,
        "{proof_line}"
    );
    let node_a = api.node("node-a");
    assert!(node_a["spec"].get("unschedulable").is_none(), "{node_a}");
    assert!(node_a["metadata"]
        .get("annotations")
        .is_none_or(|a| a.get("netstall.io/remediation").is_none()));
    assert!(!sentinel.exists(), "one reboot, not a loop");
    if std::env::var_os("SHOW_WRITES").is_some() {
        eprintln!("{:#?}\n{:#?}", summary(&api.writes()), agent.lines());
    }
    drop(agent);
    api.validate(&tmp.0);
}

/// Two nodes go bad at once: one takes the Lease, the other waits (no
/// cordon) while it is held, and proceeds once it is released; never are
/// both cordoned.
#[test]
fn one_node_at_a_time_and_the_next_after_the_release() {
    let tmp = TempDir::new();
    let nodes = [
        ("node-a", false),
        ("node-b", false),
        ("node-c", false),
        ("node-d", false),
        ("node-e", false),
    ];
    let api = ApiServer::start(cluster(&nodes, vec![]));
    // Stalls age out of a 3 s window: a node left alone recovers.
    let settings = |node| Settings {
        node,
        mode: "cordon",
        window: "3s",
        extra: &[],
    };
    let a = Agent::start(&api, &tmp.0, &settings("node-a"));
    let b = Agent::start(&api, &tmp.0, &settings("node-b"));
    a.stalls(3);
    b.stalls(3);
    let cordoned = |n: &str| api.node(n)["spec"]["unschedulable"] == true;
    wait_for("a node cordoned", Duration::from_secs(20), || {
        cordoned("node-a") || cordoned("node-b")
    });
    let (first_node, second, second_node) = if cordoned("node-a") {
        ("node-a", &b, "node-b")
    } else {
        ("node-b", &a, "node-a")
    };
    // The second stays bad (fresh stalls) until it gets its turn.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cordoned(second_node) {
        assert!(
            Instant::now() < deadline,
            "{second_node} never got its turn"
        );
        assert!(
            !(cordoned(first_node) && cordoned(second_node)),
            "both cordoned at once"
        );
        second.stalls(3);
        std::thread::sleep(Duration::from_millis(300));
    }
    let w = api.writes();
    let first_uncordon = first(&w, 0, "the first node's uncordon", |w| {
        is_unschedulable(w, first_node, Value::Null)
    });
    let released = first(&w, first_uncordon, "release", |w| {
        is_lease_write(w, Value::Null)
    });
    let second_took = first(&w, 0, "the second node's Lease", |w| {
        is_lease_write(w, json!(second_node))
    });
    let second_cordon = first(&w, 0, "the second node's cordon", |w| {
        is_unschedulable(w, second_node, json!(true))
    });
    assert!(
        first_uncordon < released && released < second_took && second_took < second_cordon,
        "{:#?}",
        summary(&w)
    );
    assert!(
        w.iter().any(|w| is_condition(w, second_node, "True")),
        "the waiting node still flagged itself: {:#?}",
        summary(&w)
    );
    assert!(
        second.steps().iter().any(|s| s == "wait:LeaseHeld"),
        "{:?}",
        second.steps()
    );
    assert_eq!(api.lease_holder().as_deref(), Some(second_node));
    drop((a, b));
    api.validate(&tmp.0);
}

/// With fewer nodes free of the condition than --min-healthy, a bad node
/// flags itself and does nothing destructive.
#[test]
fn min_healthy_not_met_means_no_node_acts() {
    let tmp = TempDir::new();
    let pods = vec![pod(
        "shop",
        "web-1",
        "node-a",
        Some("ReplicaSet"),
        json!({}),
    )];
    let api = ApiServer::start(cluster(
        &[("node-a", false), ("node-b", true), ("node-c", true)],
        pods,
    ));
    let agent = Agent::start(
        &api,
        &tmp.0,
        &Settings {
            node: "node-a",
            mode: "reboot",
            window: "5m",
            extra: &[],
        },
    );
    agent.stalls(5);
    wait_for("the wait", Duration::from_secs(20), || {
        agent.steps().iter().any(|s| s == "wait:MinHealthyNotMet")
    });
    std::thread::sleep(Duration::from_secs(2));
    let w = api.writes();
    assert!(
        w.iter().any(|w| is_condition(w, "node-a", "True")),
        "{:#?}",
        summary(&w)
    );
    assert!(
        w.iter()
            .all(|w| w.path.ends_with("/status") || w.path.ends_with("/events")),
        "only the condition and its Event: {:#?}",
        summary(&w)
    );
    assert!(!tmp.0.join("reboot-required-node-a").exists());
    drop(agent);
    api.validate(&tmp.0);
}

/// The API server fails (500) mid-drain: the eviction is not retried
/// blindly, no later destructive request is made, the agent keeps serving
/// /metrics, and the Lease, no longer renewed, expires.
#[test]
fn an_api_failing_mid_drain_stops_everything_and_the_lease_expires() {
    api_lost_mid_drain(false);
}

/// The same with the API server gone (connections closed, no answer).
#[test]
fn an_api_unreachable_mid_drain_stops_everything_and_the_lease_expires() {
    api_lost_mid_drain(true);
}

fn api_lost_mid_drain(unreachable: bool) {
    let tmp = TempDir::new();
    let pods = vec![
        pod("shop", "web-1", "node-a", Some("ReplicaSet"), json!({})),
        pod("shop", "web-2", "node-a", Some("ReplicaSet"), json!({})),
    ];
    let mut c = cluster(
        &[("node-a", false), ("node-b", false), ("node-c", false)],
        pods,
    );
    c.fail_after_eviction = true;
    c.unreachable = unreachable;
    let api = ApiServer::start(c);
    let agent = Agent::start(
        &api,
        &tmp.0,
        &Settings {
            node: "node-a",
            mode: "drain",
            window: "5m",
            extra: &[],
        },
    );
    let server = netstall_agent::http::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listen = server.local_addr();
    let http_stop = Shutdown::new().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| netstall_agent::http::serve(&server, &agent.state, &http_stop));
        agent.stalls(3);
        wait_for("the API failing", Duration::from_secs(20), || {
            api.cluster.lock().unwrap().failing
        });
        // Longer than the Lease (3 s): were it renewed, it would be now.
        std::thread::sleep(Duration::from_secs(5));
        let metrics =
            netstall_agent::http::get(listen, "/metrics", Duration::from_secs(5)).unwrap();
        assert!(
            metrics.contains("netstall_rx_stall_seconds_count"),
            "{metrics}"
        );
        http_stop.request();
    });
    let log = api.log();
    let evictions: Vec<&Seen> = log
        .iter()
        .filter(|s| s.path.ends_with("/eviction"))
        .collect();
    assert_eq!(
        evictions.len(),
        1,
        "one eviction, not retried blindly: {:#?}",
        summary(&log)
    );
    let failed_at = log
        .iter()
        .position(|s| s.path.ends_with("/eviction"))
        .unwrap();
    assert!(
        log[failed_at + 1..].iter().all(|s| s.method == "GET"),
        "after the failure only reads: {:#?}",
        summary(&log[failed_at..])
    );
    assert!(
        log.len() > failed_at + 3,
        "the agent kept looking: {}",
        log.len()
    );
    let lease = api.cluster.lock().unwrap().lease.clone().unwrap();
    let renewed = lease["spec"]["renewTime"].as_str().unwrap();
    let renewed: std::time::SystemTime = humantime::parse_rfc3339(renewed).unwrap();
    let expires =
        renewed + Duration::from_secs(lease["spec"]["leaseDurationSeconds"].as_u64().unwrap());
    assert!(
        expires < std::time::SystemTime::now(),
        "the Lease expired: {lease}"
    );
    assert!(
        agent.steps().iter().any(|s| s == "error:ApiError"),
        "{:?}",
        agent.steps()
    );
    drop(agent);
    // The schemas: what was written before the failure.
    api.validate(&tmp.0);
}

/// --dry-run walks every step (JSON lines, with the Events it would
/// create) and makes no write request at all.
#[test]
fn dry_run_tells_every_step_and_writes_nothing() {
    let tmp = TempDir::new();
    let pods = vec![
        pod("shop", "web-1", "node-a", Some("ReplicaSet"), json!({})),
        pod(
            "kube-system",
            "kube-proxy-x1",
            "node-a",
            Some("DaemonSet"),
            json!({}),
        ),
    ];
    let api = ApiServer::start(cluster(
        &[("node-a", false), ("node-b", false), ("node-c", false)],
        pods,
    ));
    let agent = Agent::start(
        &api,
        &tmp.0,
        &Settings {
            node: "node-a",
            mode: "reboot",
            window: "3s",
            extra: &[("dry-run", "true")],
        },
    );
    agent.stalls(3);
    wait_for("the dry run's proof", Duration::from_secs(30), || {
        agent
            .lines()
            .iter()
            .any(|l| l["type"] == "remediation-proof")
    });
    let steps = agent.steps();
    for step in [
        "lease:LeaseAcquired",
        "condition:Unexplained",
        "cordon:NetworkStallCordon",
        "evict:Evict",
        "skip:EvictionSkipped",
        "drain:NetworkStallDrained",
        "reboot:NetworkStallReboot",
        "uncordon:NetworkStallUncordon",
        "condition:NoNetworkStall",
        "lease:LeaseReleased",
    ] {
        assert!(steps.iter().any(|s| s == step), "no {step} in {steps:#?}");
    }
    assert!(agent
        .lines()
        .iter()
        .filter(|l| l["type"] == "remediation")
        .all(|l| l["dry_run"] == true));
    assert_eq!(api.writes().len(), 0, "{:#?}", summary(&api.writes()));
    assert!(!api.log().is_empty(), "it read the cluster");
    assert!(!tmp.0.join("reboot-required-node-a").exists());
}

/// Mode off makes no request at all, even on a bad node; and the agent
/// (default mode off) with API peer discovery only ever reads.
#[test]
fn mode_off_never_writes_to_the_api() {
    let tmp = TempDir::new();
    let api = ApiServer::start(cluster(&[("node-a", false)], vec![]));
    let agent = Agent::start(
        &api,
        &tmp.0,
        &Settings {
            node: "node-a",
            mode: "off",
            window: "5m",
            extra: &[],
        },
    );
    agent.stalls(10);
    std::thread::sleep(Duration::from_secs(2));
    assert!(api.log().is_empty(), "{:#?}", summary(&api.log()));
    drop(agent);

    let events = tmp.0.join("agent.jsonl");
    let mut child = Command::new(NETSTALL)
        .env("KUBECONFIG", api.kubeconfig(&tmp.0))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args([
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--node-name",
            "node-a",
            "--tracer",
            "false",
        ])
        .args([
            "--peers-kubernetes",
            "netstall/netstall-agent",
            "--event-log",
        ])
        .arg(&events)
        .args(NO_RECORDER)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for("the agent reading the API", Duration::from_secs(20), || {
        !api.log().is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill(2) on the PID of the child this test started and has not reaped.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    let log = api.log();
    assert!(
        log.iter().all(|s| s.method == "GET"),
        "{:#?}",
        summary(&log)
    );
}

/// With --reboot-command the command runs once, and the node, cordoned
/// and holding the Lease, waits for the host's restart (a new boot id).
#[test]
fn the_reboot_command_runs_once_and_the_node_waits_for_the_restart() {
    let tmp = TempDir::new();
    let api = ApiServer::start(cluster(
        &[("node-a", false), ("node-b", false), ("node-c", false)],
        vec![],
    ));
    let ran = tmp.0.join("reboots");
    let command = format!("echo asked >> {}", ran.display());
    let extra = [("reboot-command", command.as_str())];
    let agent = Agent::start(
        &api,
        &tmp.0,
        &Settings {
            node: "node-a",
            mode: "reboot",
            window: "5m",
            extra: &extra,
        },
    );
    agent.stalls(3);
    wait_for("the reboot command", Duration::from_secs(20), || {
        ran.exists()
    });
    // Longer than the Lease (3 s): it is renewed while waiting.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "asked\n");
    let node = api.node("node-a");
    let record: Value = serde_json::from_str(
        node["metadata"]["annotations"]["netstall.io/remediation"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["phase"], "rebooting", "{record}");
    assert!(record["boot_id"].is_string(), "{record}");
    assert_eq!(node["spec"]["unschedulable"], true);
    assert_eq!(api.lease_holder().as_deref(), Some("node-a"));
    let renewed = api.cluster.lock().unwrap().lease.clone().unwrap()["spec"]["renewTime"]
        .as_str()
        .map(|t| humantime::parse_rfc3339(t).unwrap())
        .unwrap();
    assert!(renewed.elapsed().unwrap_or_default() < Duration::from_secs(3));
    assert!(agent
        .steps()
        .iter()
        .any(|s| s == "reboot:NetworkStallReboot"));
    drop(agent);
    api.validate(&tmp.0);
}

/// A node an operator had cordoned before is left cordoned at the end.
#[test]
fn a_node_cordoned_before_stays_cordoned_after() {
    let tmp = TempDir::new();
    let mut c = cluster(
        &[("node-a", false), ("node-b", false), ("node-c", false)],
        vec![],
    );
    c.nodes.get_mut("node-a").unwrap()["spec"]["unschedulable"] = json!(true);
    let api = ApiServer::start(c);
    let agent = Agent::start(
        &api,
        &tmp.0,
        &Settings {
            node: "node-a",
            mode: "cordon",
            window: "3s",
            extra: &[],
        },
    );
    agent.stalls(3);
    wait_for("the proof", Duration::from_secs(30), || {
        agent
            .lines()
            .iter()
            .any(|l| l["type"] == "remediation-proof")
    });
    let node = api.node("node-a");
    assert_eq!(node["spec"]["unschedulable"], true, "{node}");
    assert!(node["metadata"]
        .get("annotations")
        .is_none_or(|a| a.get("netstall.io/remediation").is_none()));
    assert_eq!(api.lease_holder(), None);
    drop(agent);
    api.validate(&tmp.0);
}

/// A healthy node in mode reboot looks at the API once (its own Node, for
/// a remediation under way), then asks nothing more while it stays healthy.
#[test]
fn a_healthy_node_reads_its_node_once_and_then_nothing() {
    let tmp = TempDir::new();
    let api = ApiServer::start(cluster(&[("node-a", false), ("node-b", false)], vec![]));
    let agent = Agent::start(
        &api,
        &tmp.0,
        &Settings {
            node: "node-a",
            mode: "reboot",
            window: "5m",
            extra: &[],
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let log = api.log();
    assert_eq!(log.len(), 1, "{:#?}", summary(&log));
    assert_eq!(
        (log[0].method.as_str(), log[0].path.as_str()),
        ("GET", "/api/v1/nodes/node-a")
    );
    // One stall is not a bad node either.
    agent.stalls(1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(api.log().len(), 1, "{:#?}", summary(&api.log()));
}

/// The binary: `--remediate` starts the remediation (it reads its Node
/// through KUBECONFIG), and without an API config it is one line, exit 2.
#[test]
fn the_agent_binary_remediates_only_when_asked_and_says_why_it_cannot() {
    let tmp = TempDir::new();
    let api = ApiServer::start(cluster(&[("node-a", false)], vec![]));
    let mut child = Command::new(NETSTALL)
        .env("KUBECONFIG", api.kubeconfig(&tmp.0))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(["agent", "--listen", "127.0.0.1:0", "--node-name", "node-a"])
        .args(NO_RECORDER)
        .args([
            "--tracer",
            "false",
            "--remediate",
            "condition",
            "--event-log",
        ])
        .arg(tmp.0.join("agent.jsonl"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let seen = Instant::now() + Duration::from_secs(20);
    while api.log().is_empty() && Instant::now() < seen {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on the PID of the child this test started and has not reaped.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let log = api.log();
    assert_eq!(log.len(), 1, "{:#?}", summary(&log));
    assert_eq!(log[0].path, "/api/v1/nodes/node-a");
    assert!(status.success(), "{status}");

    let out = Command::new(NETSTALL)
        .env("KUBECONFIG", tmp.0.join("missing"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(["agent", "--listen", "127.0.0.1:0", "--tracer", "false"])
        .args(["--remediate", "drain"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--remediate drain"), "{err}");
    for (flag, value) in [
        ("--remediate", "restart"),
        ("--min-healthy", "150%"),
        ("--lease", "netstall"),
    ] {
        let out = Command::new(NETSTALL)
            .args(["agent", "--tracer", "false", flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(value), "{err}");
    }
}

/// The bodies kube-rs's own `Api::evict` sends fail the Eviction schema
/// (`delete_options`, no apiVersion/kind): the agent posts a real Eviction
/// instead. A negative control for the schema check above.
#[test]
fn the_schema_check_can_fail() {
    let tmp = TempDir::new();
    let bad = tmp.0.join("eviction.json");
    std::fs::write(
        &bad,
        r#"{"delete_options":null,"metadata":{"name":"web-1"}}"#,
    )
    .unwrap();
    let out = kubernetes_validate(&[bad.display().to_string()]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut broken_node = node("node-a", true);
    broken_node["status"]["conditions"][1]["status"] = json!(true);
    let broken = tmp.0.join("node.json");
    std::fs::write(&broken, broken_node.to_string()).unwrap();
    let out = kubernetes_validate(&[broken.display().to_string()]);
    assert!(!out.status.success(), "a boolean condition status passed");
}

/// deploy/remediation (a kustomize Component) on the agent's base: renders
/// with `kubectl kustomize`, passes the official schemas, turns remediation
/// on through flags the agent accepts, and grants exactly the RBAC the
/// requests above need.
#[test]
fn the_remediation_component_renders_passes_the_schemas_and_grants_only_what_is_used() {
    let tmp = TempDir::new();
    let copy = |from: &str, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(repo_file(from)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    };
    let base = tmp.0.join("kubernetes");
    copy("deploy/kubernetes", &base);
    if !base.join("kustomization.yaml").exists() {
        let mut files: Vec<String> = std::fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".yaml"))
            .collect();
        files.sort();
        let list: String = files.iter().map(|f| format!("  - {f}\n")).collect();
        std::fs::write(
            base.join("kustomization.yaml"),
            format!("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n{list}"),
        )
        .unwrap();
    }
    copy("deploy/remediation", &tmp.0.join("remediation"));
    let overlay = tmp.0.join("overlay");
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources:\n  - ../kubernetes\ncomponents:\n  - ../remediation\n",
    )
    .unwrap();
    let out = Command::new("kubectl")
        .args(["kustomize", overlay.to_str().unwrap()])
        .output()
        .expect("kubectl (for kustomize)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = tmp.0.join("rendered.yaml");
    std::fs::write(&rendered, &out.stdout).unwrap();
    let check = kubernetes_validate(&[rendered.display().to_string()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let docs = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            rendered.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let docs: Vec<Value> = serde_json::from_slice(&docs.stdout).unwrap();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    // The flags the Component adds are the agent's own, and valid.
    let daemonset = find("DaemonSet", "netstall-agent");
    let args: Vec<String> = daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .filter(|a| a.starts_with("--") && !a.contains("$(") && !a.starts_with("--config="))
        .collect();
    assert!(args.contains(&"--remediate=drain".to_string()), "{args:?}");
    let config = tmp.0.join("agent.toml");
    let configmap = find("ConfigMap", "netstall-agent");
    std::fs::write(&config, configmap["data"]["agent.toml"].as_str().unwrap()).unwrap();
    let out = Command::new(NETSTALL)
        .arg("agent")
        .args(&args)
        .args([
            "--config",
            config.to_str().unwrap(),
            "--print-config",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["remediate"], "drain");
    assert_eq!(printed["reboot_sentinel"], "/host/var/run/reboot-required");
    let mounts = &daemonset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"];
    assert!(mounts
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == "/host/var/run"));

    // RBAC: the verbs the stand-in saw requested, nothing more.
    let rules = |kind: &str| -> Vec<(String, String)> {
        find(kind, "netstall-remediation")["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                let resources = r["resources"].as_array().unwrap().clone();
                let verbs = r["verbs"].as_array().unwrap().clone();
                resources.into_iter().flat_map(move |res| {
                    let verbs = verbs.clone();
                    verbs.into_iter().map(move |v| {
                        (
                            res.as_str().unwrap().to_string(),
                            v.as_str().unwrap().to_string(),
                        )
                    })
                })
            })
            .collect()
    };
    let mut cluster_rules = rules("ClusterRole");
    cluster_rules.sort();
    let expected: Vec<(String, String)> = [
        ("events", "create"),
        ("nodes", "get"),
        ("nodes", "list"),
        ("nodes", "patch"),
        ("nodes/status", "patch"),
        ("pods", "list"),
        ("pods/eviction", "create"),
    ]
    .iter()
    .map(|(r, v)| (r.to_string(), v.to_string()))
    .collect();
    assert_eq!(cluster_rules, expected);
    let mut lease_rules = rules("Role");
    lease_rules.sort();
    assert_eq!(
        lease_rules,
        [
            ("leases", "create"),
            ("leases", "get"),
            ("leases", "update")
        ]
        .iter()
        .map(|(r, v)| (r.to_string(), v.to_string()))
        .collect::<Vec<_>>()
    );
    assert_eq!(
        find("Role", "netstall-remediation")["metadata"]["namespace"],
        "netstall"
    );
}

/// The quick fix first, for real: with real dying memory cgroups (the
/// lab's, pinned by page cache) over the limit and --remediate-memcg, the
/// agent drops the page cache (level 1) and measures the count before and
/// after; nothing is cordoned while no stall follows, and the node is
/// cordoned once stalls continue.
#[test]
fn the_memcg_quick_fix_comes_first_and_stalls_that_continue_escalate() {
    if !privileged("the_memcg_quick_fix_comes_first_and_stalls_that_continue_escalate") {
        return;
    }
    let _lock = MachineLock::acquire();
    let tmp = TempDir::new();
    let prefix = netstall_testkit::unique_prefix();
    struct Clean(String);
    impl Drop for Clean {
        fn drop(&mut self) {
            let _ = netstall(&["lab", "clean", "--prefix", &self.0]);
        }
    }
    let _clean = Clean(prefix.clone());
    let made = netstall(&[
        "--json", "lab", "zombies", "--prefix", &prefix, "--count", "300",
    ]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let host = netstall_cgroups::Host::live();
    let dying = netstall_cgroups::report::memory_count(&host).unwrap().dying;
    assert!(dying >= 300, "only {dying} dying memory cgroups");

    let api = ApiServer::start(cluster(
        &[("node-a", false), ("node-b", false), ("node-c", false)],
        vec![],
    ));
    let agent = Agent::start(
        &api,
        &tmp.0,
        &Settings {
            node: "node-a",
            mode: "cordon",
            window: "5m",
            extra: &[("remediate-memcg", "true"), ("dying-memcg-limit", "100")],
        },
    );
    // What the agent's periodic count would have found.
    agent.state.health.lock().unwrap().dying_memcgs(dying);
    agent.stalls(3);
    wait_for("the quick fix", Duration::from_secs(60), || {
        agent
            .lines()
            .iter()
            .any(|l| l["type"] == "remediation-quick-fix")
    });
    let lines = agent.lines();
    let fix = &lines
        .iter()
        .find(|l| l["type"] == "remediation-quick-fix")
        .unwrap()["remediation"];
    assert_eq!(fix["applied"], true, "{fix}");
    assert_eq!(fix["level"], 1, "{fix}");
    let before = fix["dying_before"].as_u64().unwrap();
    let after = fix["dying_after"].as_u64().unwrap();
    assert!(before >= 300 && after < before, "{fix}");
    eprintln!("quick fix: {}", fix["verdict"]);
    std::thread::sleep(Duration::from_secs(1));
    let w = api.writes();
    assert!(
        w.iter().any(|w| is_event(w, "DropCaches")),
        "{:#?}",
        summary(&w)
    );
    assert!(
        !w.iter().any(|w| is_unschedulable(w, "node-a", json!(true))),
        "no cordon while no stall followed the fix: {:#?}",
        summary(&w)
    );
    let condition = w
        .iter()
        .find(|w| is_condition(w, "node-a", "True"))
        .unwrap();
    assert_eq!(
        condition.body.as_ref().unwrap()["status"]["conditions"][0]["reason"],
        "DyingMemcgStatFlush"
    );
    // The stalls continue: escalate.
    agent.stalls(3);
    wait_for("the cordon", Duration::from_secs(20), || {
        api.node("node-a")["spec"]["unschedulable"] == true
    });
    drop(agent);
    api.validate(&tmp.0);
}

/// End to end with the real kernel: the agent binary's own tracer sees
/// injected 50 ms RX stalls (lab spin on CPU 0, UDP traffic into the lab
/// steered there), its verdict turns the node bad, and it sets
/// `NetworkStall=True` with the stalled CPU in the message; when the stalls
/// have aged out of its window it sets it `False` and proves it.
#[test]
fn real_kernel_stalls_flag_the_node_and_their_end_clears_it() {
    if !privileged("real_kernel_stalls_flag_the_node_and_their_end_clears_it") {
        return;
    }
    let _lock = MachineLock::acquire();
    let tmp = TempDir::new();
    let lab = Lab::up("0");
    let api = ApiServer::start(cluster(&[("node-a", false), ("node-b", false)], vec![]));
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let events = tmp.0.join("agent.jsonl");
    struct Kill(Vec<std::process::Child>);
    impl Drop for Kill {
        fn drop(&mut self) {
            for child in &mut self.0 {
                // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                let _ = child.wait();
            }
        }
    }
    let mut children = Kill(Vec::new());
    children.0.push(
        Command::new("taskset")
            .args(["-c", "1", NETSTALL, "agent", "--node-name", "node-a"])
            .arg("--state-dir")
            .arg(tmp.0.join("state"))
            .args(["--listen", &listen.to_string(), "--stall-threshold", "20ms"])
            .args([
                "--problem-window",
                "8s",
                "--remediate",
                "condition",
                "--event-log",
            ])
            .arg(&events)
            .env("KUBECONFIG", api.kubeconfig(&tmp.0))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the agent's tracer", Duration::from_secs(60), || {
        netstall_agent::http::get(listen, "/healthz", Duration::from_secs(2))
            .is_ok_and(|h| h.contains("\"tracer\":\"running\""))
    });
    children.0.push(
        Command::new(NETSTALL)
            .args(["probe", "--udp", "--port", "30081", "192.168.50.1"])
            .args([
                "--netns",
                &lab.netns("cli"),
                "--cpu",
                "1",
                "-i",
                "2ms",
                "-w",
                "9s",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let spin = netstall(&[
        "lab", "spin", "--cpu", "0", "--ms", "50", "--every", "1s", "-w", "5s",
    ]);
    assert!(
        spin.status.success(),
        "{}",
        String::from_utf8_lossy(&spin.stderr)
    );
    wait_for("NetworkStall=True", Duration::from_secs(20), || {
        api.writes()
            .iter()
            .any(|w| is_condition(w, "node-a", "True"))
    });
    let w = api.writes();
    let flagged = w
        .iter()
        .find(|w| is_condition(w, "node-a", "True"))
        .unwrap();
    let message = flagged.body.as_ref().unwrap()["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("CPU 0, worst stall"), "{message}");
    // The stalls age out of the 8 s window: healthy again.
    wait_for("NetworkStall=False", Duration::from_secs(30), || {
        api.writes()
            .iter()
            .any(|w| is_condition(w, "node-a", "False"))
    });
    wait_for("the proof Event", Duration::from_secs(10), || {
        api.writes()
            .iter()
            .any(|w| is_event(w, "NetworkStallRemediated"))
    });
    let proof: Value = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["type"] == "remediation-proof")
        .expect("a proof line");
    let worst = proof["before"]["worst_stall_ms"].as_f64().unwrap();
    assert!((40.0..=70.0).contains(&worst), "{proof}");
    assert_eq!(proof["cause_gone"], true, "{proof}");
    eprintln!("condition message: {message}\nproof: {proof}");
    assert!(
        api.writes()
            .iter()
            .all(|w| w.path.ends_with("/status") || w.path.ends_with("/events")),
        "mode condition writes the condition and Events only: {:#?}",
        summary(&api.writes())
    );
    drop(children);
    api.validate(&tmp.0);
}
