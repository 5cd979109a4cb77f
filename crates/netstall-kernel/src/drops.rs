//! `netstall trace --drops`: packet drops with the kernel's reason, and TCP
//! retransmits with their flow, counted in the kernel (`src/bpf/drops.bpf.c`)
//! and reported per interval as [`PacketDrops`] and [`Retransmits`].
//!
//! Drop reasons are named from the running kernel's BTF (`enum
//! skb_drop_reason`): their numbers change between kernel versions, their
//! names do not. Reasons that are normal consumption ([`NORMAL_REASONS`])
//! are not counted at all: a healthy node frees packets with them every
//! second.
//!
//! [`ReasonTotals`] is the same counter for a reader that runs for months
//! (the agent): totals per reason only, read whenever asked.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::btf::types::Enum;
use libbpf_rs::btf::Btf;
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, OpenObject};
use netstall_core::clock::ClockOffset;
pub use netstall_events::net::{PacketDrops, RetransmitKind, Retransmits};

use crate::skel::drops::types::{count_val, drop_key, retrans_key};
use crate::skel::drops::DropsSkelBuilder;
use crate::trace::symbols::KernelSymbols;
use crate::trace::Stop;

/// Drop reasons that are how the kernel frees packets in normal operation,
/// not a loss anyone waits for: a plain `kfree_skb` (`NOT_SPECIFIED`), a
/// packet to a port nobody listens on (answered by a RST or an ICMP error:
/// the sender learns at once), queues freed when a socket closes or
/// resets, segments merged into the out-of-order queue, frames for another
/// host seen in promiscuous mode.
pub const NORMAL_REASONS: &[&str] = &[
    "NOT_SPECIFIED",
    "NO_SOCKET",
    "SOCKET_CLOSE",
    "UNIX_DISCONNECT",
    "UNIX_SKIP_OOB",
    "QUEUE_PURGE",
    "TCP_CLOSE",
    "TCP_RESET",
    "TCP_OFOMERGE",
    "OTHERHOST",
];

/// Reasons numbered below this fit the BPF program's ignore mask.
const MASK_BITS: u32 = 256;
const REASON_PREFIX: &str = "SKB_DROP_REASON_";

/// The reason of the per-reason totals' last slot: every reason numbered
/// from [`MASK_BITS`] up (those of a subsystem's own enum: mac80211,
/// openvswitch), which this kernel's `skb_drop_reason` does not name.
pub const OTHER_REASON: &str = "OTHER";

/// What to count.
#[derive(Debug, Clone)]
pub struct DropsConfig {
    /// Report the counts this often.
    pub interval: Duration,
}

impl Default for DropsConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
        }
    }
}

/// What the drop counter streams.
#[derive(Debug, Clone, PartialEq)]
pub enum DropsEvent {
    /// Attached: drops from now on are counted.
    Started,
    Drop(PacketDrops),
    Retransmit(Retransmits),
}

/// The totals of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropsTotals {
    pub drops: u64,
    pub retransmits: u64,
    /// Counts lost because a map was full (new sites or flows not counted).
    pub overflow: u64,
}

/// The running kernel's drop reasons by number, named without
/// `SKB_DROP_REASON_` (`NETFILTER_DROP`), from its BTF.
pub fn reason_names(btf: &Btf<'_>) -> Result<HashMap<u32, String>> {
    let reasons: Enum<'_> = btf
        .type_by_name("skb_drop_reason")
        .context("this kernel's BTF has no enum skb_drop_reason (drop reasons came in 5.17)")?;
    Ok(reasons
        .iter()
        .filter_map(|m| {
            let name = m.name?.to_str()?;
            let short = name.strip_prefix(REASON_PREFIX).unwrap_or(name);
            Some((u32::try_from(m.value).ok()?, short.to_owned()))
        })
        .collect())
}

/// The BPF program's ignore mask: a bit per reason in [`NORMAL_REASONS`].
pub fn ignore_mask(names: &HashMap<u32, String>) -> [u64; (MASK_BITS / 64) as usize] {
    let mut mask = [0u64; (MASK_BITS / 64) as usize];
    for (&value, name) in names {
        if value < MASK_BITS && NORMAL_REASONS.contains(&name.as_str()) {
            mask[(value / 64) as usize] |= 1 << (value % 64);
        }
    }
    mask
}

