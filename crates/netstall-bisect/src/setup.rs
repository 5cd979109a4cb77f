//! From what the user asked for (flags, perhaps a lab) to a running
//! experiment: which targets, from which namespaces, and the analysis of
//! the outcome. The CLI only parses flags into a [`Request`].

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use netstall_core::privilege::{self, Capability};
use netstall_lab::topology::{LabStatus, Role};

use crate::analysis::{Analysis, Settings};
use crate::plan::{OutsideView, Targets, Topology};
use crate::run::RunConfig;

/// SYNs to a node IP go here unless told otherwise: the kubelet listens on
/// every node (and a closed port's RST answers the probe just as well).
pub const DEFAULT_NODE_PORT: u16 = 10250;
/// TCP port of `--pod IP` without a port.
pub const DEFAULT_POD_PORT: u16 = 80;
/// Every path keeps its RTTs for the quantile intervals: the duration is
/// capped so memory stays bounded (10 min at 10 ms: 60k values per path).
pub const MAX_DURATION: Duration = Duration::from_secs(600);

/// A probing duration no longer than [`MAX_DURATION`] (`-w`).
pub fn parse_duration(text: &str) -> Result<Duration> {
    let d = netstall_core::duration::parse_nonzero(text).map_err(anyhow::Error::msg)?;
    if d > MAX_DURATION {
        bail!("-w {text} is longer than bisect's limit of 10m");
    }
    Ok(d)
}

/// A confidence level strictly between 0.5 and 1 (`--confidence`).
pub fn parse_confidence(text: &str) -> Result<f64> {
    match text.parse::<f64>() {
        Ok(c) if c > 0.5 && c < 1.0 => Ok(c),
        _ => bail!("invalid confidence '{text}': use a number between 0.5 and 1, e.g. 0.99"),
    }
}

/// What the user asked to probe, as given.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub nodeport: Option<(Ipv4Addr, u16)>,
    pub pod: Option<(Ipv4Addr, u16)>,
    pub node: Option<Ipv4Addr>,
    pub node_tcp_port: Option<u16>,
    /// The second vantage point's namespace.
    pub from_host: Option<String>,
    pub from_nodeport: Option<(Ipv4Addr, u16)>,
    /// The client's namespace.
    pub netns: Option<String>,
    /// A lab (`netstall lab up --prefix PREFIX`) that fills what is not given.
    pub lab: Option<String>,
}

/// What to probe from where, once the request and the lab are combined.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub targets: Targets,
    pub outside: Option<OutsideView>,
    pub topology: Topology,
    pub client_netns: Option<String>,
    pub outside_netns: Option<String>,
}

/// The plan for `request`: reads the lab's state if one is named, and
/// checks that the namespaces exist.
pub fn plan(request: &Request) -> Result<Plan> {
    let lab = request
        .lab
        .as_deref()
        .map(netstall_lab::topology::status)
        .transpose()?;
    let plan = plan_with_lab(request, lab.as_ref())?;
    for netns in [&plan.client_netns, &plan.outside_netns]
        .into_iter()
        .flatten()
    {
        if !netstall_lab::netns::exists(netns) {
            bail!("no network namespace '{netns}' (see `ip netns list`)");
        }
    }
    Ok(plan)
}

