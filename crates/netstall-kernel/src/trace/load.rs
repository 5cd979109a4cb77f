//! Loading, attaching and running the tracer (the I/O half of `trace`).
//!
//! A detector whose tracepoint this kernel lacks is left out with a reason
//! (one failing program must not fail the whole load); the tracer fails
//! only when what the user asked for cannot load at all.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, RingBufferBuilder};
use netstall_core::clock::{realtime_ns, ClockOffset};
use netstall_core::privilege::{self, Capability};
use netstall_events::kernel::Detector;

use super::assemble::Assembler;
use super::event::{decode, raw_from_bytes};
use super::recording::{route, Recorder};
use super::symbols::{cgroup_of, symbol_range, KernelSymbols};
use super::TraceDetector;
use super::{
    syscall_names, Histogram, ProgramCost, Stop, TraceConfig, TraceEvent, TraceReport, TraceStart,
    TraceTotals, Unavailable,
};
use crate::skel::trace::types::{ns_trace_counter, ns_trace_limit};
use crate::skel::trace::{OpenTraceSkel, TraceSkel, TraceSkelBuilder};

/// The programs each detector needs (a program may serve several).
fn programs(detector: TraceDetector) -> &'static [&'static str] {
    match detector {
        TraceDetector::Stall(Detector::RxBacklog) => &[
            "on_netif_rx",
            "on_napi_gro_receive_entry",
            "on_netif_receive_skb_entry",
            "on_netif_receive_skb_list_entry",
            "on_netif_receive_skb",
        ],
        TraceDetector::Stall(Detector::SoftirqDelay) => {
            &["on_softirq_raise", "on_softirq_entry", "on_softirq_exit"]
        }
        TraceDetector::Stall(Detector::IrqsOff) => &[
            "on_local_timer_entry",
            "on_local_timer_exit",
            "on_sched_switch",
        ],
        // Steal is read at tick exits and idle exits; without it, irqs-off
        // still works (it cannot then discount a hypervisor's pause).
        TraceDetector::Steal => &["on_local_timer_exit", "on_sched_switch"],
        TraceDetector::Stall(Detector::Ksoftirqd) => {
            &["on_sched_switch", "on_softirq_raise", "on_softirq_entry"]
        }
        TraceDetector::Stall(Detector::RstatHold) => {
            &["on_rstat_locked", "on_rstat_unlock", "on_memcg_flush_stats"]
        }
        TraceDetector::Syscalls => &["on_sys_enter", "on_sys_exit"],
        TraceDetector::Icmp => &["on_icmp_consume"],
        TraceDetector::Nosched => &["on_local_timer_entry", "on_sched_switch"],
    }
}

/// Every detector, in the order a program's cost is attributed.
const DETECTORS: [TraceDetector; 9] = [
    TraceDetector::STALLS[0],
    TraceDetector::STALLS[1],
    TraceDetector::STALLS[2],
    TraceDetector::Steal,
    TraceDetector::STALLS[3],
    TraceDetector::STALLS[4],
    TraceDetector::Syscalls,
    TraceDetector::Icmp,
    TraceDetector::Nosched,
];

/// Index of a per-CPU counter in the `counters` map (`enum ns_trace_counter`).
fn counter(c: ns_trace_counter) -> u32 {
    c.0
}
/// Slots of the log2 histograms.
const HIST_SLOTS: u32 = ns_trace_limit::TRACE_HIST_SLOTS.0;
/// CPUs the BPF side's CPU mask covers.
const MAX_CPUS: usize = ns_trace_limit::TRACE_MAX_CPUS.0 as usize;
/// The longest the reader sleeps when nothing is due: events, a settled
/// stall, the totals, the end of the run and a shutdown request all wake it
/// before that, so an idle tracer wakes up only this often.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// The kernel symbol table is freed after this long without a stack to name.
const SYMBOLS_IDLE: Duration = Duration::from_secs(10);