/// A TCP state's name (`include/net/tcp_states.h`, stable since 2.6).
pub fn tcp_state(state: u32) -> String {
    const NAMES: [&str; 13] = [
        "",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
    ];
    match NAMES.get(state as usize) {
        Some(name) if !name.is_empty() => (*name).to_owned(),
        _ => format!("STATE_{state}"),
    }
}

/// An address as the kernel stores it (network order, IPv4 in the first
/// four bytes).
pub fn address(family: u16, bytes: &[u8; 16]) -> String {
    const AF_INET6: u16 = 10;
    let ip = if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    };
    ip.to_string()
}

/// A count as the kernel keeps it: total, first and last (REALTIME ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

/// What changed between two readings of one map: each key whose count grew,
/// with the increment and its span (from the later of the last reading and
/// the key's first event, to its last event). Pure.
pub fn increments<K: Clone + Eq + std::hash::Hash>(
    previous: &HashMap<K, Count>,
    now: &HashMap<K, Count>,
    last_read_ns: u64,
) -> Vec<(K, u64, u64, u64)> {
    let mut out: Vec<_> = now
        .iter()
        .filter_map(|(key, count)| {
            let before = previous.get(key).map_or(0, |c| c.count);
            let grew = count.count.checked_sub(before).filter(|d| *d > 0)?;
            let start = count.first_ns.max(last_read_ns).min(count.last_ns);
            Some((key.clone(), grew, start, count.last_ns))
        })
        .collect();
    out.sort_by_key(|(_, _, start, _)| *start);
    out
}

