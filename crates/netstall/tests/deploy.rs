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
        .filter(|p| !p.ends_with("kustomization.yaml"))
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
        "ResourceQuota",
        "NetworkPolicy",
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
    // The culprit's pid and cgroup are the node's (/proc/PID/cgroup).
    assert_eq!(spec["hostPID"], true);
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
    // Every host mount is read-only but the flight recorder's directory.
    for mount in spec["containers"][0]["volumeMounts"].as_array().unwrap() {
        if mount["mountPath"] == "/var/lib/netstall" {
            assert_eq!(mount["readOnly"], Value::Null, "{mount}");
        } else {
            assert_eq!(mount["readOnly"], true, "{mount}");
        }
    }
    let state: Vec<&Value> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"] == "state")
        .collect();
    assert_eq!(state[0]["hostPath"]["path"], "/var/lib/netstall");
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

/// Where every alert's runbook_url points (docs/runbooks.md, a section each).
const RUNBOOKS: &str = "https://github.com/netstall/netstall/blob/main/docs/runbooks.md";

/// GitHub's anchor of a Markdown heading: lower case, spaces as dashes,
/// other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_names_its_node_has_a_runbook_and_a_promtool_test() {
    let rules = yaml_to_json(&repo_file("deploy/prometheus/netstall-rules.yml"));
    let alerts: Vec<&Value> = rules[0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter(|r| r["alert"].is_string())
        .collect();
    let names: Vec<&str> = alerts
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect();
    for expected in [
        "NetstallAgentDown",
        "NetstallTracerDown",
        "NetstallDyingMemcgsHigh",
    ] {
        assert!(names.contains(&expected), "no {expected} in {names:?}");
    }
    let runbooks = std::fs::read_to_string(repo_file("docs/runbooks.md")).unwrap();
    let sections: Vec<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(anchor)
        .collect();
    // The unit tests' expectations, by alert: (fires somewhere, stays quiet somewhere).
    let tests = yaml_to_json(&repo_file("deploy/prometheus/netstall-rules.test.yml"));
    let cases: Vec<Value> = tests[0]["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().cloned().unwrap_or_default())
        .collect();
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap();
        let url = alert["annotations"]["runbook_url"].as_str().unwrap_or("");
        let section = url
            .strip_prefix(&format!("{RUNBOOKS}#"))
            .unwrap_or_else(|| panic!("{name}: runbook_url {url:?} is not in {RUNBOOKS}"));
        assert!(
            sections.iter().any(|s| s == section),
            "{name}: docs/runbooks.md has no section #{section} ({sections:?})"
        );
        assert!(alert["labels"]["severity"].is_string(), "{name}");
        // Its expression gives the node a label of its own.
        let expr = alert["expr"].as_str().unwrap();
        assert!(
            expr.contains("\"node\"") || expr.contains("(node)"),
            "{name}: {expr}"
        );
        let of_alert: Vec<&Value> = cases.iter().filter(|c| c["alertname"] == name).collect();
        let fired: Vec<&Value> = of_alert
            .iter()
            .flat_map(|c| c["exp_alerts"].as_array().unwrap())
            .collect();
        assert!(!fired.is_empty(), "{name}: no promtool test where it fires");
        assert!(
            of_alert
                .iter()
                .any(|c| c["exp_alerts"].as_array().unwrap().is_empty()),
            "{name}: no promtool test where it stays quiet"
        );
        assert!(
            fired.iter().any(|a| a["exp_labels"]["node"].is_string()),
            "{name}: no test names the node"
        );
        for a in &fired {
            assert_eq!(a["exp_annotations"]["runbook_url"], url, "{name}");
        }
    }
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
    // What the dashboard's JSON holds, and which metrics it asks for, is
    // checked against the agent's real exposition in
    // crates/netstall-agent/tests/dashboard.rs.
    let queries = dashboard_queries();
    assert!(queries.len() >= 18, "{queries:?}");
    let out = promtool_parses(&queries);
    assert!(out.status.success(), "{}", text(&out));
    let out = promtool_parses(&["sum by (peer (rate(x[1m]))".to_string()]);
    assert!(!out.status.success(), "promtool accepted a broken query");
}

