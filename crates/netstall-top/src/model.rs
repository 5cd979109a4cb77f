//! What the screen shows, kept up to date from the sources' updates (pure:
//! no I/O, no clock; every function takes the time it should use).
//!
//! * lanes: per CPU, the last [`WINDOW_NS`] as cells (stall blocks by
//!   detector, sample gaps, NET_RX softirq time);
//! * culprits: stalls grouped by task, syscall, file and naming frame;
//! * targets: RTTs, loss and episodes of each probed target;
//! * status: dying memory cgroups, the tracer's cost, ring-buffer drops and
//!   this view's own CPU use.

use std::collections::{HashMap, VecDeque};

use netstall_events::kernel::{Detector, Stall};
use netstall_events::stack;

/// How far back the lanes and sparklines look.
pub const WINDOW_NS: u64 = 60_000_000_000;
/// Stalls kept for the detail view of each culprit: its worst and its latest.
/// Older stalls only count.
const MAX_STALLS_KEPT: usize = 4096;
/// RTT points kept per target (the sparkline's window at 10 ms is 6000).
const MAX_RTTS_KEPT: usize = 8192;

/// One update from a source.
#[derive(Debug, Clone)]
pub enum Update {
    Stall(Box<Stall>),
    /// The tracer's running totals: cumulative NET_RX time per CPU (index =
    /// CPU), cumulative BPF run time, ring-buffer drops.
    Totals {
        ts_ns: u64,
        net_rx_ns: Vec<u64>,
        bpf_run_ns: Option<u64>,
        ring_drops: u64,
    },
    /// CPU sampling saw no sample on `cpu` for this long (IRQs off).
    SampleGap {
        cpu: u32,
        start_ns: u64,
        duration_ms: f64,
    },
    Probe {
        target: usize,
        sent_ns: u64,
        rtt_us: Option<f64>,
    },
    Episode {
        target: usize,
        start_ns: u64,
        duration_ms: f64,
    },
    DyingMemcgs(u64),
    /// This process's CPU use over the last interval, percent of one CPU.
    OwnCpu(f64),
    /// A source stopped or could not start: shown on the status line.
    Note(String),
}

/// What one lane cell shows, most important first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Stall(Detector),
    SampleGap,
    /// Fraction of the cell's time in NET_RX softirq, in eighths (1..=8).
    NetRx(u8),
    Quiet,
    /// Before the view started (nothing was measured).
    Unknown,
}

impl Cell {
    /// The character drawn for the cell: stall blocks carry their detector's
    /// letter, so the lane reads the same without colour (ssh, tmux capture).
    pub fn glyph(self) -> char {
        match self {
            Cell::Stall(d) => detector_letter(d),
            Cell::SampleGap => 'G',
            Cell::NetRx(level) => {
                ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'][level.clamp(1, 8) as usize - 1]
            }
            Cell::Quiet => '·',
            Cell::Unknown => ' ',
        }
    }
}

/// The letter of a detector's stall blocks.
pub fn detector_letter(detector: Detector) -> char {
    match detector {
        Detector::IrqsOff => 'I',
        Detector::RstatHold => 'R',
        Detector::SoftirqDelay => 'S',
        Detector::Ksoftirqd => 'K',
        Detector::RxBacklog => 'B',
    }
}

/// NET_RX time measured between two totals.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Busy {
    start_ns: u64,
    end_ns: u64,
    busy_ns: u64,
}

#[derive(Debug, Clone, Default)]
struct CpuState {
    /// Stalls in the window: (start, end, detector).
    stalls: VecDeque<(u64, u64, Detector)>,
    gaps: VecDeque<(u64, u64)>,
    net_rx: VecDeque<Busy>,
    /// The last cumulative NET_RX total and when it was read.
    last_total: Option<(u64, u64)>,
}

/// Stalls that share a culprit: task, syscall, file and naming frame.
#[derive(Debug, Clone, PartialEq)]
pub struct CulpritRow {
    pub task: String,
    pub syscall: Option<String>,
    pub path: Option<String>,
    /// The frame that names the culprit's stack (a BPF program's name, or
    /// the first frame that is not interrupt/softirq/syscall plumbing).
    pub frame: Option<String>,
    pub stalls: u64,
    pub worst_ms: f64,
    pub total_ms: f64,
    pub last_ns: u64,
    /// The worst stall, for the detail view.
    pub worst: Stall,
}

