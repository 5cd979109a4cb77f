//! `netstall responder`: the lab's TCP/HTTP and UDP echo responders.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Result;
use netstall_core::output::Output;
use netstall_lab::responder::{self, ResponderConfig};

#[derive(clap::Args)]
#[command(
    about = "Run the TCP/HTTP and UDP echo responders used by the lab and by your own tests",
    long_about = "Serve TCP (answers a line; a minimal HTTP 200 to HTTP requests, keep-alive \
    supported) and UDP echo, for probing with `netstall probe`. Runs until killed.",
    after_help = "Examples:\n  \
    netstall responder --tcp 8080 --udp 9000\n  \
    netstall responder --tcp 8080 --bind 127.0.0.1 --ready-line &\n  \
    netstall probe 127.0.0.1 --udp -p 9000 -c 100"
)]
pub struct Args {
    /// TCP port to listen on.
    #[arg(long)]
    tcp: Option<u16>,
    /// UDP port to echo on.
    #[arg(long)]
    udp: Option<u16>,
    /// Address to bind.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Enter this network namespace (from `ip netns`) first.
    #[arg(long)]
    netns: Option<String>,
    /// Print "ready" on stdout once listening (for scripts that start it).
    #[arg(long)]
    ready_line: bool,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    if let Some(ns) = &args.netns {
        netstall_lab::netns::enter(ns)?;
    }
    let config = ResponderConfig {
        bind: args.bind,
        tcp_port: args.tcp,
        udp_port: args.udp,
    };
    responder::serve(&config, || {
        if args.ready_line {
            println!("ready");
        } else {
            out.progress(format!(
                "serving tcp={:?} udp={:?} on {}",
                config.tcp_port, config.udp_port, config.bind
            ));
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
