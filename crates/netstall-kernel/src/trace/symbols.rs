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
///
/// The table is a snapshot: a BPF program (or module) loaded after it was
/// read is missing from it, and worse, the kernel packs JIT images next to
/// each other, so a new program's address is "named" after its neighbour,
/// a few hundred bytes in. So the table is read again, at most once per
/// [`REREAD_AFTER`], when an address is unknown, or when a stack runs
/// through a BPF program and the set of loaded BPF programs changed since
/// the table was read (or cannot be listed: then at most every
/// [`BPF_UNLISTED_REREAD_AFTER`]).
pub struct KernelSymbols {
    symbolizer: Option<Symbolizer>,
    /// When the held table was read.
    read_at: Instant,
    /// The loaded BPF programs' ids when it was read (`None`: not listable).
    bpf_ids: Option<Vec<u32>>,
    last_used: Instant,
    source: Source<'static>,
}

/// The youngest a symbol table may be and still be re-read: reading and
/// parsing kallsyms costs tens of ms, and an address that stays unknown (a
/// freed BPF program) must not make every stack pay that.
pub const REREAD_AFTER: Duration = Duration::from_secs(1);

/// Without CAP_SYS_ADMIN the loaded BPF programs cannot be listed: a stack
/// through a BPF program then re-reads a table at least this old.
pub const BPF_UNLISTED_REREAD_AFTER: Duration = Duration::from_secs(10);

/// No kernel function is this long: an address further than this past the
/// nearest symbol is not in the table (a BPF program loaded since would
/// otherwise be named after the kernel image's last symbol, `__stop_…`).
const MAX_SYMBOL_OFFSET: usize = 1 << 20;

/// What a lookup found.
struct Lookup {
    frames: Vec<String>,
    all_known: bool,
    through_bpf: bool,
}

impl KernelSymbols {
    pub fn new() -> Self {
        Self {
            symbolizer: None,
            read_at: Instant::now(),
            bpf_ids: None,
            last_used: Instant::now(),
            source: Source::Kernel(Kernel {
                vmlinux: MaybeDefault::None,
                ..Default::default()
            }),
        }
    }

    /// Function names, innermost first ([`crate::stack`]'s order); unknown
    /// addresses as [`crate::stack::unknown_frame`].
    pub fn frames(&mut self, addrs: &[u64]) -> Vec<String> {
        if addrs.is_empty() {
            return Vec::new();
        }
        self.last_used = Instant::now();
        let found = self.lookup(addrs);
        if self.stale(&found) {
            // Loaded since the table was read (a BPF program, a module): read it again.
            self.symbolizer = None;
            return self.lookup(addrs).frames;
        }
        found.frames
    }

    /// Whether `found` may be wrong for want of a newer table, and the
    /// held one is old enough to be read again.
    fn stale(&self, found: &Lookup) -> bool {
        let age = self.read_at.elapsed();
        if age < REREAD_AFTER {
            return false;
        }
        if !found.all_known {
            return true;
        }
        if !found.through_bpf {
            return false;
        }
        match (&self.bpf_ids, bpf_prog_ids()) {
            (Some(then), Some(now)) => *then != now,
            _ => age >= BPF_UNLISTED_REREAD_AFTER,
        }
    }

    fn lookup(&mut self, addrs: &[u64]) -> Lookup {
        if self.symbolizer.is_none() {
            // Listed before the table is read: a program loaded in between
            // is in the table, and only costs one more read later.
            self.bpf_ids = bpf_prog_ids();
            self.read_at = Instant::now();
        }
        let symbolizer = self.symbolizer.get_or_insert_with(Symbolizer::new);
        let mut found = Lookup {
            frames: Vec::with_capacity(addrs.len()),
            all_known: true,
            through_bpf: false,
        };
        match symbolizer.symbolize(&self.source, Input::AbsAddr(addrs)) {
            Ok(syms) => {
                for (s, a) in syms.iter().zip(addrs) {
                    match s {
                        Symbolized::Sym(sym) if sym.offset < MAX_SYMBOL_OFFSET => {
                            found.through_bpf |= sym.name.starts_with("bpf_prog_");
                            found.frames.push(sym.name.to_string());
                        }
                        _ => {
                            found.all_known = false;
                            found.frames.push(crate::stack::unknown_frame(*a));
                        }
                    }
                }
            }
            Err(_) => {
                found.all_known = false;
                found.frames = addrs
                    .iter()
                    .map(|a| crate::stack::unknown_frame(*a))
                    .collect();
            }
        }
        found
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

/// The ids of the loaded BPF programs, ascending; `None` when they cannot
/// be listed (it needs CAP_SYS_ADMIN). One syscall per program.
fn bpf_prog_ids() -> Option<Vec<u32>> {
    let mut ids = Vec::new();
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: plain syscall wrapper writing one u32 into `next`.
        let rc = unsafe { libbpf_rs::libbpf_sys::bpf_prog_get_next_id(id, &mut next) };
        if rc != 0 {
            // ENOENT: past the last program. Anything else (EPERM): unlisted.
            let errno = std::io::Error::last_os_error().raw_os_error();
            return (rc == -libc::ENOENT || errno == Some(libc::ENOENT)).then_some(ids);
        }
        ids.push(next);
        id = next;
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

    /// A loaded BPF program's id and JIT image address (what its stack frames hold).
    fn id_and_address(prog: &libbpf_rs::Program<'_>) -> (u32, u64) {
        use std::os::fd::{AsFd, AsRawFd};
        let mut addr: u64 = 0;
        let mut info = libbpf_rs::libbpf_sys::bpf_prog_info {
            nr_jited_ksyms: 1,
            jited_ksyms: std::ptr::addr_of_mut!(addr) as u64,
            ..Default::default()
        };
        let mut len = std::mem::size_of_val(&info) as u32;
        // SAFETY: info is a valid bpf_prog_info of `len` bytes whose jited_ksyms
        // points at one u64 that outlives the call; the fd is the program's.
        let rc = unsafe {
            libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(
                prog.as_fd().as_raw_fd(),
                &mut info,
                &mut len,
            )
        };
        assert_eq!(rc, 0, "bpf_prog_get_info_by_fd");
        assert_ne!(addr, 0, "no JIT address (bpf_jit_kallsyms off?)");
        (info.id, addr)
    }

    #[test]
    fn a_bpf_program_loaded_after_the_table_was_read_is_still_named() {
        use libbpf_rs::skel::{OpenSkel, SkelBuilder};
        if !netstall_testkit::privileged("a_bpf_program_loaded_after_the_table_was_read") {
            return;
        }
        let mut symbols = KernelSymbols::new();
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let (icmp_rcv, _) = symbol_range(&kallsyms, "icmp_rcv").unwrap();
        assert_eq!(symbols.frames(&[icmp_rcv]), ["icmp_rcv"]);

        // Loaded (not attached: it never runs) after the table was read.
        let mut storage = std::mem::MaybeUninit::uninit();
        let skel = crate::skel::spin::SpinSkelBuilder::default()
            .open(&mut storage)
            .unwrap()
            .load()
            .unwrap();
        let (id, addr) = id_and_address(&skel.progs.spin_in_softirq);
        assert!(
            bpf_prog_ids().unwrap().contains(&id),
            "root lists BPF programs"
        );
        // JIT images are packed: the table read before may well name this
        // address after the program loaded just before it.
        std::thread::sleep(REREAD_AFTER);
        let frames = symbols.frames(&[addr, icmp_rcv]);
        assert!(frames[0].contains("spin_in_softirq"), "{frames:?}");
        assert_eq!(frames[1], "icmp_rcv");
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
