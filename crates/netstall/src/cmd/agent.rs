//! `netstall agent`: the always-on node agent (see `netstall-agent`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use netstall_agent::AgentOptions;
use netstall_core::output::Output;
use netstall_core::shutdown::Shutdown;

#[derive(clap::Args)]
#[command(
    about = "Always-on node agent: RX stall histograms, peer mesh probing, dying cgroups, /metrics and /healthz",
    long_about = "Runs until SIGTERM or Ctrl-C: probes a bounded rendezvous-hashed subset of --peers (ICMP), \
        traces RX stalls in the kernel (eBPF), counts dying memory cgroups (never reading memory.stat), \
        serves Prometheus metrics on /metrics and the node's health on /healthz, and writes a JSON \
        event log (one object per line).\n\n\
        Settings come from --config (TOML, keys named as the flags: `listen = \"0.0.0.0:9977\"`, \
        `probe-rate = 10`, `peers = [\"node2=10.0.0.2\"]`); flags override the file.\n\n\
        Remediation (opt-in, docs/remediation.md): --remediate condition|cordon|drain|reboot sets the \
        NetworkStall node condition on a bad node and, one node at a time (a Lease), cordons, drains \
        and asks the host to reboot, then proves the result; --dry-run only tells what it would do.\n\n\
        Needs CAP_NET_RAW to probe; the tracer needs CAP_BPF, CAP_PERFMON and CAP_SYSLOG.",
    after_help = "Examples:\n  \
        netstall agent --peers node2=10.0.0.2,node3=10.0.0.3\n  \
        netstall agent --config /etc/netstall/agent.toml --node-name \"$NODE_NAME\"\n  \
        netstall agent --config agent.toml --print-config     the settings it would run with\n  \
        netstall agent --node-name node1 --remediate drain --dry-run\n  \
        netstall agent --node-name node1 --remediate reboot --remediate-memcg --probation 10m\n  \
        curl -s 127.0.0.1:9977/metrics | grep ^netstall_"
)]
pub struct Args {
    /// TOML config file; every key is also a flag, and flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Enter this network namespace (from `ip netns`) first: one agent per lab node.
    #[arg(long)]
    netns: Option<String>,
    /// Print the settings in effect as a config file --config reads (--json: a record) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    options: AgentOptions,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let file = match &args.config {
        Some(path) => AgentOptions::from_file(path)?,
        None => AgentOptions::default(),
    };
    let config = args.options.or(file).resolve()?;
    if args.print_config {
        out.emit(config.record());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(ns) = &args.netns {
        netstall_lab::netns::enter(ns)?;
    }
    netstall_agent::run(&config, Shutdown::on_signals()?, |listen| {
        eprintln!("netstall agent: serving /metrics and /healthz on http://{listen}");
    })?;
    Ok(ExitCode::SUCCESS)
}
