//! `netstall lab`: the incident lab and its injectors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use netstall_core::duration;
use netstall_core::output::Output;
use netstall_events::lab::LabDown;
use netstall_lab::{clean, inject, poller, throttle, topology, zombies};

const DEFAULT_PREFIX: &str = "nst";

#[derive(clap::Args)]
#[command(
    about = "Build, inspect and break the incident lab",
    long_about = "The story's mini-Kubernetes path in network namespaces:\n\n  \
        client -> node1 (nftables DNAT NodePort 30080/tcp 30081/udp + masquerade)\n         \
        -> VXLAN overlay (UDP 8472) -> node2 -> pod, plus an outside host on node2's underlay.\n\n\
        Node RX is steered to --rx-cpu with RPS. Injectors reproduce the incident for real:\n\
        dying memory cgroups (zombies), a cadvisor-like memory.stat reader (poller), and a\n\
        test-only BPF busy-wait in a softirq (spin). All need root.",
    after_help = "Examples:\n  \
        sudo netstall lab up --rx-cpu 0\n  \
        netstall lab status --json\n  \
        sudo netstall lab zombies --count 20000\n  \
        sudo netstall lab poller --cpu 0 -w 60s\n  \
        sudo netstall lab spin --cpu 0 --ms 50 --every 1s -w 30s\n  \
        sudo netstall lab drops --rate 10 -w 60s\n  \
        sudo netstall lab throttle -w 60s\n  \
        sudo netstall lab backlog -w 60s\n  \
        sudo netstall lab clean && sudo netstall lab down"
)]
pub struct Args {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(clap::Args)]
struct PrefixArg {
    /// Name prefix of the lab's namespaces and cgroups (1-12 lowercase letters/digits).
    #[arg(long, default_value = DEFAULT_PREFIX)]
    prefix: String,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build the lab (error if a lab with this prefix exists).
    #[command(after_help = "Examples:\n  \
        sudo netstall lab up                        RX of both nodes on CPU 0\n  \
        sudo netstall lab up --prefix t1 --rx-cpu 0-1")]
    Up {
        #[command(flatten)]
        prefix: PrefixArg,
        /// CPU(s) the nodes' RX processing is steered to with RPS, e.g. 0 or 0-1.
        #[arg(long, default_value = "0")]
        rx_cpu: String,
    },
    /// Remove the lab: responders, namespaces, links, routes and rules.
    #[command(after_help = "Examples:\n  \
        sudo netstall lab down\n  \
        sudo netstall lab down --prefix t1")]
    Down {
        #[command(flatten)]
        prefix: PrefixArg,
    },
    /// Print the lab's hosts, addresses and ports.
    #[command(after_help = "Examples:\n  \
        netstall lab status\n  \
        netstall lab status --json | jq -r '.hosts[] | \"\\(.role) \\(.netns)\"'")]
    Status {
        #[command(flatten)]
        prefix: PrefixArg,
    },
    /// Re-steer RX processing: the nodes' (default) or one host's.
    #[command(after_help = "Examples:\n  \
        sudo netstall lab rps --rx-cpu 1\n  \
        sudo netstall lab rps --rx-cpu 0 --host node1")]
    Rps {
        #[command(flatten)]
        prefix: PrefixArg,
        /// CPU(s), e.g. 0 or 0-1.
        #[arg(long)]
        rx_cpu: String,
        /// Steer only this host (client, node1, node2, pod, outside).
        #[arg(long)]
        host: Option<topology::Role>,
    },
    /// Make real dying memory cgroups (cgroup v1, else v2), each pinned by page cache.
    #[command(after_help = "Examples:\n  \
        sudo netstall lab zombies --count 20000\n  \
        netstall cgroups                             count them")]
    Zombies {
        #[command(flatten)]
        prefix: PrefixArg,
        /// How many to make.
        #[arg(long)]
        count: u32,
    },
    /// A cadvisor-like reader of memory.stat that keeps the zombies' stats dirty.
    #[command(after_help = "Examples:\n  \
        sudo netstall lab poller --cpu 0 -w 60s           stall CPU 0 once a second\n  \
        sudo netstall lab poller --interval 200ms --comm kubelet -w 5m")]
    Poller {
        #[command(flatten)]
        prefix: PrefixArg,
        /// Time between reads.
        #[arg(long, default_value = "1s", value_parser = duration::parse_nonzero)]
        interval: Duration,
        /// Pin the poller to this CPU (put it on the RX CPU to stall it).
        #[arg(long)]
        cpu: Option<u32>,
        /// Process name, as tracers will see it.
        #[arg(long, default_value = "cadvisor")]
        comm: String,
        /// How long to run.
        #[arg(short = 'w', long = "duration", value_parser = duration::parse_nonzero)]
        duration: Duration,
        /// The file to read (default: the memory hierarchy's root memory.stat).
        #[arg(long)]
        path: Option<PathBuf>,
    },
    /// Test-only: busy-wait inside a non-NET_RX softirq on one CPU (a deterministic stall).
    #[command(after_help = "Examples:\n  \
        sudo netstall lab spin --cpu 0 --ms 50 -w 30s      a 50 ms stall every second\n  \
        sudo netstall lab spin --cpu 1 --ms 120 --every 1030ms -w 2m")]
    Spin {
        /// CPU to stall.
        #[arg(long)]
        cpu: u32,
        /// Length of each stall in milliseconds.
        #[arg(long)]
        ms: u64,
        /// Time between stalls.
        #[arg(long, default_value = "1s", value_parser = duration::parse_nonzero)]
        every: Duration,
        /// How long to keep injecting.
        #[arg(short = 'w', long = "duration", value_parser = duration::parse_nonzero)]
        duration: Duration,
    },
    /// Drop a share of the packets forwarded to the pod, at random (nftables on node2).
    #[command(after_help = "Examples:\n  \
        sudo netstall lab drops --rate 10 -w 60s")]
    Drops {
        #[command(flatten)]
        prefix: PrefixArg,
        /// Share of the packets to drop, % (1-100).
        #[arg(long)]
        rate: u32,
        /// How long to keep dropping.
        #[arg(short = 'w', long = "duration", value_parser = duration::parse_nonzero)]
        duration: Duration,
    },
    /// Run the pod's HTTP server in a CPU cgroup of 20 ms per 100 ms, beside a busy process.
    #[command(after_help = "Examples:\n  sudo netstall lab throttle -w 60s")]
    Throttle(throttle::Args),
    /// Test-only: hold a CPU in kernel code (a BPF busy-wait in a syscall) while a task waits.
    Nosched(netstall_kernel::nosched::Args),
    /// Overflow the RX CPUs' input backlogs: a tiny netdev_max_backlog, UDP bursts to the pod.
    Backlog(netstall_lab::backlog::Args),
    /// Release the lab's dying cgroups (remove their data, drop caches level 1).
    #[command(after_help = "Examples:\n  \
        sudo netstall lab clean\n  \
        sudo netstall lab clean --prefix t1 && sudo netstall lab down --prefix t1")]
    Clean {
        #[command(flatten)]
        prefix: PrefixArg,
    },
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    match args.command {
        LabCommand::Up { prefix, rx_cpu } => {
            out.emit(topology::up_printed(&prefix.prefix, &rx_cpu, out)?)
        }
        LabCommand::Down { prefix } => {
            topology::down(&prefix.prefix)?;
            out.emit(LabDown {
                prefix: prefix.prefix.clone(),
            });
        }
        LabCommand::Status { prefix } => out.emit(topology::status(&prefix.prefix)?),
        LabCommand::Rps {
            prefix,
            rx_cpu,
            host,
        } => {
            netstall_core::privilege::require_root("lab rps")?;
            let cpus = netstall_core::cpu::parse_online_list(&rx_cpu)?;
            out.emit(topology::resteer(&prefix.prefix, &cpus, host)?);
        }
        LabCommand::Zombies { prefix, count } => {
            let paths = zombies::ZombiePaths::for_host(&prefix.prefix)?;
            out.emit(zombies::create_narrated(&paths, count, out)?);
        }
        LabCommand::Poller {
            prefix,
            interval,
            cpu,
            comm,
            duration,
            path,
        } => {
            netstall_core::privilege::require_root("lab poller")?;
            let config =
                poller::PollerConfig::for_lab(&prefix.prefix, path, interval, duration, cpu, comm)?;
            poller::run_printed(&config, out)?;
        }
        LabCommand::Spin {
            cpu,
            ms,
            every,
            duration,
        } => {
            let config = netstall_kernel::spin::SpinConfig {
                cpu,
                spin: Duration::from_millis(ms),
                every,
                duration,
            };
            netstall_kernel::spin::run_printed(&config, out)?;
        }
        LabCommand::Drops {
            prefix,
            rate,
            duration,
        } => drop(inject::drops_printed(&prefix.prefix, rate, duration, out)?),
        LabCommand::Throttle(args) => drop(throttle::throttle_printed(&args, out)?),
        LabCommand::Nosched(args) => netstall_kernel::nosched::run_printed(&args, out).map(drop)?,
        LabCommand::Backlog(args) => netstall_lab::backlog::run_printed(&args, out).map(drop)?,
        LabCommand::Clean { prefix } => {
            let paths = zombies::ZombiePaths::for_host(&prefix.prefix)?;
            out.emit(clean::clean(&paths)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
