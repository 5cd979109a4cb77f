//! `kubectl netstall` (this binary run as `kubectl-netstall`) against a
//! stand-in for the Kubernetes API server: no API server can run here, so a
//! loopback HTTP server answers the real kube-rs client as the API server
//! would, and every object the plugin creates is checked against the
//! official schemas (PyPI kubernetes-validate) before it is accepted.
//! The pod itself does not run: its log and states are scripted per test.

mod common;

use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const NODE: &str = "node-a";
const NAMESPACE: &str = "netstall";
const POD: &str = "netstall-doctor-x7k2p";
const REPORT: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"></head>\n<body><h1>netstall doctor</h1></body></html>\n";

/// How the scripted pod behaves.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Scenario {
    /// Pending, then Running; its log is the doctor's output and report;
    /// then it has exited 1 (findings).
    Runs,
    /// Running; its log starts and then hangs (the user presses Ctrl-C).
    Hangs,
    /// Never scheduled.
    Unschedulable,
    /// The node cannot pull the image.
    ImagePullFails,
    /// Pod creation is forbidden (RBAC).
    Forbidden,
}

#[derive(Default)]
struct State {
    /// `METHOD path` of every request.
    requests: Vec<String>,
    /// kubernetes-validate's verdict on each created object.
    validations: Vec<(bool, String)>,
    created: Option<Value>,
    deleted: bool,
    log_opened: bool,
    log_done: bool,
}

struct ApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    done: Arc<AtomicBool>,
    tmp: TempDir,
}

impl ApiServer {
    fn start(scenario: Scenario) -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let done = Arc::new(AtomicBool::new(false));
        let tmp = TempDir::new();
        let (s, d, dir) = (Arc::clone(&state), Arc::clone(&done), tmp.0.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (s, d, dir) = (Arc::clone(&s), Arc::clone(&d), dir.clone());
                std::thread::spawn(move || serve(stream, scenario, &s, &d, &dir));
            }
        });
        ApiServer {
            addr,
            state,
            done,
            tmp,
        }
    }

    fn kubeconfig(&self) -> PathBuf {
        let path = self.tmp.0.join("kubeconfig");
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

    /// `kubectl-netstall args…` (this binary under kubectl's plugin name).
    fn plugin(&self, args: &[&str]) -> Command {
        let link = self.tmp.0.join("kubectl-netstall");
        if !link.exists() {
            std::os::unix::fs::symlink(NETSTALL, &link).unwrap();
        }
        let mut command = Command::new(&link);
        command
            .env("KUBECONFIG", self.kubeconfig())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
    .to_string()
}

fn node() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "resourceVersion": "7"},
        "status": {"conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "NetworkStall", "status": "True", "reason": "RxStallOrDyingMemcgs",
             "message": "NetStall: 4 RX stalls in 300s, worst 51 ms on CPU 0"},
        ]},
    })
}

