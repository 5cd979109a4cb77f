//! deploy/grafana/netstall-dashboard.json against what the agent really
//! exports: every metric a panel asks for exists, every family the agent
//! exports has a panel, and the dashboard works with nothing but the
//! agents' metrics (no recording rules), per node, at any scrape interval.
//!
//! That the queries parse and run is checked by crates/netstall/tests
//! (promtool, and a real Prometheus scraping real agents).

use std::collections::BTreeSet;

use netstall_agent::metrics::{Metrics, ProtoLabels, ReaderLabels, SourceLabels, StallLabels};
use serde_json::Value;

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/netstall-dashboard.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// (panel title, PromQL) of every query of every panel.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().expect("title").to_string();
            panel["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().expect("expr").to_string()))
        })
        .collect()
}

/// The metric names (samples: `_total`, `_bucket`, ...) a query names:
/// netstall's and the process collector's.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("netstall_") || word.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// A node's metrics with every family holding a series: a stall, a
/// culprit, an episode, kernel latency, dying cgroups, the tracer's state,
/// drops by reason, throttling, the kernel counters' sources.
fn exported_samples() -> BTreeSet<String> {
    let m = Metrics::new("node1");
    let icmp = ProtoLabels { proto: "icmp" };
    m.probe_rtt.get_or_create(&icmp).observe(0.0001);
    m.probes_sent.get_or_create(&icmp).inc();
    m.probes_lost.get_or_create(&icmp).inc();
    m.peers_probed.set(3);
    m.count_episode("node2", "backlog-release");
    m.rx_stall
        .get_or_create(&StallLabels {
            cpu: "0".into(),
            detector: "irqs-off".into(),
        })
        .observe(0.1);
    m.add_culprit_time("cadvisor", "read", 0.1);
    m.tracer_up.get_or_create(&Vec::new()).set(1);
    m.tracer_failures.inc();
    m.ring_drops.inc();
    m.memcg_dying.get_or_create(&Vec::new()).set(5);
    m.memcg_cgroups.get_or_create(&Vec::new()).set(50);
    m.memcg_dying_limit.set(10_000);
    m.kernel_latency.add("rx-backlog", &[(2048, 10)]);
    let reader = ReaderLabels {
        reader: "cadvisor".into(),
    };
    m.stat_flush_seconds.get_or_create(&reader).inc_by(0.2);
    m.stat_flushes.get_or_create(&reader).inc();
    m.packet_drops
        .set_reader(Box::new(|| Ok(vec![("NETFILTER_DROP".into(), 5)])));
    m.cpu_throttled_periods.get_or_create(&Vec::new()).inc();
    m.cpu_throttled_seconds
        .get_or_create(&Vec::new())
        .inc_by(0.1);
    m.cpu_throttled_cgroups.get_or_create(&Vec::new()).set(1);
    m.source_up
        .get_or_create(&SourceLabels {
            source: "packet-drops",
        })
        .set(1);
    m.encode_prometheus()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// A sample name's family: without the histogram and counter suffixes.
fn family(sample: &str) -> &str {
    ["_bucket", "_sum", "_count", "_total"]
        .iter()
        .find_map(|suffix| sample.strip_suffix(suffix))
        .unwrap_or(sample)
}

#[test]
fn every_panel_asks_for_exported_metrics_and_every_family_has_a_panel() {
    let dashboard = dashboard();
    let queries = queries(&dashboard);
    let exported = exported_samples();
    assert!(
        exported.contains("netstall_kernel_latency_seconds_bucket")
            && exported.contains("process_cpu_seconds_total"),
        "{exported:?}"
    );
    let mut asked = BTreeSet::new();
    for (title, expr) in &queries {
        // Recording rules (netstall:...) need extra setup: not here.
        assert!(!expr.contains("netstall:"), "{title}: {expr}");
        for name in metric_names(expr) {
            assert!(
                exported.contains(&name),
                "{title}: {name} is not exported by the agent ({exported:?})"
            );
            asked.insert(family(&name).to_string());
        }
    }
    for sample in &exported {
        assert!(
            asked.contains(family(sample)),
            "no panel shows {} (panels ask for {asked:?})",
            family(sample)
        );
    }
}

#[test]
fn panels_follow_the_node_variable_and_the_scrape_interval() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let node = variables
        .iter()
        .find(|v| v["name"] == "node")
        .expect("a node variable");
    assert_eq!(
        node["query"]["query"],
        "label_values(netstall_agent_info, node)"
    );
    assert_eq!(node["includeAll"], true);
    assert_eq!(node["multi"], true);
    for (title, expr) in queries(&dashboard) {
        // Every range is Grafana's: at least four scrape intervals, or the
        // dashboard's time range. Never a fixed [5m].
        for range in expr.split('[').skip(1) {
            let range = range.split(']').next().unwrap();
            assert!(
                ["$__rate_interval", "$__range"].contains(&range),
                "{title}: fixed range [{range}] in {expr}"
            );
        }
        assert!(
            expr.contains("offset") == expr.contains("offset $__rate_interval"),
            "{title}: {expr}"
        );
        // Per node, except what Prometheus alone knows (its scrape targets).
        if !expr.contains("up{job=") {
            assert!(expr.contains("$node"), "{title} ignores $node: {expr}");
        }
    }
}

#[test]
fn stat_panels_show_zero_rather_than_no_data() {
    let dashboard = dashboard();
    let stats: Vec<&Value> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "stat")
        .collect();
    assert!(
        stats
            .iter()
            .any(|p| p["title"].as_str().unwrap().contains("tracer")),
        "no tracer-down stat"
    );
    for panel in stats {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(
                expr.trim_end().ends_with("or vector(0)"),
                "{}: {expr} shows \"No data\" when nothing is down",
                panel["title"]
            );
        }
    }
}