/// Values written into the BPF object's read-only data before load.
struct Params {
    threshold_ns: u64,
    tick_ns: u64,
    packet_floor_ns: u64,
    syscall_threshold_ns: u64,
    cpu_mask: Option<[u64; MAX_CPUS / 64]>,
    fd_syscalls: [u64; 8],
    icmp_rcv: (u64, u64),
    report_steal: bool,
}

/// The first detector that needs `program`.
fn detector_of(program: &str) -> Option<TraceDetector> {
    DETECTORS
        .into_iter()
        .find(|d| programs(*d).contains(&program))
}

fn open_skel<'o>(
    storage: &'o mut MaybeUninit<OpenObject>,
    params: &Params,
    enabled: &dyn Fn(&str) -> bool,
) -> Result<OpenTraceSkel<'o>> {
    let mut open = TraceSkelBuilder::default()
        .open(storage)
        .context("open the trace BPF object")?;
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("trace BPF object has no .rodata")?;
    rodata.threshold_ns = params.threshold_ns;
    rodata.tick_gap_ns = params.threshold_ns + params.tick_ns;
    rodata.watchdog_ns = params.threshold_ns / 2;
    rodata.packet_floor_ns = params.packet_floor_ns;
    rodata.report_steal = params.report_steal;
    rodata.syscall_threshold_ns = params.syscall_threshold_ns;
    rodata.filter_cpus = params.cpu_mask.is_some();
    rodata.cpu_mask = params.cpu_mask.unwrap_or_default();
    rodata.fd_syscalls = params.fd_syscalls;
    rodata.icmp_rcv_start = params.icmp_rcv.0;
    rodata.icmp_rcv_end = params.icmp_rcv.1;
    for mut prog in open.open_object_mut().progs_mut() {
        let name = prog.name().to_string_lossy().into_owned();
        prog.set_autoload(enabled(&name));
    }
    Ok(open)
}

/// Names BPF programs (comma-separated) the loader treats as refused by the
/// kernel. For testing only: it shows, on a kernel that loads everything,
/// what a kernel that refuses a program (or lacks its tracepoint) gets: that
/// program's detectors left out with a reason, the rest running. Documented
/// in docs/kernels.md; nothing sets it outside tests.
const REFUSE_PROGRAMS_ENV: &str = "NETSTALL_TEST_REFUSE_PROGRAMS";

/// Why `program` is refused by [`REFUSE_PROGRAMS_ENV`], if it is.
fn refused_for_testing(program: &str) -> Option<String> {
    let list = std::env::var(REFUSE_PROGRAMS_ENV).ok()?;
    list.split(',')
        .any(|p| p.trim() == program)
        .then(|| format!("{program} refused ({REFUSE_PROGRAMS_ENV}, for testing)"))
}

/// Why `program` alone does not load, if it does not.
fn probe_program(params: &Params, program: &str) -> Option<String> {
    let mut storage = MaybeUninit::uninit();
    let result = open_skel(&mut storage, params, &|p| p == program).and_then(|open| {
        let section = open
            .open_object()
            .progs()
            .find(|p| p.name() == program)
            .map(|p| p.section().to_string_lossy().into_owned())
            .unwrap_or_default();
        open.load()
            .map(drop)
            .with_context(|| format!("{section} does not load"))
    });
    result.err().map(|e| format!("{e:#}"))
}

/// Loads the wanted detectors, leaving out those this kernel cannot load.
fn load<'o>(
    first: &'o mut MaybeUninit<OpenObject>,
    second: &'o mut MaybeUninit<OpenObject>,
    params: &Params,
    wanted: &[TraceDetector],
) -> Result<(TraceSkel<'o>, Vec<&'static str>, Vec<Unavailable>)> {
    let programs_of = |detectors: &[TraceDetector]| -> Vec<&'static str> {
        let mut progs: Vec<&'static str> = detectors
            .iter()
            .flat_map(|d| programs(*d).iter().copied())
            .collect();
        progs.sort_unstable();
        progs.dedup();
        progs
    };
    let all = programs_of(wanted);
    let mut failures: Vec<(&str, String)> = all
        .iter()
        .filter_map(|p| refused_for_testing(p).map(|why| (*p, why)))
        .collect();
    if failures.is_empty() {
        let error = match open_skel(first, params, &|p| all.contains(&p))?.load() {
            Ok(skel) => return Ok((skel, all, Vec::new())),
            Err(e) => e,
        };
        failures = all
            .iter()
            .filter_map(|p| probe_program(params, p).map(|why| (*p, why)))
            .collect();
        if failures.is_empty() {
            return Err(error).context("load the trace BPF programs");
        }
    }
    let (usable, unavailable) = plan(wanted, &failures)?;
    let progs = programs_of(&usable);
    let skel = open_skel(second, params, &|p| progs.contains(&p))?
        .load()
        .context("load the trace BPF programs")?;
    Ok((skel, progs, unavailable))
}