/// The created pod with the status the scenario has reached.
fn pod_now(created: &Value, scenario: Scenario, gets: usize, log_done: bool) -> Value {
    let mut pod = created.clone();
    pod["metadata"]["name"] = json!(POD);
    pod["metadata"]["uid"] = json!("5b1a4c52-0000-4000-8000-000000000001");
    let waiting = |reason: &str, message: &str| {
        json!([{"name": "doctor", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                "state": {"waiting": {"reason": reason, "message": message}}}])
    };
    pod["status"] = match scenario {
        Scenario::Unschedulable => json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }"}]}),
        Scenario::ImagePullFails => json!({"phase": "Pending", "containerStatuses": waiting(
            "ErrImagePull", "failed to pull image \"localhost/netstall:0.1.0\": not found")}),
        _ if gets <= 1 => {
            json!({"phase": "Pending", "containerStatuses": waiting("ContainerCreating", "")})
        }
        Scenario::Runs if log_done => json!({"phase": "Failed", "containerStatuses": [{
            "name": "doctor", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
        _ => json!({"phase": "Running", "containerStatuses": [{
            "name": "doctor", "ready": true, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"running": {}}}]}),
    };
    pod
}

/// Checks an object the plugin sends against the official schemas.
fn validate(dir: &Path, body: &str) -> (bool, String) {
    let file = dir.join(format!("body-{}.json", netstall_testkit::unique_prefix()));
    std::fs::write(&file, body).unwrap();
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.33.0"])
        .arg(&file)
        .output()
        .expect("kubernetes-validate (scripts/setup.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains("passed"), text)
}

fn serve(
    stream: TcpStream,
    scenario: Scenario,
    state: &Mutex<State>,
    done: &AtomicBool,
    dir: &Path,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut gets = 0;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let mut parts = request_line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        state
            .lock()
            .unwrap()
            .requests
            .push(format!("{method} {target}"));
        let pods = format!("/api/v1/namespaces/{NAMESPACE}/pods");
        let this_pod = format!("{pods}/{POD}");
        let (status, reply) = match (method, path) {
            ("GET", p) if p == format!("/api/v1/nodes/{NODE}") => ("200 OK", node().to_string()),
            ("GET", p) if p.starts_with("/api/v1/nodes/") => (
                "404 Not Found",
                status_body(404, "NotFound", "nodes \"nowhere\" not found"),
            ),
            ("GET", "/api/v1/nodes") => (
                "200 OK",
                json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "9"},
                       "items": [node(), {"metadata": {"name": "node-b"}, "status": {"conditions": []}}]})
                .to_string(),
            ),
            ("POST", p) if p == pods => {
                if scenario == Scenario::Forbidden {
                    (
                        "403 Forbidden",
                        status_body(403, "Forbidden", "pods is forbidden: User \"dev\" cannot create resource \"pods\" in API group \"\" in the namespace \"netstall\""),
                    )
                } else {
                    let created: Value = serde_json::from_str(&body).unwrap();
                    // As the API server does: the name from generateName,
                    // then validation (kubernetes-validate wants a name).
                    let mut named = created.clone();
                    named["metadata"]["name"] = json!(POD);
                    let verdict = validate(dir, &named.to_string());
                    let mut state = state.lock().unwrap();
                    state.validations.push(verdict);
                    state.created = Some(created.clone());
                    ("201 Created", pod_now(&created, scenario, 0, false).to_string())
                }
            }
            ("GET", p) if p == this_pod => {
                gets += 1;
                let state = state.lock().unwrap();
                let created = state.created.clone().unwrap();
                ("200 OK", pod_now(&created, scenario, gets, state.log_done).to_string())
            }
            ("GET", p) if p == format!("{this_pod}/log") => {
                state.lock().unwrap().log_opened = true;
                let _ = write!(writer, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n");
                let _ = writeln!(writer, "netstall doctor: watching every CPU for 2 s");
                let _ = writer.flush();
                if scenario == Scenario::Hangs {
                    while !done.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
                let _ = write!(
                    writer,
                    "verdict: unhealthy: dying-memcg-stat-flush (confidence high)\n{REPORT}report written to /dev/stdout\n"
                );
                state.lock().unwrap().log_done = true;
                return;
            }
            ("DELETE", p) if p == this_pod => {
                let mut state = state.lock().unwrap();
                state.deleted = true;
                let created = state.created.clone().unwrap();
                ("200 OK", pod_now(&created, scenario, 1, false).to_string())
            }
            ("GET", p) if p == pods => (
                "200 OK",
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "9"},
                       "items": [{"metadata": {"name": "netstall-agent-q8v4z", "namespace": NAMESPACE},
                                  "spec": {"nodeName": NODE, "containers": [{"name": "agent"}]}}]})
                .to_string(),
            ),
            ("GET", p) if p == format!("{pods}/netstall-agent-q8v4z:9977/proxy/healthz") => (
                "200 OK",
                json!({"type": "health", "node": NODE, "status": "problem",
                       "problems": ["4 RX stalls in 300s, worst 51 ms on CPU 0"], "tracer": "running",
                       "dying_memcgs": 48211, "stalls": 4, "worst_stall_ms": 51.0, "peers": 2,
                       "peers_with_episodes": [], "window_s": 300})
                .to_string(),
            ),
            _ => (
                "404 Not Found",
                status_body(404, "NotFound", "the stand-in does not serve this"),
            ),
        };
        let _ = write!(
            writer,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        );
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The error line, asserting it is the only stderr line and exit 2.
fn one_line_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(out.status.code(), Some(2), "{}", text(out));
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn doctor_creates_the_pod_streams_it_copies_the_report_and_deletes_it() {
    let api = ApiServer::start(Scenario::Runs);
    let report = api.tmp.0.join("node-a.html");
    let out = api
        .plugin(&["doctor", NODE, "-w", "2s", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    // The doctor's own exit code: 1, findings.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "netstall doctor: watching every CPU for 2 s",
            "verdict: unhealthy: dying-memcg-stat-flush (confidence high)"
        ],
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&report).unwrap(), REPORT);

    let state = api.state();
    let methods: Vec<&str> = state
        .requests
        .iter()
        .map(|r| r.split('?').next().unwrap())
        .collect();
    // Node, create, wait for Running, log, exit code, delete: in that order.
    let first = |what: &str| {
        methods
            .iter()
            .position(|m| *m == what)
            .unwrap_or_else(|| panic!("no {what}: {methods:?}"))
    };
    let get_pod = format!("GET /api/v1/namespaces/{NAMESPACE}/pods/{POD}");
    let order = [
        first(&format!("GET /api/v1/nodes/{NODE}")),
        first(&format!("POST /api/v1/namespaces/{NAMESPACE}/pods")),
        first(&get_pod),
        first(&format!("{get_pod}/log")),
        first(&format!("DELETE /api/v1/namespaces/{NAMESPACE}/pods/{POD}")),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{methods:?}");
    let log = state.requests.iter().find(|r| r.contains("/log?")).unwrap();
    assert!(
        log.contains("follow=true") && log.contains("container=doctor"),
        "{log}"
    );
    assert!(state.deleted);

    // The pod, schema-checked, as the issue asks for it.
    assert_eq!(state.validations.len(), 1);
    let (valid, report) = &state.validations[0];
    assert!(valid, "kubernetes-validate: {report}");
    let pod = state.created.as_ref().unwrap();
    let spec = &pod["spec"];
    assert_eq!(
        spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchFields"][0]["values"],
        json!([NODE])
    );
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["hostPID"], true);
    assert_eq!(spec["restartPolicy"], "Never");
    assert!(spec["activeDeadlineSeconds"].as_u64().unwrap() > 2);
    let container = &spec["containers"][0];
    assert_eq!(container["securityContext"]["privileged"], true);
    assert_eq!(
        container["image"],
        format!("localhost/netstall:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        container["args"],
        json!(["doctor", "--duration", "2000ms", "--report", "/dev/stdout"])
    );
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(
        mounts,
        ["/sys/fs/cgroup", "/sys/kernel/tracing", "/sys/kernel/btf"]
    );
}