type CulpritKey = (String, Option<String>, Option<String>, Option<String>);

/// One probed target.
#[derive(Debug, Clone, Default)]
pub struct TargetView {
    pub name: String,
    /// (sent, RTT in µs or `None` when lost), oldest first.
    rtts: VecDeque<(u64, Option<f64>)>,
    pub sent: u64,
    pub lost: u64,
    pub episodes: u64,
    pub last_episode: Option<(u64, f64)>,
}

impl TargetView {
    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * self.lost as f64 / self.sent as f64
        }
    }

    /// The largest RTT in the window, µs.
    pub fn max_rtt_us(&self, now_ns: u64) -> Option<f64> {
        let from = now_ns.saturating_sub(WINDOW_NS);
        self.rtts
            .iter()
            .filter(|(t, _)| *t >= from)
            .filter_map(|(_, r)| *r)
            .reduce(f64::max)
    }

    /// `width` columns over the window: the worst RTT of each column as a
    /// level 1..=8 of the window's largest, 0 where nothing was answered,
    /// and `None` where a probe was lost (or nothing was sent).
    pub fn sparkline(&self, now_ns: u64, width: usize) -> Vec<Spark> {
        let from = now_ns.saturating_sub(WINDOW_NS);
        let mut worst: Vec<Option<f64>> = vec![None; width];
        let mut lost = vec![false; width];
        for &(t, rtt) in self.rtts.iter().filter(|(t, _)| *t >= from && *t < now_ns) {
            let col = column(t, now_ns, width);
            match rtt {
                Some(r) => worst[col] = Some(worst[col].map_or(r, |w: f64| w.max(r))),
                None => lost[col] = true,
            }
        }
        let max = worst.iter().flatten().copied().fold(0.0, f64::max);
        worst
            .iter()
            .zip(&lost)
            .map(|(w, lost)| match (w, lost) {
                (_, true) => Spark::Lost,
                (Some(r), false) if max > 0.0 => {
                    Spark::Level(((r / max * 8.0).ceil() as u8).clamp(1, 8))
                }
                _ => Spark::Empty,
            })
            .collect()
    }
}

/// One column of a sparkline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spark {
    Empty,
    Lost,
    Level(u8),
}

impl Spark {
    pub fn glyph(self) -> char {
        match self {
            Spark::Empty => ' ',
            Spark::Lost => 'x',
            Spark::Level(l) => ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'][l.clamp(1, 8) as usize - 1],
        }
    }
}

/// The status line's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub dying_memcgs: Option<u64>,
    /// BPF run time per wall-clock second, ns (the tracer's cost).
    pub bpf_ns_per_s: Option<f64>,
    pub ring_drops: u64,
    pub own_cpu_pct: Option<f64>,
    pub notes: Vec<String>,
}

/// Everything the screen shows.
#[derive(Debug, Clone)]
pub struct Model {
    pub cpus: Vec<u32>,
    pub started_ns: u64,
    cpu: HashMap<u32, CpuState>,
    culprits: HashMap<CulpritKey, CulpritRow>,
    pub targets: Vec<TargetView>,
    pub status: Status,
    pub stalls_total: u64,
    last_bpf: Option<(u64, u64)>,
}

