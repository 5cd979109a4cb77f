//! A trace recording: the raw ring-buffer records one run of the tracer
//! read, with what decoding them needed from the machine (the clock offset,
//! the names its stack addresses had in kallsyms, the culprits' cgroups),
//! so that decoding and assembly replay offline, anywhere: golden tests on
//! recorded runs, and a recording attached to a bug report
//! (`netstall trace --record FILE`).
//!
//! The file is text, one item a line, in the order the tracer met them:
//!
//! ```text
//! # netstall trace recording v1
//! settle-ns 500000000
//! syscalls-ns 10000000          (only with --syscalls)
//! clock 1764839000123456789     (REALTIME − MONOTONIC ns, again whenever it moved)
//! event 0100000002000000…       (one ring-buffer record, hex)
//! drain 1764840001234000000     (the tracer completed stalls at this REALTIME ns)
//! symbol ffffffff8123abcd css_rstat_flush
//! cgroup 4242 /system.slice/cadvisor.service
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use netstall_events::kernel::{IcmpEcho, Nonpreemptible, SlowSyscall, Stall, Steal, StealSource};
use netstall_events::stack;

use super::assemble::Assembler;
use super::event::{decode, raw_from_bytes, Clock, KernelEvent};
use super::syscall_names;

/// The first line of every recording.
pub const HEADER: &str = "# netstall trace recording v1";

/// What the tracer streams, as a recording replays it.
#[derive(Debug, Clone, PartialEq)]
pub enum Replayed {
    Stall(Stall),
    Icmp(IcmpEcho),
    Syscall(SlowSyscall),
    Steal(Steal),
    Nonpreemptible(Nonpreemptible),
}

/// One line of a recording's body, in order.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Clock(i64),
    Event(Vec<u8>),
    Drain(u64),
}

/// A recording, read back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recording {
    pub settle_ns: u64,
    /// Slow syscalls at least this long were reported (`--syscalls`).
    pub syscall_threshold_ns: Option<u64>,
    items: Vec<Item>,
    symbols: HashMap<u64, String>,
    cgroups: HashMap<u32, String>,
}

/// A fixed REALTIME − MONOTONIC offset.
struct Offset(i64);

impl Clock for Offset {
    fn to_realtime(&self, monotonic_ns: u64) -> u64 {
        (monotonic_ns as i128 + self.0 as i128).max(0) as u64
    }
}

impl Recording {
    /// Reads a recording; an error names the line.
    pub fn parse(text: &str) -> Result<Self> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, HEADER)) => {}
            _ => bail!("not a netstall trace recording: line 1 is not `{HEADER}`"),
        }
        let mut recording = Recording::default();
        for (index, line) in lines {
            let number = index + 1;
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            let parsed = match word {
                "settle-ns" => rest.parse().map(|n| recording.settle_ns = n).ok(),
                "syscalls-ns" => rest
                    .parse()
                    .map(|n| recording.syscall_threshold_ns = Some(n))
                    .ok(),
                "clock" => rest
                    .parse()
                    .map(|n| recording.items.push(Item::Clock(n)))
                    .ok(),
                "event" => from_hex(rest).map(|bytes| recording.items.push(Item::Event(bytes))),
                "drain" => rest
                    .parse()
                    .map(|n| recording.items.push(Item::Drain(n)))
                    .ok(),
                "symbol" => rest.split_once(' ').and_then(|(addr, name)| {
                    let addr = u64::from_str_radix(addr, 16).ok()?;
                    recording.symbols.insert(addr, name.to_string());
                    Some(())
                }),
                "cgroup" => rest.split_once(' ').and_then(|(pid, path)| {
                    recording
                        .cgroups
                        .insert(pid.parse().ok()?, path.to_string());
                    Some(())
                }),
                "" => Some(()),
                _ => None,
            };
            if parsed.is_none() {
                bail!(
                    "line {number} of the recording is not understood: `{}`",
                    clip(line)
                );
            }
        }
        Ok(recording)
    }

    /// Reads a recording file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{}", path.display()))
    }

    /// Decodes and assembles the recorded records as the live tracer did:
    /// what it streamed, in the same order.
    pub fn replay(&self) -> Result<Vec<Replayed>> {
        let mut clock = None;
        let mut assembler = Assembler::new(self.settle_ns);
        let mut out = Vec::new();
        let mut symbolize = |addrs: &[u64]| -> Vec<String> {
            addrs
                .iter()
                .map(|a| {
                    self.symbols
                        .get(a)
                        .cloned()
                        .unwrap_or_else(|| stack::unknown_frame(*a))
                })
                .collect()
        };
        for item in &self.items {
            match item {
                Item::Clock(offset) => clock = Some(Offset(*offset)),
                Item::Event(bytes) => {
                    let clock = clock
                        .as_ref()
                        .context("the recording has an event before its first clock line")?;
                    let raw = raw_from_bytes(bytes).context(
                        "a recorded event is shorter than this build's ring-buffer record",
                    )?;
                    let Some(event) = decode(&raw, clock, &mut symbolize, &syscall_names::name)
                    else {
                        continue;
                    };
                    if let Some(replayed) = route(event, self.syscall_threshold_ns, &mut assembler)
                    {
                        out.push(replayed);
                    }
                }
                Item::Drain(now) => out.extend(self.drain(&mut assembler, *now)),
            }
        }
        out.extend(self.drain(&mut assembler, u64::MAX));
        Ok(out)
    }

    fn drain(&self, assembler: &mut Assembler, now_ns: u64) -> Vec<Replayed> {
        assembler
            .drain(now_ns)
            .into_iter()
            .map(|mut stall| {
                if let Some(c) = stall.culprit.as_mut() {
                    c.cgroup = self.cgroups.get(&c.pid).cloned();
                }
                Replayed::Stall(stall)
            })
            .collect()
    }
}

