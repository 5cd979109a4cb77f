//! `kubectl netstall status`, judged without I/O: each node's `NetworkStall`
//! condition (set by node-problem-detector's netstall plugin, or by the
//! agent's remediation) beside its agent's latest verdict (`/healthz`).

use k8s_openapi::api::core::v1::Node;
use netstall_agent::health::{check_verdict, CheckStatus, HealthReport};
use netstall_core::output::Output;
pub use netstall_events::agent::NodeStatus;

/// The node condition netstall reports under.
pub const CONDITION: &str = "NetworkStall";

/// The status of `node`, from its object and its agent's answer.
pub fn node_status(node: &Node, agent: Option<Result<HealthReport, String>>) -> NodeStatus {
    let name = node.metadata.name.clone().unwrap_or_default();
    let condition = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == CONDITION));
    let (agent, agent_problem) = match agent {
        None => ("no agent on this node".to_string(), false),
        Some(Err(e)) => (format!("Unknown: {e}"), false),
        Some(Ok(report)) => {
            let (status, line) = check_verdict(&report);
            (line, status == CheckStatus::Problem)
        }
    };
    let condition_true = condition.is_some_and(|c| c.status == "True");
    NodeStatus {
        node: name,
        condition: condition.map(|c| c.status.clone()),
        condition_message: condition.and_then(|c| c.message.clone()),
        agent,
        problem: condition_true || agent_problem,
    }
}

/// The rows as `node-status` records, or in text as one [`table`].
pub fn print(rows: &[NodeStatus], out: Output) {
    if out.is_json() {
        for row in rows {
            out.json(row.clone());
        }
    } else {
        print!("{}", table(rows));
    }
}

/// The text table: one line per node, the nodes with problems first.
pub fn table(rows: &[NodeStatus]) -> String {
    let mut rows: Vec<&NodeStatus> = rows.iter().collect();
    rows.sort_by(|a, b| b.problem.cmp(&a.problem).then(a.node.cmp(&b.node)));
    let width = rows.iter().map(|r| r.node.len()).max().unwrap_or(0).max(4);
    let mut out = format!("{:<width$}  {:<12}  AGENT\n", "NODE", CONDITION);
    for r in rows {
        let condition = r.condition.as_deref().unwrap_or("-");
        out.push_str(&format!(
            "{:<width$}  {:<12}  {}\n",
            r.node, condition, r.agent
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, condition: Option<(&str, &str)>) -> Node {
        let conditions: Vec<serde_json::Value> = condition
            .into_iter()
            .map(|(status, message)| {
                serde_json::json!({"type": CONDITION, "status": status, "message": message})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    fn report(problems: &[&str]) -> HealthReport {
        serde_json::from_value(serde_json::json!({
            "type": "health", "node": "n", "status": if problems.is_empty() {"ok"} else {"problem"},
            "window_s": 300, "problems": problems, "stalls": 0, "worst_stall_ms": null,
            "peers": 3, "peers_with_episodes": [], "dying_memcgs": 12, "tracer": "running",
        }))
        .unwrap()
    }

    #[test]
    fn a_true_condition_or_an_agent_problem_is_a_problem_and_comes_first() {
        let rows = [
            node_status(
                &node("a-quiet", Some(("False", "no RX stalls"))),
                Some(Ok(report(&[]))),
            ),
            node_status(&node("b-bare", None), None),
            node_status(
                &node("c-stalling", Some(("True", "3 RX stalls"))),
                Some(Err("no answer".into())),
            ),
            node_status(
                &node("d-agent", None),
                Some(Ok(report(&["5 RX stalls over 10 ms"]))),
            ),
        ];
        let problems: Vec<(&str, bool)> =
            rows.iter().map(|r| (r.node.as_str(), r.problem)).collect();
        assert_eq!(
            problems,
            [
                ("a-quiet", false),
                ("b-bare", false),
                ("c-stalling", true),
                ("d-agent", true)
            ]
        );
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NODE"), "{text}");
        assert!(lines[1].starts_with("c-stalling  True"), "{text}");
        assert!(
            lines[2].contains("NetStall: 5 RX stalls over 10 ms"),
            "{text}"
        );
        assert!(
            lines[3].contains("OK: no RX stalls in 300s, 12 dying memcgs"),
            "{text}"
        );
        assert!(
            lines[4].contains("b-bare") && lines[4].contains("no agent"),
            "{text}"
        );
    }
}