/// The plan for `request` given the lab's state (no I/O): what the flags
/// give wins, the lab fills the rest.
pub fn plan_with_lab(request: &Request, lab: Option<&LabStatus>) -> Result<Plan> {
    let mut targets = Targets {
        nodeport: request.nodeport,
        pod: request.pod,
        node: request.node,
        node_port: request.node_tcp_port.unwrap_or(DEFAULT_NODE_PORT),
    };
    let mut from_nodeport = request.from_nodeport;
    let mut client_netns = request.netns.clone();
    if let Some(lab) = lab {
        let pod_tcp = lab.pod.tcp;
        targets.nodeport = targets
            .nodeport
            .or(Some((addr(&lab.nodeport.addr)?, lab.nodeport.tcp)));
        targets.pod = targets.pod.or(Some((addr(&lab.pod.addr)?, pod_tcp)));
        targets.node = targets
            .node
            .or(Some(addr_near(lab, Role::Node2, Role::Outside)?));
        // Every lab host runs the responder on the pod's port.
        targets.node_port = request.node_tcp_port.unwrap_or(pod_tcp);
        client_netns = client_netns.or(Some(lab.netns(Role::Client).to_string()));
        if request.from_host.as_deref() == Some(lab.netns(Role::Outside)) {
            // The outside host reaches node1 on the underlay, not at the NodePort's address.
            let node1 = addr_near(lab, Role::Node1, Role::Outside)?;
            from_nodeport = from_nodeport.or(Some((node1, lab.nodeport.tcp)));
        }
    }
    if targets.nodeport.is_none() && targets.pod.is_none() && targets.node.is_none() {
        bail!("nothing to probe: give --nodeport, --pod and/or --node (or --lab PREFIX)");
    }
    Ok(Plan {
        outside: request.from_host.as_ref().map(|_| OutsideView {
            nodeport: from_nodeport,
        }),
        topology: if lab.is_some() {
            Topology::Lab
        } else {
            Topology::Cluster
        },
        targets,
        client_netns,
        outside_netns: request.from_host.clone(),
    })
}

fn addr(text: &str) -> Result<Ipv4Addr> {
    text.parse()
        .with_context(|| format!("the lab's state has a bad address '{text}'"))
}

/// The address of `role` on the same /24 as `near`'s first address.
fn addr_near(lab: &LabStatus, role: Role, near: Role) -> Result<Ipv4Addr> {
    let host = |role| lab.hosts.iter().find(|h| h.role == role);
    let subnet = |a: Ipv4Addr| a.octets()[..3].to_vec();
    let near = host(near)
        .and_then(|h| h.addrs.first())
        .map(|a| addr(a))
        .transpose()?
        .context("the lab's state lacks the outside host")?;
    host(role)
        .into_iter()
        .flat_map(|h| h.addrs.iter())
        .filter_map(|a| a.parse::<Ipv4Addr>().ok())
        .find(|a| subnet(*a) == subnet(near))
        .with_context(|| format!("the lab's state has no underlay address for {role:?}"))
}

/// [`experiment`], saying on stderr what it probes, then emitting the run.
pub fn experiment_printed(
    plan: &Plan,
    config: RunConfig,
    settings: &Settings,
    out: netstall_core::output::Output,
) -> Result<()> {
    let (interval, duration, flows) = (config.interval, config.duration, config.flows);
    let analysis = experiment(plan, config, settings, |paths| {
        out.progress(format!(
            "bisect: probing {paths} paths for {duration:?}, one probe every {interval:?} per path, {flows} flow(s) each"
        ))
    })?;
    out.emit(netstall_events::bisect::BisectRun {
        interval_us: interval.as_secs_f64() * 1e6,
        duration_s: duration.as_secs_f64(),
        flows,
        confidence: settings.confidence,
        analysis,
    });
    Ok(())
}