/// The inode of netstall's own network namespace.
fn own_netns() -> Option<u32> {
    let link = std::fs::read_link("/proc/self/ns/net").ok()?;
    let text = link.to_str()?;
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

fn interface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: on success the name is NUL-terminated in buf.
    Some(
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// A BPF map key or value as its C struct.
fn decode<T: Copy>(bytes: &[u8]) -> Option<T> {
    // SAFETY: the bytes are the BPF program's `T` (size checked: the
    // skeleton's type is the program's struct); read_unaligned copes with
    // any alignment.
    (bytes.len() >= std::mem::size_of::<T>())
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

/// Reads a hash map of keys → `count_val`, by the keys' bytes, with REALTIME times.
fn read_map(map: &dyn MapCore, offset: &ClockOffset) -> HashMap<Vec<u8>, Count> {
    let mut counts = HashMap::new();
    for key in map.keys() {
        // Nothing deletes entries, but a failed lookup only loses one reading.
        let Ok(Some(value)) = map.lookup(&key, MapFlags::ANY) else {
            continue;
        };
        if let Some(v) = decode::<count_val>(&value) {
            counts.insert(
                key,
                Count {
                    count: v.count,
                    first_ns: offset.to_realtime(v.first_ns),
                    last_ns: offset.to_realtime(v.last_ns),
                },
            );
        }
    }
    counts
}

/// The drop counter of a long-running reader: skb:kfree_skb only, counted
/// per reason in a per-CPU array of [`MASK_BITS`]` + 1` slots (it never
/// fills, however long it runs), read at any time without disturbing it.
pub struct ReasonTotals {
    /// Keeps the program attached.
    _link: libbpf_rs::Link,
    totals: MapHandle,
    /// The slots read, with their reason: the normal reasons' are never
    /// written, so never read.
    slots: Vec<(u32, String)>,
}

impl ReasonTotals {
    /// Loads and attaches the counter (CAP_BPF and CAP_PERFMON; reading it
    /// later needs neither).
    pub fn load() -> Result<Self> {
        crate::require_bpf("the drop counter")?;
        let btf = Btf::from_vmlinux().context("read the kernel's BTF")?;
        let names = reason_names(&btf)?;
        let mut storage = MaybeUninit::<OpenObject>::uninit();
        let mut open = DropsSkelBuilder::default()
            .open(&mut storage)
            .context("open the drops BPF object")?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .context("drops BPF object has no .rodata")?;
        rodata.ignore_mask = ignore_mask(&names);
        rodata.totals_only = true;
        // Retransmits are the agent's Tcp.RetransSegs: their programs stay out.
        open.progs.on_tcp_retransmit_skb.set_autoload(false);
        open.progs.on_tcp_retransmit_synack.set_autoload(false);
        let skel = open
            .load()
            .context("load the drop counter (needs tp_btf/kfree_skb)")?;
        // The link holds the program, and the program its maps: the
        // skeleton may go.
        let link = skel
            .progs
            .on_kfree_skb
            .attach()
            .context("attach tp_btf/kfree_skb")?;
        let totals = MapHandle::try_from(&skel.maps.reasons).context("keep the reasons map")?;
        Ok(Self {
            _link: link,
            totals,
            slots: reason_slots(&names),
        })
    }

    /// Drops counted since the load, per reason (those with any), all CPUs.
    pub fn read(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for (slot, reason) in &self.slots {
            let per_cpu = self
                .totals
                .lookup_percpu(&slot.to_ne_bytes(), MapFlags::ANY)
                .with_context(|| format!("read the drop count of {reason}"))?
                .unwrap_or_default();
            let total = sum_per_cpu(&per_cpu);
            if total > 0 {
                out.push((reason.clone(), total));
            }
        }
        Ok(out)
    }
}

/// The slots of the per-reason totals that can count, with their reason:
/// every named reason below [`MASK_BITS`] but the normal ones, and the last
/// slot as [`OTHER_REASON`]. Pure.
pub fn reason_slots(names: &HashMap<u32, String>) -> Vec<(u32, String)> {
    let mut slots: Vec<(u32, String)> = names
        .iter()
        .filter(|(&value, name)| value < MASK_BITS && !NORMAL_REASONS.contains(&name.as_str()))
        .map(|(&value, name)| (value, name.clone()))
        .collect();
    slots.sort();
    slots.push((MASK_BITS, OTHER_REASON.to_owned()));
    slots
}

/// A per-CPU `u64`, summed over the CPUs. Pure.
pub fn sum_per_cpu(values: &[Vec<u8>]) -> u64 {
    values
        .iter()
        .filter_map(|v| Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?)))
        .fold(0, u64::wrapping_add)
}

/// Loads the counter, calls `on_event` with every interval's increments
/// until `stop`, and returns the totals.
pub fn run(
    config: &DropsConfig,
    stop: &Stop,
    mut on_event: impl FnMut(DropsEvent),
) -> Result<DropsTotals> {
    if config.interval.is_zero() {
        anyhow::bail!("the drops interval must be positive");
    }
    crate::require_bpf("the drop counter")?;
    let btf = Btf::from_vmlinux().context("read the kernel's BTF")?;
    let names = reason_names(&btf)?;

    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let mut open = DropsSkelBuilder::default()
        .open(&mut storage)
        .context("open the drops BPF object")?;
    open.maps
        .rodata_data
        .as_deref_mut()
        .context("drops BPF object has no .rodata")?
        .ignore_mask = ignore_mask(&names);
    let mut skel = open
        .load()
        .context("load the drops BPF programs (needs tp_btf/kfree_skb, tcp_retransmit_skb)")?;
    skel.attach()
        .context("attach tp_btf/kfree_skb, tcp_retransmit_skb, tcp_retransmit_synack")?;
    let started = Instant::now();
    on_event(DropsEvent::Started);

    let offset = ClockOffset::sample();
    let own_ns = own_netns();
    let mut symbols = KernelSymbols::new();
    let mut totals = DropsTotals::default();
    let mut drops_before = HashMap::new();
    let mut retrans_before = HashMap::new();
    let mut last_read_ns = netstall_core::clock::realtime_ns();
    let mut next_read = Instant::now() + config.interval;
    loop {
        let stopping = stop.should_stop(started);
        if !stopping {
            let wait = next_read
                .saturating_duration_since(Instant::now())
                .min(stop.left(started))
                .min(Duration::from_millis(100));
            std::thread::sleep(wait);
            if Instant::now() < next_read && !stop.should_stop(started) {
                continue;
            }
        }
        next_read += config.interval;
        let read_ns = netstall_core::clock::realtime_ns();

        let drops_now = read_map(&skel.maps.drops, &offset);
        for (key, count, start_ns, end_ns) in increments(&drops_before, &drops_now, last_read_ns) {
            let Some(k) = decode::<drop_key>(&key) else {
                continue;
            };
            totals.drops += count;
            let location = symbols
                .frames(&[k.location])
                .into_iter()
                .next()
                .unwrap_or_else(|| format!("{:#x}", k.location));
            let netns = (k.netns != 0).then_some(k.netns);
            let ifindex = (k.ifindex != 0).then_some(k.ifindex);
            let interface = ifindex
                .filter(|_| netns.is_some() && netns == own_ns)
                .and_then(interface_name);
            on_event(DropsEvent::Drop(PacketDrops {
                start_ns,
                end_ns,
                reason: names
                    .get(&k.reason)
                    .cloned()
                    .unwrap_or_else(|| format!("REASON_{:#x}", k.reason)),
                location,
                cpu: k.cpu,
                ifindex,
                interface,
                netns,
                count,
            }));
        }
        drops_before = drops_now;

        let retrans_now = read_map(&skel.maps.retransmits, &offset);
        for (key, count, start_ns, end_ns) in
            increments(&retrans_before, &retrans_now, last_read_ns)
        {
            let Some(k) = decode::<retrans_key>(&key) else {
                continue;
            };
            totals.retransmits += count;
            on_event(DropsEvent::Retransmit(Retransmits {
                start_ns,
                end_ns,
                kind: if k.synack != 0 {
                    RetransmitKind::Synack
                } else {
                    RetransmitKind::Segment
                },
                state: tcp_state(k.state),
                saddr: address(k.family, &k.saddr),
                sport: k.sport,
                daddr: address(k.family, &k.daddr),
                dport: k.dport,
                netns: (k.netns != 0).then_some(k.netns),
                count,
            }));
        }
        retrans_before = retrans_now;
        last_read_ns = read_ns;
        symbols.release_if_idle(Duration::from_secs(10));
        if stopping {
            break;
        }
    }
    if let Some(bss) = skel.maps.bss_data.as_deref() {
        totals.overflow = bss.drops_overflow + bss.retransmits_overflow;
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_named_from_this_kernels_btf() {
        let btf = Btf::from_vmlinux().expect("kernel BTF");
        let names = reason_names(&btf).unwrap();
        let by_name: HashMap<&str, u32> = names.iter().map(|(v, n)| (n.as_str(), *v)).collect();
        for name in [
            "NOT_SPECIFIED",
            "NETFILTER_DROP",
            "CPU_BACKLOG",
            "TCP_LISTEN_OVERFLOW",
        ] {
            assert!(by_name.contains_key(name), "{name} missing: {names:?}");
        }
        let mask = ignore_mask(&names);
        let set = |name: &str| {
            let v = by_name[name];
            mask[(v / 64) as usize] >> (v % 64) & 1 == 1
        };
        assert!(set("NOT_SPECIFIED") && set("NO_SOCKET") && set("SOCKET_CLOSE"));
        assert!(!set("NETFILTER_DROP") && !set("CPU_BACKLOG") && !set("TCP_LISTEN_OVERFLOW"));
        // Every normal reason exists in this kernel (a typo would count it).
        for name in NORMAL_REASONS {
            assert!(by_name.contains_key(name), "{name} is not a reason here");
        }
    }

    #[test]
    fn totals_are_read_for_the_counted_reasons_and_summed_over_cpus() {
        let names = HashMap::from([
            (2, "NO_SOCKET".to_owned()),
            (6, "NETFILTER_DROP".to_owned()),
            (1, "TCP_INVALID_SEQUENCE".to_owned()),
            (300, "BEYOND_THE_MASK".to_owned()),
        ]);
        assert_eq!(
            reason_slots(&names),
            vec![
                (1, "TCP_INVALID_SEQUENCE".to_owned()),
                (6, "NETFILTER_DROP".to_owned()),
                (MASK_BITS, OTHER_REASON.to_owned()),
            ]
        );
        let cpus = [
            5u64.to_ne_bytes().to_vec(),
            0u64.to_ne_bytes().to_vec(),
            7u64.to_ne_bytes().to_vec(),
        ];
        assert_eq!(sum_per_cpu(&cpus), 12);
        assert_eq!(sum_per_cpu(&[]), 0);
    }

    #[test]
    fn increments_report_what_grew_since_the_last_reading() {
        let c = |count, first_ns, last_ns| Count {
            count,
            first_ns,
            last_ns,
        };
        let before = HashMap::from([("a", c(5, 100, 900)), ("b", c(2, 200, 300))]);
        let now = HashMap::from([
            ("a", c(8, 100, 1500)),
            ("b", c(2, 200, 300)),
            ("c", c(1, 1200, 1200)),
        ]);
        let mut got = increments(&before, &now, 1000);
        got.sort();
        assert_eq!(got, vec![("a", 3, 1000, 1500), ("c", 1, 1200, 1200)]);
    }

    #[test]
    fn addresses_and_states_read_as_people_write_them() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[10, 200, 0, 2]);
        assert_eq!(address(2, &v4), "10.200.0.2");
        let v6 = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(address(10, &v6), "::1");
        assert_eq!(tcp_state(2), "SYN_SENT");
        assert_eq!(tcp_state(99), "STATE_99");
    }
}
