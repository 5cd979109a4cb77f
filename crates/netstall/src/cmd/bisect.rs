//! `netstall bisect`: probe the NodePort, the pod and the node IPs at once and
//! name the layer that adds stalls.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use netstall_bisect::plan::{parse_addr_port, parse_host_port};
use netstall_bisect::setup::{self, parse_confidence, parse_duration, DEFAULT_POD_PORT};
use netstall_bisect::{RunConfig, Settings};
use netstall_core::duration;
use netstall_core::output::Output;

#[derive(clap::Args)]
#[command(
    about = "The layer-by-layer experiment, automated: NodePort vs pod IP vs node IP, TCP vs ICMP, sender vs receiver",
    long_about = "Probes every applicable path at once, with the same interval and duration: TCP SYN to the \
        NodePort (NAT + overlay), TCP and ICMP to the pod IP (overlay), to the pod's node IP (node2, no \
        overlay) and to the NodePort's node (node1 only), each TCP path over several flows. Then compares \
        their stall episodes (Poisson intervals and tests) and tails (p99/p99.9 with order-statistic \
        intervals) and prints a table and a verdict: which layer adds stalls (nat, overlay, host-rx on a \
        node, the network, or none), per flow (RX queue/CPU hashing) or per host, and sender or receiver \
        side. A layer is blamed only when the difference is significant.\n\n\
        --from-host adds a second vantage point (a network namespace outside the cluster). --lab PREFIX \
        fills every target from `netstall lab status`.\n\n\
        Needs CAP_NET_RAW (raw TCP SYN and ICMP), and CAP_SYS_ADMIN with --netns or --from-host.",
    after_help = "Examples:\n  \
        sudo netstall bisect --lab nst                     every path of `netstall lab up`, 30 s\n  \
        sudo netstall bisect --nodeport 10.0.0.5:30080 --pod 10.244.1.7:8080 --node 10.0.0.6 -w 1m\n  \
        sudo netstall bisect --lab nst --json | jq 'select(.type==\"bisect\") | .verdict'"
)]
pub struct Args {
    /// The NodePort, HOST:PORT (HOST is the node that receives it: node1).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    nodeport: Option<(Ipv4Addr, u16)>,
    /// The pod, IP[:PORT] (TCP port 80 by default).
    #[arg(long, value_name = "IP[:PORT]", value_parser = |s: &str| parse_addr_port(s, DEFAULT_POD_PORT))]
    pod: Option<(Ipv4Addr, u16)>,
    /// The pod's node IP (node2).
    #[arg(long, value_name = "IP", value_parser = |s: &str| netstall_probe::resolve(s))]
    node: Option<Ipv4Addr>,
    /// TCP port for SYNs to the node IPs (an RST from a closed port answers too).
    #[arg(long, value_name = "PORT")]
    node_tcp_port: Option<u16>,
    /// Second vantage point: probe the same targets from this network namespace (a host outside the cluster).
    #[arg(long, value_name = "NETNS")]
    from_host: Option<String>,
    /// The NodePort as the second vantage point reaches it (default: --nodeport).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port, requires = "from_host")]
    from_nodeport: Option<(Ipv4Addr, u16)>,
    /// Probe from this named network namespace (the client).
    #[arg(long, value_name = "NETNS")]
    netns: Option<String>,
    /// Pin every prober to this CPU (keep them off the CPU you suspect).
    #[arg(long)]
    cpu: Option<u32>,
    /// Fill the targets and the client's namespace from this lab (`netstall lab up --prefix PREFIX`).
    #[arg(long, value_name = "PREFIX")]
    lab: Option<String>,
    /// Time between probes on each path.
    #[arg(short = 'i', long, default_value = "10ms", value_parser = duration::parse_nonzero)]
    interval: Duration,
    /// How long every path is probed (at most 10m: an experiment, not a monitor).
    #[arg(short = 'w', long = "duration", default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Flows per path: TCP source ports (spread over RX queues/CPUs), ICMP identifiers.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    flows: u16,
    /// How long to wait for a reply before calling a probe lost.
    #[arg(long, default_value = "1s", value_parser = duration::parse_nonzero)]
    timeout: Duration,
    /// Confidence of every test and interval.
    #[arg(long, default_value_t = 0.99, value_parser = parse_confidence)]
    confidence: f64,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let plan = setup::plan(&setup::Request {
        nodeport: args.nodeport,
        pod: args.pod,
        node: args.node,
        node_tcp_port: args.node_tcp_port,
        from_host: args.from_host.clone(),
        from_nodeport: args.from_nodeport,
        netns: args.netns.clone(),
        lab: args.lab.clone(),
    })?;
    let config = RunConfig {
        client_netns: None,
        outside_netns: None,
        cpu: args.cpu,
        interval: args.interval,
        duration: args.duration,
        flows: args.flows,
        timeout: args.timeout,
        stop: None,
    };
    let settings = Settings {
        confidence: args.confidence,
        ..Settings::default()
    };
    setup::experiment_printed(&plan, config, &settings, out)?;
    Ok(ExitCode::SUCCESS)
}