/// The NetworkPolicy example guards the agent's pods and port: Prometheus
/// on the port the agent serves, the nodes on everything (ICMP probes).
#[test]
fn the_network_policy_lets_in_prometheus_on_the_agents_port_and_the_nodes() {
    let policy = &yaml_to_json(&repo_file("deploy/kubernetes/networkpolicy.yaml"))[0];
    let daemonset = &yaml_to_json(&repo_file("deploy/kubernetes/daemonset.yaml"))[0];
    assert_eq!(
        policy["metadata"]["namespace"],
        daemonset["metadata"]["namespace"]
    );
    let labels = &daemonset["spec"]["template"]["metadata"]["labels"];
    for (key, value) in policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&labels[key], value, "the policy selects the agent's pods");
    }
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");
    // Prometheus: the container's named port, which is the port the
    // ConfigMap's agent listens on.
    let port = &daemonset["spec"]["template"]["spec"]["containers"][0]["ports"][0];
    assert_eq!(
        rules[0]["ports"],
        serde_json::json!([{"port": port["name"], "protocol": "TCP"}])
    );
    let config = &yaml_to_json(&repo_file("deploy/kubernetes/configmap.yaml"))[0];
    let listen = format!(":{}\"", port["containerPort"]);
    assert!(config["data"]["agent.toml"]
        .as_str()
        .unwrap()
        .contains(&listen));
    assert!(rules[0]["from"][0]["podSelector"].is_object());
    // The nodes: no ports (ICMP cannot be named), from a CIDR.
    assert_eq!(rules[1]["ports"], Value::Null);
    assert!(rules[1]["from"][0]["ipBlock"]["cidr"].is_string());
    // An example: the base does not apply it unedited.
    let base = std::fs::read_to_string(repo_file("deploy/kubernetes/kustomization.yaml")).unwrap();
    assert!(!base.contains("networkpolicy.yaml"));
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
            "--json",
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

/// The overlays a cluster admin applies (`kubectl apply -k deploy/overlays/X`).
const OVERLAYS: [&str; 3] = ["agent", "prometheus-operator", "node-problem-detector"];

/// The Prometheus Operator's kinds: no official schema to check them against.
const CUSTOM_KINDS: [&str; 2] = ["PodMonitor", "PrometheusRule"];

/// `kubectl kustomize deploy/overlays/NAME`, written to a file in `tmp`.
fn render(tmp: &TempDir, overlay: &str) -> PathBuf {
    let dir = repo_file(&format!("deploy/overlays/{overlay}"));
    let out = run("kubectl", &["kustomize", dir.to_str().unwrap()]);
    assert!(out.status.success(), "kustomize {overlay}: {}", text(&out));
    let file = tmp.0.join(format!("{overlay}.yaml"));
    std::fs::write(&file, &out.stdout).unwrap();
    file
}

fn of_kind<'a>(docs: &'a Value, kind: &str) -> Vec<&'a Value> {
    docs.as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == kind)
        .collect()
}

#[test]
fn every_overlay_renders_and_passes_the_official_schemas() {
    let tmp = TempDir::new();
    for overlay in OVERLAYS {
        let file = render(&tmp, overlay);
        let out = kubernetes_validate(std::slice::from_ref(&file));
        assert!(out.status.success(), "{overlay}: {}", text(&out));
        // Every object was checked, but for the Operator's own kinds.
        let report = text(&out);
        for line in report
            .lines()
            .filter(|l| l.contains("Couldn't find schema"))
        {
            assert!(
                CUSTOM_KINDS
                    .iter()
                    .any(|k| line.contains(&format!("kind {k} "))),
                "{overlay}: {line}"
            );
        }
        let docs = yaml_to_json(&file);
        let checked = report.matches(" passed for resource ").count();
        let custom = docs
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| CUSTOM_KINDS.contains(&d["kind"].as_str().unwrap()))
            .count();
        assert_eq!(checked + custom, docs.as_array().unwrap().len(), "{report}");

        // The netstall image is the one scripts/build-image.sh makes; every
        // DaemonSet runs on Linux nodes only, and a pod of the critical
        // priority class has the quota that admits it (GKE).
        let version = env!("CARGO_PKG_VERSION");
        let quota = of_kind(&docs, "ResourceQuota");
        assert_eq!(quota.len(), 1, "{overlay}");
        let quota_classes = &quota[0]["spec"]["scopeSelector"]["matchExpressions"][0];
        assert_eq!(quota_classes["scopeName"], "PriorityClass");
        for ds in of_kind(&docs, "DaemonSet") {
            let spec = &ds["spec"]["template"]["spec"];
            assert_eq!(spec["nodeSelector"]["kubernetes.io/os"], "linux", "{ds}");
            let class = &spec["priorityClassName"];
            assert!(
                quota_classes["values"].as_array().unwrap().contains(class),
                "{class} is not in the quota"
            );
            let containers = spec["containers"]
                .as_array()
                .unwrap()
                .iter()
                .chain(spec["initContainers"].as_array().into_iter().flatten());
            for image in containers.map(|c| c["image"].as_str().unwrap()) {
                if image.contains("netstall") {
                    assert_eq!(image, format!("localhost/netstall:{version}"), "{overlay}");
                }
            }
        }
    }

    // Negative control: a misspelt key in the rendered output fails.
    let file = render(&tmp, "agent");
    let broken = std::fs::read_to_string(&file)
        .unwrap()
        .replace("hostNetwork:", "hostNetworking:");
    std::fs::write(&file, broken).unwrap();
    let out = kubernetes_validate(&[file]);
    assert!(!out.status.success(), "{}", text(&out));
}

