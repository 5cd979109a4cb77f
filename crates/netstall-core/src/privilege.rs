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

    fn to_caps(self) -> caps::Capability {
        match self {
            Capability::NetAdmin => caps::Capability::CAP_NET_ADMIN,
            Capability::NetRaw => caps::Capability::CAP_NET_RAW,
            Capability::SysAdmin => caps::Capability::CAP_SYS_ADMIN,
            Capability::Syslog => caps::Capability::CAP_SYSLOG,
            Capability::Perfmon => caps::Capability::CAP_PERFMON,
            Capability::Bpf => caps::Capability::CAP_BPF,
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

/// The calling thread's effective set: capabilities are per thread, and
/// the agent's threads hold different ones ([`drop_all_but`]).
fn effective_set() -> u64 {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Whether the calling thread holds `cap` in its effective set.
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

/// Keeps only `keep` of the capabilities this thread holds, for good:
/// the permitted and effective sets become `keep` (those of them it has),
/// the inheritable and ambient sets empty, and, when `bounding` and the
/// thread may (CAP_SETPCAP), the bounding set `keep` too, so that no
/// program it runs gets the others back. Threads started afterwards
/// inherit these sets; threads that already run keep theirs (capabilities
/// are per thread), so call it before starting any.
pub fn drop_all_but(keep: &[Capability], bounding: bool) -> Result<()> {
    use caps::CapSet;
    let keep: caps::CapsHashSet = keep.iter().map(|c| c.to_caps()).collect();
    let fail = |what: &str, e: caps::errors::CapsError| anyhow::anyhow!("cannot {what}: {e}");
    if bounding
        && caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false)
    {
        for cap in
            caps::read(None, CapSet::Bounding).map_err(|e| fail("read the bounding set", e))?
        {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)
                    .map_err(|e| fail(&format!("drop {cap} from the bounding set"), e))?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| fail("clear the ambient set", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| fail("clear the inheritable set", e))?;
    let permitted =
        caps::read(None, CapSet::Permitted).map_err(|e| fail("read the permitted set", e))?;
    let kept: caps::CapsHashSet = permitted.intersection(&keep).copied().collect();
    // The effective set must stay within the permitted one: shrink it first.
    caps::set(None, CapSet::Effective, &kept).map_err(|e| fail("set the effective set", e))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(|e| fail("set the permitted set", e))?;
    Ok(())
}

/// Makes `caps` (those of them in the thread's permitted set) the calling
/// thread's effective set: what it can use now, of what it may use.
pub fn set_effective(caps: &[Capability]) -> Result<()> {
    use caps::CapSet;
    let permitted = caps::read(None, CapSet::Permitted)
        .map_err(|e| anyhow::anyhow!("cannot read the permitted set: {e}"))?;
    let wanted: caps::CapsHashSet = caps
        .iter()
        .map(|c| c.to_caps())
        .filter(|c| permitted.contains(c))
        .collect();
    caps::set(None, CapSet::Effective, &wanted)
        .map_err(|e| anyhow::anyhow!("cannot set the effective set: {e}"))
}
