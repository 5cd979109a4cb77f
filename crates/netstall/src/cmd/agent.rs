//! `netstall agent`: the always-on node agent (see `netstall-agent`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use netstall_agent::AgentOptions;
use netstall_core::output::Output;

#[derive(clap::Args)]
#[command(
    about = "Always-on node agent: RX stall histograms, peer mesh probing, dying cgroups, /metrics and /healthz",
    long_about = "Runs until SIGTERM or Ctrl-C: probes a bounded rendezvous-hashed subset of --peers (ICMP), \
        traces RX stalls in the kernel (eBPF), counts dying memory cgroups (never reading memory.stat), \
        serves Prometheus metrics on /metrics and the node's health on /healthz, and writes a JSON \
        event log (one object per line).\n\n\
        Settings come from --config (TOML, keys named as the flags: `listen = \"0.0.0.0:9977\"`, \
        `probe-rate = 10`, `peers = [\"node2=10.0.0.2\"]`); flags override the file.\n\n\
        Needs CAP_NET_RAW to probe; the tracer needs CAP_BPF, CAP_PERFMON and CAP_SYSLOG."
)]
pub struct Args {
    /// TOML config file; every key is also a flag, and flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Enter this network namespace (from `ip netns`) first: one agent per lab node.
    #[arg(long)]
    netns: Option<String>,
    #[command(flatten)]
    options: AgentOptions,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn run(args: Args, _out: Output) -> Result<ExitCode> {
    let file = match &args.config {
        Some(path) => AgentOptions::from_file(path)?,
        None => AgentOptions::default(),
    };
    let config = args.options.or(file).resolve()?;
    if let Some(ns) = &args.netns {
        netstall_lab::netns::enter(ns)?;
    }
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !STOP.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let listen = config.listen;
    let result = netstall_agent::run(&config, Arc::clone(&stop), || {
        eprintln!("netstall agent: serving /metrics and /healthz on http://{listen}");
    });
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    result.map(|()| ExitCode::SUCCESS)
}