/// What the tracer does with one decoded event: ICMP echoes, slow syscalls
/// and steal go to the caller at once; stall evidence (and every syscall,
/// for the culprits' durations) to the assembler.
pub(super) fn route(
    event: KernelEvent,
    syscall_threshold_ns: Option<u64>,
    assembler: &mut Assembler,
) -> Option<Replayed> {
    match event {
        KernelEvent::IcmpEcho {
            cpu,
            seq,
            id,
            ref task,
            ts_ns,
        } => Some(Replayed::Icmp(IcmpEcho {
            seq,
            id,
            cpu,
            comm: task.comm.clone(),
            pid: task.pid,
            tid: task.tid,
            ksoftirqd: task.is_ksoftirqd(),
            ts_ns,
        })),
        KernelEvent::Syscall {
            cpu,
            ref task,
            ref syscall,
            end_ns,
            ret,
            ..
        } => {
            let start_ns = syscall.start_ns.unwrap_or(end_ns);
            let duration_ns = end_ns.saturating_sub(start_ns);
            let slow = syscall_threshold_ns
                .is_some_and(|t| duration_ns >= t)
                .then(|| {
                    Replayed::Syscall(SlowSyscall {
                        comm: task.comm.clone(),
                        pid: task.pid,
                        tid: task.tid,
                        cpu,
                        syscall: syscall.name.clone(),
                        path: syscall.path.clone(),
                        start_ns,
                        end_ns,
                        duration_ms: duration_ns as f64 / 1e6,
                        ret,
                    })
                });
            assembler.push(event);
            slow
        }
        KernelEvent::Steal {
            cpu,
            start_ns,
            end_ns,
            stolen_ns,
        } => Some(Replayed::Steal(Steal {
            cpu,
            start_ns,
            end_ns,
            steal_ms: stolen_ns as f64 / 1e6,
            source: StealSource::StealClock,
        })),
        KernelEvent::Nonpreemptible(n) => Some(Replayed::Nonpreemptible(n)),
        _ => {
            assembler.push(event);
            None
        }
    }
}

/// Writes a recording while the tracer runs.
pub(super) struct Recorder {
    file: BufWriter<File>,
    offset: Option<i64>,
    symbols: HashMap<u64, String>,
    cgroups: HashMap<u32, String>,
    path: String,
}

impl Recorder {
    pub fn create(path: &Path, settle_ns: u64, syscall_threshold_ns: Option<u64>) -> Result<Self> {
        let shown = path.display().to_string();
        let file = File::create(path).with_context(|| format!("cannot create {shown}"))?;
        let mut recorder = Self {
            file: BufWriter::new(file),
            offset: None,
            symbols: HashMap::new(),
            cgroups: HashMap::new(),
            path: shown,
        };
        let mut head = format!("{HEADER}\nsettle-ns {settle_ns}\n");
        if let Some(t) = syscall_threshold_ns {
            head.push_str(&format!("syscalls-ns {t}\n"));
        }
        recorder.write(&head)?;
        Ok(recorder)
    }

    /// One ring-buffer record, decoded with `offset_ns`.
    pub fn event(&mut self, bytes: &[u8], offset_ns: i64) -> Result<()> {
        if self.offset != Some(offset_ns) {
            self.offset = Some(offset_ns);
            self.write(&format!("clock {offset_ns}\n"))?;
        }
        let mut line = String::with_capacity(7 + 2 * bytes.len());
        line.push_str("event ");
        for b in bytes {
            line.push_str(&format!("{b:02x}"));
        }
        line.push('\n');
        self.write(&line)
    }

    /// The names the symbolizer gave `addrs`.
    pub fn frames(&mut self, addrs: &[u64], frames: &[String]) {
        for (addr, frame) in addrs.iter().zip(frames) {
            self.symbols.entry(*addr).or_insert_with(|| frame.clone());
        }
    }

    /// The tracer completed `stalls` at `now_ns`.
    pub fn drained(&mut self, now_ns: u64, stalls: &[Stall]) -> Result<()> {
        for c in stalls.iter().filter_map(|s| s.culprit.as_ref()) {
            if let Some(cgroup) = &c.cgroup {
                self.cgroups.insert(c.pid, cgroup.clone());
            }
        }
        if stalls.is_empty() || now_ns == u64::MAX {
            return Ok(());
        }
        self.write(&format!("drain {now_ns}\n"))
    }

    /// Writes the symbols and cgroups met, and closes the file.
    pub fn finish(mut self) -> Result<()> {
        let mut symbols: Vec<_> = std::mem::take(&mut self.symbols).into_iter().collect();
        symbols.sort();
        let mut cgroups: Vec<_> = std::mem::take(&mut self.cgroups).into_iter().collect();
        cgroups.sort();
        let mut tail = String::new();
        for (addr, name) in symbols {
            tail.push_str(&format!("symbol {addr:x} {name}\n"));
        }
        for (pid, path) in cgroups {
            tail.push_str(&format!("cgroup {pid} {path}\n"));
        }
        self.write(&tail)?;
        self.file
            .flush()
            .with_context(|| format!("cannot write {}", self.path))
    }

    fn write(&mut self, text: &str) -> Result<()> {
        self.file
            .write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", self.path))
    }
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The start of a long line, for an error message.
fn clip(line: &str) -> String {
    match line.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}