/// Sends SIGINT to a child we started, once `ready` holds.
fn interrupt_when(child: &mut Child, ready: impl Fn() -> bool) -> Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "never got there");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on the PID of a child we started and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the plugin did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: stderr.into_bytes(),
    }
}

#[test]
fn doctor_deletes_the_pod_on_ctrl_c() {
    let api = ApiServer::start(Scenario::Hangs);
    let mut child = api
        .plugin(&["doctor", NODE, "-w", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = interrupt_when(&mut child, || api.state().log_opened);
    let err = one_line_error(&out);
    assert!(
        err.contains("interrupted") && err.contains("deleted"),
        "{err}"
    );
    assert!(api.state().deleted, "{:?}", api.state().requests);
}

#[test]
fn doctor_deletes_a_pod_that_does_not_start_in_time() {
    let api = ApiServer::start(Scenario::Unschedulable);
    let started = Instant::now();
    let out = api
        .plugin(&["doctor", NODE, "--start-timeout", "2s"])
        .output()
        .unwrap();
    let err = one_line_error(&out);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        err.contains("did not start on node-a within 2 s")
            && err.contains("untolerated taint")
            && err.contains("--start-timeout"),
        "{err}"
    );
    assert!(api.state().deleted);
}

#[test]
fn doctor_says_when_the_image_cannot_be_pulled() {
    let api = ApiServer::start(Scenario::ImagePullFails);
    let out = api.plugin(&["doctor", NODE]).output().unwrap();
    let err = one_line_error(&out);
    assert!(
        err.contains("cannot pull the image localhost/netstall:")
            && err.contains("ErrImagePull")
            && err.contains("--image"),
        "{err}"
    );
    assert!(api.state().deleted);
}

#[test]
fn doctor_without_the_node_or_the_permission_is_one_line_and_exit_2() {
    let api = ApiServer::start(Scenario::Runs);
    let out = api.plugin(&["doctor", "nowhere"]).output().unwrap();
    let err = one_line_error(&out);
    assert!(err.contains("no node named nowhere"), "{err}");
    assert!(api.state().created.is_none());

    let api = ApiServer::start(Scenario::Forbidden);
    let out = api.plugin(&["doctor", NODE]).output().unwrap();
    let err = one_line_error(&out);
    assert!(
        err.contains("no permission to create pods -n netstall") && err.contains("cannot create"),
        "{err}"
    );
    assert!(
        !api.state().deleted,
        "nothing was created, nothing to delete"
    );

    // No API config at all.
    let out = Command::new(NETSTALL)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("HOME", "/nonexistent")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(["kubectl", "doctor", NODE])
        .output()
        .unwrap();
    let err = one_line_error(&out);
    assert!(err.contains("no Kubernetes API config"), "{err}");
}

#[test]
fn status_lists_conditions_and_the_agents_verdicts() {
    let api = ApiServer::start(Scenario::Runs);
    let out = api.plugin(&["status"]).output().unwrap();
    // A node has a problem: exit 1, as `netstall check`.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[1].starts_with("node-a") && lines[1].contains("True"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("NetStall: 4 RX stalls in 300s, worst 51 ms on CPU 0"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("node-b") && lines[2].contains("no agent"),
        "{stdout}"
    );

    let out = api.plugin(&["status", "--json"]).output().unwrap();
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["type"], "node-status");
    assert_eq!(rows[0]["condition"], "True");
    assert_eq!(rows[0]["problem"], true);
    assert_eq!(rows[1]["problem"], false);
}