/// Which wanted detectors remain when these programs fail to load: a
/// detector needs all its programs. Fails when the ICMP table was asked for
/// and cannot load, or when no stall detector is left.
fn plan(
    wanted: &[TraceDetector],
    failures: &[(&str, String)],
) -> Result<(Vec<TraceDetector>, Vec<Unavailable>)> {
    let mut unavailable = Vec::new();
    let mut usable = Vec::new();
    for &detector in wanted {
        let progs = programs(detector);
        match failures.iter().find(|(p, _)| progs.contains(p)) {
            Some((_, why)) => unavailable.push(Unavailable {
                detector,
                reason: why.clone(),
            }),
            None => usable.push(detector),
        }
    }
    if let Some(u) = unavailable
        .iter()
        .find(|u| u.detector == TraceDetector::Icmp)
    {
        bail!("--icmp-seq needs tracepoint skb:consume_skb: {}", u.reason);
    }
    if !usable.iter().any(|d| matches!(d, TraceDetector::Stall(_))) {
        bail!(
            "no stall detector loads on this kernel: {}",
            unavailable
                .first()
                .map_or("nothing was asked for", |u| u.reason.as_str())
        );
    }
    Ok((usable, unavailable))
}

/// Kernel BPF run-time statistics, on while the returned fd is open.
fn enable_bpf_stats() -> Result<OwnedFd> {
    // SAFETY: plain syscall wrapper; a non-negative return is a new fd we own.
    let fd = unsafe {
        libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME)
    };
    if fd < 0 {
        bail!(
            "--self-cost cannot enable BPF stats: {}",
            std::io::Error::from_raw_os_error(-fd)
        );
    }
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// (run count, run time ns) of a loaded program.
fn program_stats(prog: &libbpf_rs::Program<'_>) -> Result<(u64, u64)> {
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info is a valid bpf_prog_info of `len` bytes; the fd is the program's.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(
            prog.as_fd().as_raw_fd(),
            &mut info,
            &mut len,
        )
    };
    if rc != 0 {
        bail!(
            "bpf_prog_get_info_by_fd: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok((info.run_cnt, info.run_time_ns))
}

fn sum_counter(map: &dyn MapCore, index: u32) -> Result<u64> {
    Ok(per_cpu_counter(map, index)?.iter().sum())
}

/// One counter's value on each CPU (index = CPU).
fn per_cpu_counter(map: &dyn MapCore, index: u32) -> Result<Vec<u64>> {
    let values = map
        .lookup_percpu(&index.to_ne_bytes(), MapFlags::ANY)?
        .unwrap_or_default();
    Ok(values
        .iter()
        .map(|v| u64::from_ne_bytes(v[..8].try_into().expect("u64 counter")))
        .collect())
}

/// How long the named (attached) programs have run in all, ns.
fn bpf_run_ns(skel: &TraceSkel<'_>, programs: &[&str]) -> Result<u64> {
    let mut total = 0;
    for prog in skel.object().progs() {
        if programs.iter().any(|name| prog.name() == *name) {
            total += program_stats(&prog)?.1;
        }
    }
    Ok(total)
}

/// The in-kernel totals so far: ring-buffer drops, latency histograms,
/// NET_RX time per CPU, and (with BPF stats on) the programs' run time.
fn totals(
    skel: &TraceSkel<'_>,
    cpus: &Option<Vec<u32>>,
    stats_of: Option<&[&str]>,
) -> Result<TraceTotals> {
    let mut histograms = read_histograms(&skel.maps.backlog_hist, Detector::RxBacklog, cpus)?;
    histograms.extend(read_histograms(
        &skel.maps.softirq_delay_hist,
        Detector::SoftirqDelay,
        cpus,
    )?);
    Ok(TraceTotals {
        ring_drops: sum_counter(
            &skel.maps.counters,
            counter(ns_trace_counter::TC_RING_DROPS),
        )?,
        histograms,
        net_rx_ns: per_cpu_counter(&skel.maps.counters, counter(ns_trace_counter::TC_NET_RX_NS))?,
        bpf_run_ns: stats_of.map(|p| bpf_run_ns(skel, p)).transpose()?,
        flush_ledger: read_ledger(&skel.maps.flush_ledger),
    })
}

/// The ledger map's entries (`struct ns_flush_key` → `struct ns_flush_val`).
/// An entry the LRU evicts between listing and lookup is skipped.
fn read_ledger(map: &dyn MapCore) -> Vec<super::FlushLedger> {
    let u64_at = |bytes: &[u8], at: usize| {
        bytes
            .get(at..at + 8)
            .map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
    };
    map.keys()
        .filter_map(|key| {
            let value = map.lookup(&key, MapFlags::ANY).ok()??;
            let comm = key.get(..16)?;
            let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
            Some(super::FlushLedger {
                comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
                cgroup_id: u64_at(&key, 16),
                flushes: u64_at(&value, 0),
                locked_ns: u64_at(&value, 8),
            })
        })
        .collect()
}

fn read_histograms(
    map: &dyn MapCore,
    detector: Detector,
    cpus: &Option<Vec<u32>>,
) -> Result<Vec<Histogram>> {
    let mut per_cpu: Vec<Vec<(u64, u64)>> = Vec::new();
    for slot in 0..HIST_SLOTS {
        let values = map
            .lookup_percpu(&slot.to_ne_bytes(), MapFlags::ANY)?
            .unwrap_or_default();
        per_cpu.resize(values.len(), Vec::new());
        for (cpu, v) in values.iter().enumerate() {
            let n = u64::from_ne_bytes(v[..8].try_into().expect("u64 bucket"));
            if n > 0 {
                per_cpu[cpu].push((1u64 << (slot + 1), n));
            }
        }
    }
    Ok(per_cpu
        .into_iter()
        .enumerate()
        .filter(|(cpu, b)| {
            !b.is_empty() && cpus.as_ref().is_none_or(|c| c.contains(&(*cpu as u32)))
        })
        .map(|(cpu, buckets)| Histogram {
            detector,
            cpu: cpu as u32,
            buckets,
        })
        .collect())
}

/// The local timer's period (1 / CONFIG_HZ), from the kernel's config read
/// in process (privileged code runs no program found through PATH):
/// `/proc/config.gz`, else `/boot/config-RELEASE`. Without either, 10 ms
/// (HZ=100), the longest in use: a longer period only makes the irqs-off
/// detector less eager.
fn tick_period_ns() -> u64 {
    kernel_config()
        .and_then(|config| kernel_hz(&config))
        .map_or(10_000_000, |hz| 1_000_000_000 / hz)
}

/// The running kernel's build config, if it can be read (at most 1 MiB).
fn kernel_config() -> Option<String> {
    use std::io::Read;
    const MAX_CONFIG: u64 = 1 << 20;
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open("/proc/config.gz") {
        flate2::read::GzDecoder::new(file)
            .take(MAX_CONFIG)
            .read_to_string(&mut text)
            .ok()?;
        return Some(text);
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    std::fs::File::open(format!("/boot/config-{}", release.trim()))
        .ok()?
        .take(MAX_CONFIG)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// `CONFIG_HZ=250` → 250.
fn kernel_hz(config: &str) -> Option<u64> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&hz| hz > 0)
}

fn cpu_mask(cpus: &[u32]) -> Result<[u64; MAX_CPUS / 64]> {
    let mut mask = [0u64; MAX_CPUS / 64];
    for &cpu in cpus {
        if cpu as usize >= MAX_CPUS {
            bail!("--cpus: CPU {cpu} is beyond the {MAX_CPUS} the tracer supports");
        }
        mask[cpu as usize / 64] |= 1 << (cpu % 64);
    }
    Ok(mask)
}

/// Traces until `stop`, calling `on_event` for each stall (and ICMP echo or
/// slow syscall when asked for), then reports what else it saw.
pub fn run(
    config: &TraceConfig,
    stop: &Stop,
    mut on_event: impl FnMut(TraceEvent),
) -> Result<TraceReport> {
    if config.threshold < Duration::from_micros(100) {
        bail!("--threshold must be at least 100us");
    }
    if let Some(cpus) = &config.cpus {
        netstall_core::cpu::check_online(cpus)?;
    }
    crate::require_bpf("netstall trace")?;
    privilege::require(&[Capability::Syslog], "netstall trace (kernel symbols)")?;
    let icmp_rcv = if config.icmp {
        let kallsyms =
            std::fs::read_to_string("/proc/kallsyms").context("cannot read /proc/kallsyms")?;
        symbol_range(&kallsyms, "icmp_rcv").context("--icmp-seq")?
    } else {
        (0, 0)
    };
    let params = Params {
        threshold_ns: config.threshold.as_nanos() as u64,
        tick_ns: tick_period_ns(),
        packet_floor_ns: config.packet_floor.as_nanos() as u64,
        syscall_threshold_ns: config.syscalls.map_or(u64::MAX, |d| d.as_nanos() as u64),
        cpu_mask: config.cpus.as_deref().map(cpu_mask).transpose()?,
        fd_syscalls: syscall_names::fd_syscall_bitmap(),
        icmp_rcv,
        report_steal: config.steal,
    };
    let mut wanted: Vec<TraceDetector> = TraceDetector::STALLS.to_vec();
    wanted.push(TraceDetector::Nosched);
    if config.steal {
        wanted.push(TraceDetector::Steal);
    }
    if config.syscalls.is_some() {
        wanted.push(TraceDetector::Syscalls);
    }
    if config.icmp {
        wanted.push(TraceDetector::Icmp);
    }

    let stats = config.self_cost.then(enable_bpf_stats).transpose()?;
    // libbpf narrates failures (verifier logs) on stderr; errors are reported
    // as one line instead. NETSTALL_BPF_LOG=1 keeps the narration.
    if std::env::var_os("NETSTALL_BPF_LOG").is_none() {
        libbpf_rs::set_print(None);
    }
    let mut first = MaybeUninit::uninit();
    let mut second = MaybeUninit::uninit();
    let (skel, programs, unavailable) = load(&mut first, &mut second, &params, &wanted)?;
    let links: Vec<Link> = skel
        .object()
        .progs_mut()
        .filter(|p| programs.iter().any(|name| p.name() == *name))
        .map(|p| {
            p.attach()
                .with_context(|| format!("attach {}", p.section().to_string_lossy()))
        })
        .collect::<Result<_>>()?;

    on_event(TraceEvent::Started(TraceStart {
        ts_ns: realtime_ns(),
        detectors: wanted
            .iter()
            .filter(|d| !unavailable.iter().any(|u| u.detector == **d))
            .copied()
            .collect(),
        unavailable: unavailable.clone(),
    }));
    let started = Instant::now();
    let clock = ClockOffset::sample();
    let mut symbols = KernelSymbols::new();
    let settle_ns = config.settle.as_nanos() as u64;
    let syscall_threshold_ns = config.syscalls.map(|d| d.as_nanos() as u64);
    let mut assembler = Assembler::new(settle_ns);
    let mut recorder = config
        .record
        .as_deref()
        .map(|path| Recorder::create(path, settle_ns, syscall_threshold_ns))
        .transpose()?;
    let mut stalls = 0u64;
    let raws = RefCell::new(Vec::new());
    let mut builder = RingBufferBuilder::new();
    builder.add(&skel.maps.events, |data: &[u8]| {
        raws.borrow_mut().push(data.to_vec());
        0
    })?;
    let ring = builder.build()?;
    let mut next_totals = config.totals_every.map(|every| started + every);

    loop {
        let stopping = stop.should_stop(started);
        let polled = if stopping {
            ring.consume()
        } else {
            let wait = [
                Some(stop.left(started)),
                assembler
                    .next_due()
                    .map(|due| Duration::from_nanos(due.saturating_sub(realtime_ns()))),
                next_totals.map(|due| due.saturating_duration_since(Instant::now())),
                symbols.idle_left(SYMBOLS_IDLE),
            ]
            .into_iter()
            .flatten()
            .fold(MAX_WAIT, Duration::min);
            match &stop.shutdown {
                Some(shutdown) => {
                    // SAFETY: the ring buffer, and so its epoll fd, outlives the wait.
                    let events = unsafe { BorrowedFd::borrow_raw(ring.epoll_fd()) };
                    shutdown
                        .wait_readable(events, wait)
                        .context("wait for trace events")?;
                    ring.consume()
                }
                None => ring.poll(wait),
            }
        };
        if let Err(e) = polled {
            // A signal (Ctrl-C) interrupts the wait; anything else is real.
            if e.kind() != libbpf_rs::ErrorKind::Interrupted {
                return Err(e).context("read the trace ring buffer");
            }
        }
        let batch = std::mem::take(&mut *raws.borrow_mut());
        for bytes in &batch {
            let Some(raw) = raw_from_bytes(bytes) else {
                continue;
            };
            let event = decode(
                &raw,
                &clock,
                &mut |addrs| {
                    let frames = symbols.frames(addrs);
                    if let Some(recorder) = recorder.as_mut() {
                        recorder.frames(addrs, &frames);
                    }
                    frames
                },
                &syscall_names::name,
            );
            if let Some(recorder) = recorder.as_mut() {
                recorder.event(bytes, clock.offset_ns())?;
            }
            if let Some(streamed) =
                event.and_then(|e| route(e, syscall_threshold_ns, &mut assembler))
            {
                on_event(streamed.into());
            }
        }
        symbols.release_if_idle(SYMBOLS_IDLE);
        let now = if stopping { u64::MAX } else { realtime_ns() };
        let mut done = assembler.drain(now);
        for stall in &mut done {
            if let Some(c) = stall.culprit.as_mut().filter(|c| c.pid != 0) {
                c.cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", c.pid))
                    .ok()
                    .and_then(|text| cgroup_of(&text));
            }
        }
        if let Some(recorder) = recorder.as_mut() {
            recorder.drained(now, &done)?;
        }
        for stall in done {
            stalls += 1;
            on_event(TraceEvent::Stall(stall));
        }
        if let (Some(due), Some(every)) = (next_totals.as_mut(), config.totals_every) {
            // And once more at the end: what the last stretch counted.
            if stopping || Instant::now() >= *due {
                *due += every;
                let stats_of = stats.as_ref().map(|_| programs.as_slice());
                on_event(TraceEvent::Totals(totals(&skel, &config.cpus, stats_of)?));
            }
        }
        if stopping {
            break;
        }
    }
    drop(ring);
    if let Some(recorder) = recorder {
        recorder.finish()?;
    }

    let self_cost = if stats.is_some() {
        skel.object()
            .progs()
            .filter(|p| programs.iter().any(|name| p.name() == *name))
            .filter_map(|p| {
                let name = p.name().to_string_lossy().into_owned();
                let detector = detector_of(&name)?;
                Some(
                    program_stats(&p).map(|(run_count, run_time_ns)| ProgramCost {
                        detector,
                        program: name,
                        run_count,
                        run_time_ns,
                        ns_per_event: (run_count > 0)
                            .then(|| run_time_ns as f64 / run_count as f64),
                    }),
                )
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    drop(links);

    let counters = &skel.maps.counters;
    let TraceTotals {
        ring_drops,
        histograms,
        ..
    } = totals(&skel, &config.cpus, None)?;
    let sum = |c| sum_counter(counters, counter(c));
    Ok(TraceReport {
        duration_ms: started.elapsed().as_millis() as u64,
        stalls,
        ring_drops,
        packets: histograms
            .iter()
            .filter(|h| h.detector == Detector::RxBacklog)
            .flat_map(|h| h.buckets.iter().map(|(_, n)| n))
            .sum(),
        packets_waited: sum(ns_trace_counter::TC_PACKETS_WAITED)?,
        ksoftirqd_takeovers: sum(ns_trace_counter::TC_KSOFTIRQD)?,
        unmatched_packets: sum(ns_trace_counter::TC_SLOT_MISSES)?,
        unavailable,
        histograms,
        self_cost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_hz_comes_from_the_config() {
        assert_eq!(
            kernel_hz("# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"),
            Some(250)
        );
        assert_eq!(kernel_hz("CONFIG_HZ_1000=y\n"), None);
    }

    #[test]
    fn the_kernel_config_is_read_in_process() {
        // Where the kernel exposes its config (here it does), HZ comes from it
        // with PATH empty: no zcat is run.
        if !std::path::Path::new("/proc/config.gz").exists() {
            return;
        }
        let config = kernel_config().expect("/proc/config.gz decompresses");
        assert!(
            kernel_hz(&config).is_some(),
            "no CONFIG_HZ in /proc/config.gz"
        );
    }

    #[test]
    fn cpu_mask_sets_bits_and_rejects_huge_cpus() {
        let mask = cpu_mask(&[0, 65]).unwrap();
        assert_eq!(mask[0], 1);
        assert_eq!(mask[1], 2);
        assert!(cpu_mask(&[5000]).is_err());
    }

    #[test]
    fn a_missing_tracepoint_drops_only_the_detectors_that_need_it() {
        use TraceDetector::Stall;
        let wanted = [
            Stall(Detector::RxBacklog),
            Stall(Detector::IrqsOff),
            Stall(Detector::Ksoftirqd),
            Stall(Detector::RstatHold),
        ];
        let failures = [(
            "on_rstat_unlock",
            "tp_btf/cgroup_rstat_unlock does not load: No such file or directory".to_string(),
        )];
        let (usable, unavailable) = plan(&wanted, &failures).unwrap();
        assert_eq!(usable, wanted[..3]);
        assert_eq!(unavailable.len(), 1);
        assert_eq!(unavailable[0].detector, Stall(Detector::RstatHold));
        assert!(unavailable[0].reason.contains("cgroup_rstat_unlock"));

        // sched_switch serves two detectors: both go.
        let failures = [("on_sched_switch", "EPERM".to_string())];
        let (usable, _) = plan(&wanted, &failures).unwrap();
        assert_eq!(usable, [wanted[0], wanted[3]]);
    }

    #[test]
    fn missing_icmp_or_every_stall_detector_is_an_error_naming_the_tracepoint() {
        let failures = [(
            "on_icmp_consume",
            "tp_btf/consume_skb does not load: Invalid argument".to_string(),
        )];
        let irqs_off = TraceDetector::Stall(Detector::IrqsOff);
        let err = plan(&[irqs_off, TraceDetector::Icmp], &failures)
            .unwrap_err()
            .to_string();
        assert!(err.contains("skb:consume_skb"), "{err}");

        let failures = [(
            "on_local_timer_entry",
            "tp_btf/local_timer_entry does not load: No such file or directory".to_string(),
        )];
        let err = plan(&[irqs_off], &failures).unwrap_err().to_string();
        assert!(err.contains("local_timer_entry"), "{err}");
    }

    #[test]
    fn every_program_belongs_to_a_detector_and_exists() {
        let mut storage = MaybeUninit::uninit();
        let open = TraceSkelBuilder::default().open(&mut storage).unwrap();
        let names: Vec<String> = open
            .open_object()
            .progs()
            .map(|p| p.name().to_string_lossy().into_owned())
            .collect();
        for name in &names {
            assert!(detector_of(name).is_some(), "{name} serves no detector");
        }
        for detector in DETECTORS {
            for program in programs(detector) {
                assert!(names.iter().any(|n| n == program), "{program}");
            }
        }
    }
}