/// Probes every path of `plan` (checking the privileges it needs first)
/// and analyses the outcome. `progress` hears what is about to run.
pub fn experiment(
    plan: &Plan,
    config: RunConfig,
    settings: &Settings,
    progress: impl FnOnce(usize),
) -> Result<Analysis> {
    let mut needed = vec![Capability::NetRaw];
    if plan.client_netns.is_some() || plan.outside_netns.is_some() {
        needed.push(Capability::SysAdmin);
    }
    privilege::require(&needed, "bisect (raw TCP SYN and ICMP probes, namespaces)")?;
    if let Some(cpu) = config.cpu {
        netstall_core::cpu::check_online(&[cpu])?;
    }
    let paths = crate::matrix(&plan.targets, plan.outside.as_ref(), plan.topology);
    let config = RunConfig {
        client_netns: plan.client_netns.clone(),
        outside_netns: plan.outside_netns.clone(),
        ..config
    };
    progress(paths.len());
    let outcomes = crate::run(&paths, &config);
    if outcomes.iter().all(|o| o.unreachable.is_some()) {
        let reason = outcomes
            .first()
            .and_then(|o| o.unreachable.clone())
            .unwrap_or_default();
        bail!("no path could be probed: {reason}");
    }
    Ok(crate::analyze(&outcomes, settings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstall_lab::topology::{Endpoint, Host};

    fn lab() -> LabStatus {
        let host = |role, netns: &str, addrs: &[&str]| Host {
            role,
            netns: netns.into(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            rx_cpus: vec![],
        };
        LabStatus {
            prefix: "t".into(),
            rx_cpu: 0,
            rx_cpus: vec![0],
            hosts: vec![
                host(Role::Client, "t-cli", &["10.1.0.2"]),
                host(Role::Node1, "t-n1", &["10.1.0.1", "10.2.0.1"]),
                host(Role::Node2, "t-n2", &["10.2.0.2", "10.3.0.1"]),
                host(Role::Pod, "t-pod", &["10.244.1.2"]),
                host(Role::Outside, "t-out", &["10.2.0.9"]),
            ],
            nodeport: Endpoint {
                addr: "10.1.0.1".into(),
                tcp: 30080,
                udp: 30081,
            },
            pod: Endpoint {
                addr: "10.244.1.2".into(),
                tcp: 8080,
                udp: 8081,
            },
            responders: vec![],
        }
    }

    #[test]
    fn a_lab_fills_every_target_and_the_client_namespace() {
        let plan = plan_with_lab(&Request::default(), Some(&lab())).unwrap();
        assert_eq!(plan.topology, Topology::Lab);
        assert_eq!(
            plan.targets.nodeport,
            Some((Ipv4Addr::new(10, 1, 0, 1), 30080))
        );
        assert_eq!(plan.targets.pod, Some((Ipv4Addr::new(10, 244, 1, 2), 8080)));
        // node2's address on the outside host's /24 (the underlay).
        assert_eq!(plan.targets.node, Some(Ipv4Addr::new(10, 2, 0, 2)));
        assert_eq!(
            plan.targets.node_port, 8080,
            "the lab's responders listen there"
        );
        assert_eq!(plan.client_netns.as_deref(), Some("t-cli"));
        assert_eq!(plan.outside, None);
    }

    #[test]
    fn flags_win_over_the_lab_and_the_outside_host_reaches_node1_on_the_underlay() {
        let request = Request {
            pod: Some((Ipv4Addr::new(192, 0, 2, 7), 80)),
            netns: Some("mine".into()),
            from_host: Some("t-out".into()),
            ..Request::default()
        };
        let plan = plan_with_lab(&request, Some(&lab())).unwrap();
        assert_eq!(plan.targets.pod, Some((Ipv4Addr::new(192, 0, 2, 7), 80)));
        assert_eq!(plan.client_netns.as_deref(), Some("mine"));
        assert_eq!(plan.outside_netns.as_deref(), Some("t-out"));
        assert_eq!(
            plan.outside.unwrap().nodeport,
            Some((Ipv4Addr::new(10, 2, 0, 1), 30080))
        );
    }

    #[test]
    fn without_a_lab_the_flags_are_the_plan_and_nothing_is_an_error() {
        let request = Request {
            node: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..Request::default()
        };
        let plan = plan_with_lab(&request, None).unwrap();
        assert_eq!(plan.topology, Topology::Cluster);
        assert_eq!(plan.targets.node_port, DEFAULT_NODE_PORT);
        assert_eq!(plan.client_netns, None);
        let err = plan_with_lab(&Request::default(), None).unwrap_err();
        assert!(err.to_string().starts_with("nothing to probe"), "{err}");
    }

    #[test]
    fn a_lab_without_an_outside_host_is_a_one_line_error() {
        let mut lab = lab();
        lab.hosts.retain(|h| h.role != Role::Outside);
        let err = plan_with_lab(&Request::default(), Some(&lab)).unwrap_err();
        assert_eq!(err.to_string(), "the lab's state lacks the outside host");
    }

    #[test]
    fn duration_and_confidence_are_bounded() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert!(parse_duration("11m")
            .unwrap_err()
            .to_string()
            .contains("10m"));
        assert_eq!(parse_confidence("0.99").unwrap(), 0.99);
        for bad in ["0.5", "1", "x"] {
            assert!(parse_confidence(bad).is_err(), "{bad}");
        }
    }
}