impl Model {
    pub fn new(cpus: Vec<u32>, targets: Vec<String>, started_ns: u64) -> Self {
        Self {
            cpu: cpus.iter().map(|&c| (c, CpuState::default())).collect(),
            cpus,
            started_ns,
            culprits: HashMap::new(),
            targets: targets
                .into_iter()
                .map(|name| TargetView {
                    name,
                    ..TargetView::default()
                })
                .collect(),
            status: Status::default(),
            stalls_total: 0,
            last_bpf: None,
        }
    }

    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Stall(stall) => self.add_stall(*stall),
            Update::Totals {
                ts_ns,
                net_rx_ns,
                bpf_run_ns,
                ring_drops,
            } => {
                for (cpu, &total) in net_rx_ns.iter().enumerate() {
                    let Some(state) = self.cpu.get_mut(&(cpu as u32)) else {
                        continue;
                    };
                    if let Some((t0, v0)) = state.last_total {
                        if ts_ns > t0 {
                            state.net_rx.push_back(Busy {
                                start_ns: t0,
                                end_ns: ts_ns,
                                busy_ns: total.saturating_sub(v0).min(ts_ns - t0),
                            });
                        }
                    }
                    state.last_total = Some((ts_ns, total));
                }
                if let Some(run) = bpf_run_ns {
                    if let Some((t0, r0)) = self.last_bpf.filter(|(t0, _)| ts_ns > *t0) {
                        self.status.bpf_ns_per_s =
                            Some(run.saturating_sub(r0) as f64 * 1e9 / (ts_ns - t0) as f64);
                    }
                    self.last_bpf = Some((ts_ns, run));
                }
                self.status.ring_drops = ring_drops;
            }
            Update::SampleGap {
                cpu,
                start_ns,
                duration_ms,
            } => {
                if let Some(state) = self.cpu.get_mut(&cpu) {
                    state
                        .gaps
                        .push_back((start_ns, start_ns + (duration_ms * 1e6) as u64));
                }
            }
            Update::Probe {
                target,
                sent_ns,
                rtt_us,
            } => {
                if let Some(t) = self.targets.get_mut(target) {
                    t.sent += 1;
                    t.lost += u64::from(rtt_us.is_none());
                    t.rtts.push_back((sent_ns, rtt_us));
                    if t.rtts.len() > MAX_RTTS_KEPT {
                        t.rtts.pop_front();
                    }
                }
            }
            Update::Episode {
                target,
                start_ns,
                duration_ms,
            } => {
                if let Some(t) = self.targets.get_mut(target) {
                    t.episodes += 1;
                    t.last_episode = Some((start_ns, duration_ms));
                }
            }
            Update::DyingMemcgs(n) => self.status.dying_memcgs = Some(n),
            Update::OwnCpu(pct) => self.status.own_cpu_pct = Some(pct),
            Update::Note(note) => {
                if !self.status.notes.contains(&note) {
                    self.status.notes.push(note);
                }
            }
        }
    }

    fn add_stall(&mut self, stall: Stall) {
        self.stalls_total += 1;
        let end = stall.start_ns + (stall.duration_ms * 1e6) as u64;
        if let Some(state) = self.cpu.get_mut(&stall.cpu) {
            state
                .stalls
                .push_back((stall.start_ns, end, stall.detector));
            if state.stalls.len() > MAX_STALLS_KEPT {
                state.stalls.pop_front();
            }
        }
        let key = culprit_key(&stall);
        let row = self
            .culprits
            .entry(key.clone())
            .or_insert_with(|| CulpritRow {
                task: key.0.clone(),
                syscall: key.1.clone(),
                path: key.2.clone(),
                frame: key.3.clone(),
                stalls: 0,
                worst_ms: 0.0,
                total_ms: 0.0,
                last_ns: 0,
                worst: stall.clone(),
            });
        row.stalls += 1;
        row.total_ms += stall.duration_ms;
        row.last_ns = row.last_ns.max(stall.start_ns);
        if stall.duration_ms >= row.worst_ms {
            row.worst_ms = stall.duration_ms;
            row.worst = stall;
        }
    }

    /// Forgets what is older than the window (the culprits table keeps
    /// its totals since the start).
    pub fn prune(&mut self, now_ns: u64) {
        let from = now_ns.saturating_sub(WINDOW_NS);
        for state in self.cpu.values_mut() {
            while state.stalls.front().is_some_and(|s| s.1 < from) {
                state.stalls.pop_front();
            }
            while state.gaps.front().is_some_and(|g| g.1 < from) {
                state.gaps.pop_front();
            }
            while state.net_rx.front().is_some_and(|b| b.end_ns < from) {
                state.net_rx.pop_front();
            }
        }
        for t in &mut self.targets {
            while t.rtts.front().is_some_and(|(s, _)| *s < from) {
                t.rtts.pop_front();
            }
        }
    }

    /// The lane of `cpu`: `width` cells, oldest left, each covering
    /// `WINDOW_NS / width` and ending at `now_ns`.
    pub fn lane(&self, cpu: u32, now_ns: u64, width: usize) -> Vec<Cell> {
        let mut cells = vec![Cell::Unknown; width];
        let Some(state) = self.cpu.get(&cpu) else {
            return cells;
        };
        if width == 0 {
            return cells;
        }
        let span = (WINDOW_NS / width as u64).max(1);
        let from = now_ns.saturating_sub(span * width as u64);
        for (i, cell) in cells.iter_mut().enumerate() {
            let (a, b) = (from + span * i as u64, from + span * (i as u64 + 1));
            if b <= self.started_ns {
                continue;
            }
            let overlaps = |s: u64, e: u64| s < b && e.max(s + 1) > a;
            *cell = if let Some(&(_, _, d)) = state
                .stalls
                .iter()
                .filter(|(s, e, _)| overlaps(*s, *e))
                .min_by_key(|(_, _, d)| detector_rank(*d))
            {
                Cell::Stall(d)
            } else if state.gaps.iter().any(|(s, e)| overlaps(*s, *e)) {
                Cell::SampleGap
            } else {
                net_rx_level(&state.net_rx, a, b).map_or(Cell::Quiet, Cell::NetRx)
            };
        }
        cells
    }

    /// Percent of the last measured interval `cpu` spent in NET_RX.
    pub fn net_rx_pct(&self, cpu: u32) -> Option<f64> {
        let busy = self.cpu.get(&cpu)?.net_rx.back()?;
        Some(100.0 * busy.busy_ns as f64 / (busy.end_ns - busy.start_ns) as f64)
    }

    /// Stalls on `cpu` within the window.
    pub fn stalls_in_window(&self, cpu: u32) -> usize {
        self.cpu.get(&cpu).map_or(0, |s| s.stalls.len())
    }

    /// The culprits, largest total stall time first.
    pub fn culprits(&self) -> Vec<&CulpritRow> {
        let mut rows: Vec<&CulpritRow> = self.culprits.values().collect();
        rows.sort_by(|a, b| {
            b.total_ms
                .total_cmp(&a.total_ms)
                .then(b.last_ns.cmp(&a.last_ns))
        });
        rows
    }
}

