//! Kernel addresses to names (blazesym over /proc/kallsyms), a kernel
//! function's address range, and a task's cgroup.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use blazesym::symbolize::source::{Kernel, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use blazesym::MaybeDefault;

/// Symbolizes kernel stacks through /proc/kallsyms (no vmlinux needed).
///
/// The parsed symbol table is several MB; it is built on the first stack to
/// name and dropped again once no stack has needed it for a while
/// ([`KernelSymbols::release_if_idle`]), so a long-running tracer holds it
/// only around stalls.
pub struct KernelSymbols {
    symbolizer: Option<Symbolizer>,
    last_used: Instant,
    source: Source<'static>,
}

impl KernelSymbols {
    pub fn new() -> Self {
        Self {
            symbolizer: None,
            last_used: Instant::now(),
            source: Source::Kernel(Kernel {
                vmlinux: MaybeDefault::None,
                ..Default::default()
            }),
        }
    }

    /// Function names, innermost first; unknown addresses as hex.
    pub fn frames(&mut self, addrs: &[u64]) -> Vec<String> {
        if addrs.is_empty() {
            return Vec::new();
        }
        self.last_used = Instant::now();
        let symbolizer = self.symbolizer.get_or_insert_with(Symbolizer::new);
        match symbolizer.symbolize(&self.source, Input::AbsAddr(addrs)) {
            Ok(syms) => syms
                .iter()
                .zip(addrs)
                .map(|(s, a)| match s {
                    Symbolized::Sym(sym) => sym.name.to_string(),
                    Symbolized::Unknown(_) => format!("{a:#x}"),
                })
                .collect(),
            Err(_) => addrs.iter().map(|a| format!("{a:#x}")).collect(),
        }
    }

    /// How long until [`Self::release_if_idle`] would drop the table, if
    /// one is held.
    pub fn idle_left(&self, idle: Duration) -> Option<Duration> {
        self.symbolizer
            .as_ref()
            .map(|_| idle.saturating_sub(self.last_used.elapsed()))
    }

    /// Drops the symbol table when no stack was named for `idle`, and
    /// returns the freed heap to the system. True when it did.
    pub fn release_if_idle(&mut self, idle: Duration) -> bool {
        if self.symbolizer.is_none() || self.last_used.elapsed() < idle {
            return false;
        }
        self.symbolizer = None;
        // SAFETY: malloc_trim only releases free memory of this process's heap.
        unsafe { libc::malloc_trim(0) };
        true
    }
}

/// `[start, end)` of kernel function `name` in kallsyms text: from its
/// address to the next higher symbol's.
pub fn symbol_range(kallsyms: &str, name: &str) -> Result<(u64, u64)> {
    let mut start = None;
    let mut addrs = Vec::new();
    for line in kallsyms.lines() {
        let mut fields = line.split_whitespace();
        let (Some(addr), Some(_kind), Some(sym)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        // Module symbols carry a "[module]" field; the core kernel's do not.
        if sym == name && fields.next().is_none() {
            start = Some(addr);
        }
        addrs.push(addr);
    }
    let start = start.with_context(|| format!("{name} is not in /proc/kallsyms"))?;
    if start == 0 {
        bail!("/proc/kallsyms hides addresses (needs CAP_SYSLOG, kptr_restrict)");
    }
    let end = addrs
        .into_iter()
        .filter(|&a| a > start)
        .min()
        .unwrap_or(start + 4096);
    Ok((start, end))
}

/// The cgroup to show for a task, from `/proc/<pid>/cgroup` text: the memory
/// controller's (v1) path if there is one, else the unified hierarchy's.
pub fn cgroup_of(proc_cgroup: &str) -> Option<String> {
    let mut unified = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return Some(path.to_string());
        }
        if controllers.is_empty() {
            unified = Some(path.to_string());
        }
    }
    unified
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff81a00000 T icmp_out_count
ffffffff81a00100 t icmp_rcv
ffffffff81a00480 t icmp_echo.part.0
ffffffff81a00500 t icmp_echo
ffffffffc0000000 t icmp_rcv\t[some_module]
";

    #[test]
    fn symbol_range_ends_at_the_next_symbol() {
        assert_eq!(
            symbol_range(KALLSYMS, "icmp_rcv").unwrap(),
            (0xffffffff81a00100, 0xffffffff81a00480)
        );
        assert!(symbol_range(KALLSYMS, "nope").is_err());
        let hidden = "0000000000000000 t icmp_rcv\n0000000000000000 t other\n";
        let err = symbol_range(hidden, "icmp_rcv").unwrap_err().to_string();
        assert!(err.contains("CAP_SYSLOG"), "{err}");
    }

    #[test]
    fn cgroup_prefers_memory_then_unified() {
        let v1 = "12:memory:/kubepods/pod1/abc\n0::/init.scope\n";
        assert_eq!(cgroup_of(v1).as_deref(), Some("/kubepods/pod1/abc"));
        let v2 = "1:name=systemd:/x\n0::/system.slice/kubelet.service\n";
        assert_eq!(
            cgroup_of(v2).as_deref(),
            Some("/system.slice/kubelet.service")
        );
        assert_eq!(cgroup_of(""), None);
    }
}
