//! What a command needs from the host, checked up front so a missing
//! privilege is a one-line error naming the capability, not an EPERM later.

use anyhow::{bail, Result};

/// The Linux capabilities netstall's commands need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    NetAdmin,
    NetRaw,
    SysAdmin,
    Syslog,
    Perfmon,
    Bpf,
}

impl Capability {
    fn bit(self) -> u32 {
        match self {
            Capability::NetAdmin => 12,
            Capability::NetRaw => 13,
            Capability::SysAdmin => 21,
            Capability::Syslog => 34,
            Capability::Perfmon => 38,
            Capability::Bpf => 39,
        }
    }

    /// The name as `capabilities(7)` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::NetRaw => "CAP_NET_RAW",
            Capability::SysAdmin => "CAP_SYS_ADMIN",
            Capability::Syslog => "CAP_SYSLOG",
            Capability::Perfmon => "CAP_PERFMON",
            Capability::Bpf => "CAP_BPF",
        }
    }
}

fn effective_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Whether the process holds `cap` in its effective set.
pub fn has(cap: Capability) -> bool {
    effective_set() & (1 << cap.bit()) != 0
}

/// Fails naming the first missing capability and what needed it.
pub fn require(caps: &[Capability], what: &str) -> Result<()> {
    let set = effective_set();
    if let Some(missing) = caps.iter().find(|c| set & (1 << c.bit()) == 0) {
        bail!(
            "{what} needs {} (run as root or grant the capability)",
            missing.name()
        );
    }
    Ok(())
}

/// Fails unless running as root: lab and cgroup changes write to /sys, /proc
/// and other namespaces in ways capabilities alone do not cover.
pub fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); run it with sudo");
    }
    require(&[Capability::SysAdmin, Capability::NetAdmin], what)
}