/// Which detector's letter a cell shows when several saw stalls in it:
/// the one closest to the cause.
fn detector_rank(d: Detector) -> u8 {
    match d {
        Detector::RstatHold => 0,
        Detector::IrqsOff => 1,
        Detector::SoftirqDelay => 2,
        Detector::Ksoftirqd => 3,
        Detector::RxBacklog => 4,
    }
}

/// NET_RX time in [a, b) as eighths, from the intervals overlapping it
/// (`None` when unmeasured or idle).
fn net_rx_level(busy: &VecDeque<Busy>, a: u64, b: u64) -> Option<u8> {
    let (mut covered, mut time) = (0u64, 0f64);
    for x in busy.iter().filter(|x| x.start_ns < b && x.end_ns > a) {
        let overlap = x.end_ns.min(b) - x.start_ns.max(a);
        covered += overlap;
        time += x.busy_ns as f64 * overlap as f64 / (x.end_ns - x.start_ns) as f64;
    }
    if covered == 0 || time < covered as f64 * 0.001 {
        return None;
    }
    Some(((time / covered as f64 * 8.0).ceil() as u8).clamp(1, 8))
}

/// The column of time `t` when `width` columns span the window ending at
/// `now_ns` (as the lanes' cells do).
fn column(t: u64, now_ns: u64, width: usize) -> usize {
    let since = t.saturating_sub(now_ns.saturating_sub(WINDOW_NS));
    ((since as u128 * width as u128 / WINDOW_NS as u128) as usize).min(width - 1)
}

fn culprit_key(stall: &Stall) -> CulpritKey {
    match &stall.culprit {
        // A softirq held the CPU: the task it interrupted (and its syscall)
        // is whoever happened to run, so the softirq and its frame name it.
        Some(c)
            if c.context
                .as_deref()
                .is_some_and(|x| x.starts_with("softirq")) =>
        {
            (
                "(softirq)".to_string(),
                None,
                None,
                stack::naming_frame(&c.kstack).map(str::to_owned),
            )
        }
        Some(c) => (
            c.comm.clone(),
            c.syscall.clone(),
            c.path.clone(),
            stack::naming_frame(&c.kstack).map(str::to_owned),
        ),
        None => (
            stall
                .drained_by
                .as_ref()
                .map_or_else(|| "?".to_string(), |d| format!("(drained by {d})")),
            None,
            None,
            None,
        ),
    }
}

