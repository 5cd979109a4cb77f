//! deploy/, validated offline: Kubernetes manifests against the official
//! schemas (PyPI kubernetes-validate), Prometheus rules with promtool (syntax
//! and unit tests), the PrometheusRule equal to the plain rules, every
//! Grafana panel query parsed by promtool, the ConfigMap's agent.toml read by
//! the agent itself, and the node-problem-detector plugin config.
//!
//! No Kubernetes API server can run here; the checks are the schemas and the
//! tools, each with a negative control proving it can fail.

mod common;

use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The Kubernetes release the manifests are checked against.
const KUBERNETES: &str = "1.33.0";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (installed by scripts/setup.sh)"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// YAML (every document) as JSON, through PyYAML (kubernetes-validate's dependency).
fn yaml_to_json(path: &Path) -> Value {
    let out = run(
        "python3",
        &[
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            path.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn kubernetes_validate(files: &[PathBuf]) -> Output {
    let mut args = vec!["-m", "kubernetes_validate", "--strict", "-k", KUBERNETES];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    run("python3", &args)
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_file("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn manifests_pass_the_official_kubernetes_schemas() {
    let files = manifests();
    let kinds: Vec<String> = files
        .iter()
        .flat_map(|f| yaml_to_json(f).as_array().unwrap().clone())
        .map(|doc| doc["kind"].as_str().unwrap().to_string())
        .collect();
    for kind in [
        "DaemonSet",
        "Service",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Namespace",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    let out = kubernetes_validate(&files);
    assert!(out.status.success(), "{}", text(&out));

    // Negative control: a port as a string and a misspelt key are caught.
    let tmp = TempDir::new();
    let broken = tmp.0.join("daemonset.yaml");
    let daemonset = std::fs::read_to_string(repo_file("deploy/kubernetes/daemonset.yaml")).unwrap();
    std::fs::write(
        &broken,
        daemonset
            .replace("containerPort: 9977", "containerPort: \"9977\"")
            .replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"),
    )
    .unwrap();
    let out = kubernetes_validate(&[broken]);
    assert!(
        !out.status.success(),
        "a broken DaemonSet passed: {}",
        text(&out)
    );
}

#[test]
fn the_daemonset_asks_for_the_least_privileges_that_work() {
    let docs = yaml_to_json(&repo_file("deploy/kubernetes/daemonset.yaml"));
    let spec = &docs[0]["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    // The token is for one thing: list/watch the agents' own EndpointSlices.
    assert_eq!(spec["automountServiceAccountToken"], true);
    let rbac = yaml_to_json(&repo_file("deploy/kubernetes/rbac.yaml"));
    let rbac = rbac.as_array().unwrap();
    let roles: Vec<&Value> = rbac.iter().filter(|d| d["kind"] == "Role").collect();
    assert_eq!(roles.len(), 1, "one namespaced Role");
    assert!(rbac.iter().all(|d| d["kind"] != "ClusterRole"));
    assert_eq!(
        roles[0]["rules"],
        serde_json::json!([{
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["list", "watch"],
        }])
    );
    assert!(spec.get("hostPID").is_none());
    let security = &spec["containers"][0]["securityContext"];
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let mut added: Vec<&str> = security["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    added.sort();
    assert_eq!(added, ["BPF", "NET_RAW", "PERFMON", "SYSLOG"]);
    assert_eq!(security["privileged"], Value::Null);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    for mount in spec["containers"][0]["volumeMounts"].as_array().unwrap() {
        assert_eq!(mount["readOnly"], true, "{mount}");
    }
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    let rules = repo_file("deploy/prometheus/netstall-rules.yml");
    let out = run("promtool", &["check", "rules", rules.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let tests = repo_file("deploy/prometheus/netstall-rules.test.yml");
    let out = run("promtool", &["test", "rules", tests.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn the_prometheus_rule_holds_the_same_groups() {
    let operator = yaml_to_json(&repo_file("deploy/prometheus-operator/prometheusrule.yaml"));
    let plain = yaml_to_json(&repo_file("deploy/prometheus/netstall-rules.yml"));
    assert_eq!(operator[0]["kind"], "PrometheusRule");
    assert_eq!(operator[0]["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(operator[0]["spec"]["groups"], plain[0]["groups"]);
}

/// Writes each query as a recording rule and runs `promtool check rules`.
fn promtool_parses(queries: &[String]) -> Output {
    let tmp = TempDir::new();
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(
            |(i, expr)| serde_json::json!({"record": format!("dashboard:panel_{i}"), "expr": expr}),
        )
        .collect();
    // JSON is YAML.
    let file = tmp.0.join("dashboard-rules.yml");
    std::fs::write(
        &file,
        serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    run("promtool", &["check", "rules", file.to_str().unwrap()])
}

#[test]
fn every_dashboard_query_parses() {
    let text_ =
        std::fs::read_to_string(repo_file("deploy/grafana/netstall-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text_).unwrap();
    let queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(queries.len() >= 8, "{queries:?}");
    let out = promtool_parses(&queries);
    assert!(out.status.success(), "{}", text(&out));
    let out = promtool_parses(&["sum by (peer (rate(x[1m]))".to_string()]);
    assert!(!out.status.success(), "promtool accepted a broken query");
}

#[test]
fn the_configmap_is_a_valid_agent_config() {
    let tmp = TempDir::new();
    let docs = yaml_to_json(&repo_file("deploy/kubernetes/configmap.yaml"));
    let toml = docs[0]["data"]["agent.toml"].as_str().unwrap();
    let file = tmp.0.join("agent.toml");
    std::fs::write(&file, toml).unwrap();
    let out = run(
        NETSTALL,
        &[
            "agent",
            "--config",
            file.to_str().unwrap(),
            "--print-config",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["listen"], "0.0.0.0:9977");
    assert_eq!(config["peers_kubernetes"], "netstall/netstall-agent");
    assert_eq!(config["peers_dns"], Value::Null);
    assert_eq!(
        (config["max_peers"].as_u64(), config["probe_rate"].as_u64()),
        (Some(10), Some(10))
    );
}

#[test]
fn the_node_problem_detector_plugin_runs_netstall_check() {
    let text_ = std::fs::read_to_string(repo_file(
        "deploy/node-problem-detector/netstall-plugin.json",
    ))
    .unwrap();
    let config: Value = serde_json::from_str(&text_).unwrap();
    assert_eq!(config["plugin"], "custom");
    let condition = config["conditions"][0]["type"].as_str().unwrap();
    let rule = &config["rules"][0];
    assert_eq!(rule["condition"], condition);
    assert_eq!(rule["type"], "permanent");
    assert!(rule["path"].as_str().unwrap().ends_with("/netstall"));
    // The plugin's own arguments parse; with no agent there, the answer is
    // "unknown" (2) on one line, as the plugin protocol wants.
    let mut args: Vec<String> = rule["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args[0], "check");
    let agent = args.iter().position(|a| a == "--agent").unwrap() + 1;
    args[agent] = "127.0.0.1:9".into();
    let out = Command::new(NETSTALL).args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout);
    assert_eq!(line.lines().count(), 1);
    let max = config["pluginConfig"]["max_output_length"]
        .as_u64()
        .unwrap() as usize;
    assert!(line.trim().len() <= max, "{line}");
}