#[test]
fn the_agent_reads_the_rendered_configmap() {
    let tmp = TempDir::new();
    let docs = yaml_to_json(&render(&tmp, "agent"));
    let configmap = of_kind(&docs, "ConfigMap");
    let daemonset = of_kind(&docs, "DaemonSet");
    // The DaemonSet mounts that ConfigMap where its --config points.
    let spec = &daemonset[0]["spec"]["template"]["spec"];
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == configmap[0]["metadata"]["name"])
        .expect("the ConfigMap is a volume");
    let mount = spec["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap();
    let args: Vec<&str> = spec["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let key = "agent.toml";
    assert!(
        args.contains(&format!("--config={}/{key}", mount["mountPath"].as_str().unwrap()).as_str()),
        "{args:?}"
    );
    let file = tmp.0.join(key);
    std::fs::write(&file, configmap[0]["data"][key].as_str().unwrap()).unwrap();
    let out = run(
        NETSTALL,
        &[
            "agent",
            "--config",
            file.to_str().unwrap(),
            "--print-config",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["listen"], "0.0.0.0:9977");
}

#[test]
fn the_prometheus_operator_overlay_is_selected_by_kube_prometheus_stack() {
    let tmp = TempDir::new();
    let docs = yaml_to_json(&render(&tmp, "prometheus-operator"));
    for kind in CUSTOM_KINDS {
        let objects = of_kind(&docs, kind);
        assert_eq!(objects.len(), 1, "{kind}");
        assert_eq!(objects[0]["apiVersion"], "monitoring.coreos.com/v1");
        // kube-prometheus-stack's default podMonitorSelector / ruleSelector.
        assert_eq!(
            objects[0]["metadata"]["labels"]["release"],
            "kube-prometheus-stack"
        );
    }
    let monitor = &of_kind(&docs, "PodMonitor")[0]["spec"];
    let daemonset = of_kind(&docs, "DaemonSet")[0];
    assert_eq!(
        monitor["selector"]["matchLabels"],
        daemonset["spec"]["template"]["metadata"]["labels"]
    );
    let port = &monitor["podMetricsEndpoints"][0]["port"];
    let ports = &daemonset["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert!(
        ports.as_array().unwrap().iter().any(|p| &p["name"] == port),
        "{port} {ports}"
    );
    // Every series, `up` included, carries the node's name (NetstallAgentDown).
    assert_eq!(
        monitor["podMetricsEndpoints"][0]["relabelings"],
        serde_json::json!([{
            "sourceLabels": ["__meta_kubernetes_pod_node_name"],
            "targetLabel": "node",
        }])
    );
}

#[test]
fn the_node_problem_detector_overlay_runs_netstall_check_from_the_image() {
    let tmp = TempDir::new();
    let docs = yaml_to_json(&render(&tmp, "node-problem-detector"));
    let npd = of_kind(&docs, "DaemonSet")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "netstall-node-problem-detector")
        .expect("node-problem-detector's DaemonSet");
    let spec = &npd["spec"]["template"]["spec"];
    // The plugin reaches the node's agent on 127.0.0.1.
    assert_eq!(spec["hostNetwork"], true);
    let config_map = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| {
            c["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("netstall-npd-config")
        })
        .unwrap();
    let plugin: Value =
        serde_json::from_str(config_map["data"]["netstall-plugin.json"].as_str().unwrap()).unwrap();
    let plugin_path = plugin["rules"][0]["path"].as_str().unwrap();
    let container = &spec["containers"][0];
    let command: Vec<&str> = container["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap();
    assert!(
        command.contains(
            &format!(
                "--config.custom-plugin-monitor={}/netstall-plugin.json",
                config_mount["mountPath"].as_str().unwrap()
            )
            .as_str()
        ),
        "{command:?}"
    );
    // The init container copies the binary into the volume mounted at the
    // plugin's path.
    let plugin_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == plugin_path)
        .expect("the plugin's path is mounted");
    let init = &spec["initContainers"][0];
    let init_mount = &init["volumeMounts"][0];
    assert_eq!(init_mount["name"], plugin_mount["name"]);
    assert_eq!(
        init["args"],
        serde_json::json!([
            "copy-binary",
            format!(
                "{}/{}",
                init_mount["mountPath"].as_str().unwrap(),
                plugin_mount["subPath"].as_str().unwrap()
            )
        ])
    );
    // And that copy runs: `netstall copy-binary` makes a working netstall.
    let copy = tmp.0.join("netstall");
    let out = run(NETSTALL, &["copy-binary", copy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(copy.to_str().unwrap(), &["--version"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(NETSTALL, &["copy-binary", "/nonexistent/dir/netstall"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );
}