/// A frame as shown: a BPF program as `bpf:NAME` (its 16-hex tag dropped).
pub fn short_frame(frame: &str) -> String {
    match stack::bpf_program(frame) {
        Some(name) => format!("bpf:{name}"),
        None => frame.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstall_events::kernel::Culprit;

    const S: u64 = 1_000_000_000;

    fn stall(cpu: u32, start_s: f64, ms: f64, detector: Detector, comm: &str) -> Stall {
        Stall {
            detector,
            cpu,
            start_ns: (start_s * 1e9) as u64,
            end_ns: (start_s * 1e9) as u64 + (ms * 1e6) as u64,
            duration_ms: ms,
            seen_by: vec![detector],
            packets: Some(3),
            max_wait_ms: Some(ms),
            drained_by: None,
            culprit: Some(Culprit {
                comm: comm.into(),
                kstack: vec![
                    "bpf_loop+0x10".into(),
                    "bpf_prog_0123456789abcdef_spin_in_softirq+0x3c".into(),
                    "handle_softirqs+0x10".into(),
                ],
                ..Culprit::default()
            }),
            node: None,
        }
    }

    #[test]
    fn a_stall_is_a_block_on_its_cpus_lane_only() {
        let mut m = Model::new(vec![0, 1], vec![], 0);
        m.apply(Update::Stall(Box::new(stall(
            0,
            90.0,
            500.0,
            Detector::SoftirqDelay,
            "swapper/0",
        ))));
        // 60 cells of one second each, ending at 100 s: the stall is in cell 50.
        let lane0 = m.lane(0, 100 * S, 60);
        assert_eq!(lane0[50], Cell::Stall(Detector::SoftirqDelay));
        assert_eq!(
            lane0.iter().filter(|c| matches!(c, Cell::Stall(_))).count(),
            1
        );
        assert!(m
            .lane(1, 100 * S, 60)
            .iter()
            .all(|c| !matches!(c, Cell::Stall(_))));
        let text: String = lane0.iter().map(|c| c.glyph()).collect();
        assert!(text.contains('S'), "{text}");
    }

    #[test]
    fn net_rx_time_shows_as_levels_and_idle_as_quiet() {
        let mut m = Model::new(vec![0], vec![], 0);
        let totals = |ts: u64, ns: u64| Update::Totals {
            ts_ns: ts,
            net_rx_ns: vec![ns],
            bpf_run_ns: Some(ts / 1000),
            ring_drops: 2,
        };
        m.apply(totals(40 * S, 0));
        m.apply(totals(50 * S, S)); // 10% of 10 s in NET_RX
        m.apply(totals(60 * S, S)); // then nothing
        let lane = m.lane(0, 60 * S, 60);
        assert_eq!(lane[45], Cell::NetRx(1));
        assert_eq!(lane[55], Cell::Quiet);
        assert_eq!(lane[10], Cell::Quiet, "before the first total: unmeasured");
        assert_eq!(m.net_rx_pct(0), Some(0.0));
        // 1 µs of BPF time per ms of wall time: 1 ms per second.
        assert_eq!(m.status.bpf_ns_per_s, Some(1_000_000.0));
        assert_eq!(m.status.ring_drops, 2);
    }

    #[test]
    fn sample_gaps_show_unless_a_stall_covers_them() {
        let mut m = Model::new(vec![0], vec![], 0);
        m.apply(Update::SampleGap {
            cpu: 0,
            start_ns: 10 * S,
            duration_ms: 50.0,
        });
        assert_eq!(m.lane(0, 60 * S, 60)[10], Cell::SampleGap);
        m.apply(Update::Stall(Box::new(stall(
            0,
            10.0,
            50.0,
            Detector::IrqsOff,
            "x",
        ))));
        assert_eq!(m.lane(0, 60 * S, 60)[10], Cell::Stall(Detector::IrqsOff));
    }

    #[test]
    fn culprits_group_by_task_and_frame_worst_first_by_total() {
        let mut m = Model::new(vec![0], vec![], 0);
        for (t, ms) in [(1.0, 50.0), (2.0, 80.0), (3.0, 20.0)] {
            m.apply(Update::Stall(Box::new(stall(
                0,
                t,
                ms,
                Detector::SoftirqDelay,
                "swapper/0",
            ))));
        }
        let mut other = stall(0, 4.0, 100.0, Detector::IrqsOff, "cadvisor");
        other.culprit.as_mut().unwrap().kstack = vec!["mem_cgroup_nr_lru_pages+0x1".into()];
        m.apply(Update::Stall(Box::new(other)));
        let rows = m.culprits();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].task, "swapper/0");
        assert_eq!(rows[0].stalls, 3);
        assert_eq!(rows[0].worst_ms, 80.0);
        assert_eq!(rows[0].total_ms, 150.0);
        assert_eq!(rows[0].worst.start_ns, 2 * S);
        let frame = rows[0].frame.as_deref().unwrap();
        assert_eq!(short_frame(frame), "bpf:spin_in_softirq");
        assert_eq!(rows[1].frame.as_deref(), Some("mem_cgroup_nr_lru_pages"));
    }

    #[test]
    fn softirq_culprits_group_by_frame_not_by_the_task_they_interrupted() {
        let mut m = Model::new(vec![0], vec![], 0);
        for (t, comm) in [(1.0, "rustc"), (2.0, "swapper/0"), (3.0, "cc1")] {
            let mut s = stall(0, t, 50.0, Detector::SoftirqDelay, comm);
            let c = s.culprit.as_mut().unwrap();
            c.context = Some("softirq TIMER".into());
            c.syscall = Some("read".into());
            m.apply(Update::Stall(Box::new(s)));
        }
        let rows = m.culprits();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].task, "(softirq)");
        assert_eq!(rows[0].syscall, None);
        assert_eq!(rows[0].stalls, 3);
        // The detail view still has the interrupted task.
        assert_eq!(rows[0].worst.culprit.as_ref().unwrap().comm, "cc1");
    }

    #[test]
    fn prune_forgets_the_lanes_past_but_not_the_culprits() {
        let mut m = Model::new(vec![0], vec!["t".into()], 0);
        m.apply(Update::Stall(Box::new(stall(
            0,
            1.0,
            10.0,
            Detector::RxBacklog,
            "a",
        ))));
        m.apply(Update::Probe {
            target: 0,
            sent_ns: S,
            rtt_us: None,
        });
        m.prune(200 * S);
        assert_eq!(m.stalls_in_window(0), 0);
        assert_eq!(m.culprits().len(), 1);
        assert_eq!(m.targets[0].sent, 1);
        assert_eq!(m.targets[0].loss_pct(), 100.0);
    }

    #[test]
    fn sparkline_scales_to_the_worst_and_marks_loss() {
        let mut m = Model::new(vec![], vec!["t".into()], 0);
        for (t, rtt) in [(1, Some(100.0)), (2, Some(800.0)), (3, None)] {
            m.apply(Update::Probe {
                target: 0,
                sent_ns: t * S,
                rtt_us: rtt,
            });
        }
        m.apply(Update::Episode {
            target: 0,
            start_ns: 2 * S,
            duration_ms: 0.8,
        });
        let line = m.targets[0].sparkline(60 * S, 60);
        assert_eq!(line[1], Spark::Level(1));
        assert_eq!(line[2], Spark::Level(8));
        assert_eq!(line[3], Spark::Lost);
        assert_eq!(line[4], Spark::Empty);
        assert_eq!(m.targets[0].episodes, 1);
        assert_eq!(m.targets[0].max_rtt_us(60 * S), Some(800.0));
    }

    #[test]
    fn short_frame_drops_only_a_bpf_tag() {
        assert_eq!(short_frame("read_zero"), "read_zero");
        assert_eq!(short_frame("bpf_prog_0123456789abcdef_x_y"), "bpf:x_y");
        assert_eq!(short_frame("bpf_prog_odd"), "bpf:odd");
    }
}
