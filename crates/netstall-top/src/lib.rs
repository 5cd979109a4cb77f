//! `netstall top`: a live terminal view of RX stalls per CPU, who holds
//! the CPU, and (with targets) what probes see.
//!
//! * [`model`]: what the screen shows, updated from the sources (pure);
//! * [`ui`]: drawing it with ratatui, and the keys (pure, tested on a buffer);
//! * [`sources`]: the tracer, probers, sampler and memcg count on threads;
//! * [`run`]: the terminal loop, or plain lines when stdout is not a terminal.
//!
//! Its own cost is bounded: the screen is redrawn at most every
//! [`MIN_REFRESH`], the tracer's totals are read once a second, CPU sampling
//! runs at 199 Hz and cgroups are counted every 10 s. The status line shows
//! what it costs: the BPF programs' run time per second and this process's
//! CPU use.

pub mod model;
pub mod sources;
pub mod ui;

use std::io::IsTerminal;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netstall_core::clock::realtime_ns;
use netstall_core::output::Output;
use netstall_core::shutdown::Shutdown;
use netstall_doctor::run::Target;
use netstall_events::top::{CpuStatus, TopStatus};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use model::{Model, Update};
use sources::Sources;
use ui::{Header, Key, View};

/// No faster than the eye needs: a redraw costs a frame diff and a write.
pub const MIN_REFRESH: Duration = Duration::from_millis(200);
/// In plain-lines mode, a status line this often.
const PLAIN_STATUS_EVERY: Duration = Duration::from_secs(5);

/// What to watch and how.
#[derive(Debug, Clone)]
pub struct TopConfig {
    pub targets: Vec<Target>,
    /// Probe interval per target.
    pub interval: Duration,
    /// TCP flows (source ports) per target.
    pub flows: u16,
    pub netns: Option<String>,
    pub probe_cpu: Option<u32>,
    /// Only these CPUs (all online ones when `None`).
    pub cpus: Option<Vec<u32>>,
    pub threshold: Duration,
    pub refresh: Duration,
    /// Sample CPUs for sample gaps.
    pub sample: bool,
    /// End after this long (default: until `q` or a signal).
    pub duration: Option<Duration>,
}

/// Runs the view until `q`, Ctrl-C, a signal on `stop`, or the duration.
/// Errors before the screen is taken (privileges, kernel features) leave the
/// terminal untouched.
pub fn run(config: &TopConfig, stop: Arc<Shutdown>, out: Output) -> Result<()> {
    if config.refresh < MIN_REFRESH {
        bail!(
            "--refresh must be at least {} ms (the view must not become the culprit)",
            MIN_REFRESH.as_millis()
        );
    }
    let cpus = match &config.cpus {
        Some(c) => c.clone(),
        None => netstall_core::cpu::online()?,
    };
    let tty = std::io::stdout().is_terminal() && !out.is_json();
    let sources = sources::start(config, &stop)?;
    let model = Model::new(
        cpus,
        config.targets.iter().map(|t| t.text.clone()).collect(),
        realtime_ns(),
    );
    let header = Header {
        threshold_ms: config.threshold.as_secs_f64() * 1e3,
        refresh_ms: config.refresh.as_millis() as u64,
        detectors: sources.detectors.clone(),
    };
    let deadline = config.duration.map(|d| Instant::now() + d);
    let result = if tty {
        screen(model, &sources, &header, config.refresh, &stop, deadline)
    } else {
        out.progress(format!(
            "netstall top: stdout is not a terminal: plain lines (stalls as they come, the status every {} s)",
            PLAIN_STATUS_EVERY.as_secs()
        ));
        plain(model, &sources, &stop, deadline, out);
        Ok(())
    };
    stop.request();
    sources.join();
    result
}

fn key_of(event: &Event) -> Option<Key> {
    let Event::Key(key) = event else {
        return None;
    };
    if key.kind == KeyEventKind::Release {
        return None;
    }
    Some(match key.code {
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
        KeyCode::Char('q') => Key::Quit,
        KeyCode::Char('p') | KeyCode::Char(' ') => Key::Pause,
        KeyCode::Char('?') | KeyCode::Char('h') => Key::Help,
        KeyCode::Tab | KeyCode::BackTab | KeyCode::Left | KeyCode::Right => Key::Tab,
        KeyCode::Up | KeyCode::Char('k') => Key::Up,
        KeyCode::Down | KeyCode::Char('j') => Key::Down,
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Escape,
        _ => return None,
    })
}

/// Tracks this process's CPU use between two looks.
struct OwnCost {
    at: Instant,
    cpu_ns: u64,
}

impl OwnCost {
    fn new() -> Self {
        Self {
            at: Instant::now(),
            cpu_ns: sources::own_cpu_ns(),
        }
    }

    /// Percent of one CPU since the last look, at most once a second.
    fn update(&mut self) -> Option<f64> {
        let elapsed = self.at.elapsed();
        if elapsed < Duration::from_secs(1) {
            return None;
        }
        let now = sources::own_cpu_ns();
        let pct = 100.0 * now.saturating_sub(self.cpu_ns) as f64 / elapsed.as_nanos() as f64;
        *self = Self {
            at: Instant::now(),
            cpu_ns: now,
        };
        Some(pct)
    }
}

fn screen(
    mut model: Model,
    sources: &Sources,
    header: &Header,
    refresh: Duration,
    stop: &Shutdown,
    deadline: Option<Instant>,
) -> Result<()> {
    // Raw mode and the alternate screen; ratatui's panic hook puts the
    // terminal back before the panic message is printed.
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let result = (|| -> Result<()> {
        let mut view = View::default();
        // While paused: the model as it was, and its time.
        let mut frozen: Option<(Model, u64)> = None;
        let mut cost = OwnCost::new();
        let mut next_draw = Instant::now();
        let mut dirty = true;
        loop {
            for update in sources.updates.try_iter() {
                model.apply(update);
            }
            if stop.is_requested() || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
            if Instant::now() >= next_draw {
                next_draw = Instant::now() + refresh;
                if let Some(pct) = cost.update() {
                    model.apply(Update::OwnCpu(pct));
                }
                model.prune(realtime_ns());
                dirty = true;
            }
            if dirty {
                dirty = false;
                match (&frozen, view.paused) {
                    (Some(_), true) => {}
                    (None, true) => frozen = Some((model.clone(), realtime_ns())),
                    (_, false) => frozen = None,
                }
                let (shown, now_ns) = match &frozen {
                    Some((m, t)) => (m, *t),
                    None => (&model, realtime_ns()),
                };
                terminal
                    .draw(|f| ui::draw(f, shown, &view, header, now_ns))
                    .context("draw")?;
            }
            let wait = next_draw.saturating_duration_since(Instant::now());
            if event::poll(wait).context("read the keyboard")? {
                let event = event::read().context("read the keyboard")?;
                if let Some(key) = key_of(&event) {
                    let shown = frozen.as_ref().map_or(&model, |(m, _)| m);
                    if view.key(key, shown) {
                        return Ok(());
                    }
                }
                dirty = true;
            }
        }
    })();
    ratatui::restore();
    result
}

fn plain_status(model: &Model) -> TopStatus {
    let s = &model.status;
    TopStatus {
        cpus: model
            .cpus
            .iter()
            .map(|&cpu| CpuStatus {
                cpu,
                net_rx_pct: model.net_rx_pct(cpu).map(|p| (p * 10.0).round() / 10.0),
                stalls_60s: model.stalls_in_window(cpu),
            })
            .collect(),
        dying_memcgs: s.dying_memcgs,
        bpf_ms_per_s: s.bpf_ns_per_s.map(|ns| (ns / 1e4).round() / 100.0),
        ring_drops: s.ring_drops,
        own_cpu_pct: s.own_cpu_pct.map(|p| (p * 10.0).round() / 10.0),
    }
}

/// `TOP cpu0 rx 1.2% 3 stalls | cpu1 … | dying memcgs 12 · tracer 0.31 ms/s · drops 0 · top 0.4% CPU`
fn plain_status_line(status: &TopStatus) -> String {
    let cpus: Vec<String> = status
        .cpus
        .iter()
        .map(|c| {
            format!(
                "cpu{} rx {} {} stalls",
                c.cpu,
                c.net_rx_pct
                    .map_or_else(|| "-".into(), |p| format!("{p:.1}%")),
                c.stalls_60s
            )
        })
        .collect();
    let opt = |v: Option<f64>, unit: &str| v.map_or_else(|| "-".into(), |v| format!("{v}{unit}"));
    format!(
        "TOP {} | dying memcgs {} · tracer {} · drops {} · top {}",
        cpus.join(" | "),
        status
            .dying_memcgs
            .map_or_else(|| "-".into(), |n| n.to_string()),
        opt(status.bpf_ms_per_s, " ms/s"),
        status.ring_drops,
        opt(status.own_cpu_pct, "% CPU"),
    )
}

fn plain(
    mut model: Model,
    sources: &Sources,
    stop: &Shutdown,
    deadline: Option<Instant>,
    out: Output,
) {
    let mut cost = OwnCost::new();
    let mut next_status = Instant::now() + PLAIN_STATUS_EVERY;
    let mut notes_shown = 0;
    loop {
        if stop.is_requested() || deadline.is_some_and(|d| Instant::now() >= d) {
            return;
        }
        match sources.updates.recv_timeout(Duration::from_millis(200)) {
            Ok(Update::Stall(stall)) => {
                out.emit((*stall).clone());
                model.apply(Update::Stall(stall));
            }
            Ok(update) => model.apply(update),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        for note in &model.status.notes[notes_shown..] {
            out.progress(format!("netstall top: {note}"));
        }
        notes_shown = model.status.notes.len();
        if Instant::now() >= next_status {
            next_status += PLAIN_STATUS_EVERY;
            if let Some(pct) = cost.update() {
                model.apply(Update::OwnCpu(pct));
            }
            model.prune(realtime_ns());
            let status = plain_status(&model);
            out.json(status.clone());
            out.text(plain_status_line(&status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_status_line_has_every_number() {
        let mut m = Model::new(vec![0, 1], vec![], 0);
        m.apply(Update::DyingMemcgs(12));
        m.apply(Update::OwnCpu(0.43));
        let line = plain_status_line(&plain_status(&m));
        assert_eq!(
            line,
            "TOP cpu0 rx - 0 stalls | cpu1 rx - 0 stalls | dying memcgs 12 · tracer - · drops 0 · top 0.4% CPU"
        );
    }

    #[test]
    fn keys_map_to_actions() {
        use ratatui::crossterm::event::KeyEvent;
        let key = |code, modifiers| Event::Key(KeyEvent::new(code, modifiers));
        assert_eq!(
            key_of(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Key::Quit)
        );
        assert_eq!(
            key_of(&key(KeyCode::Char('q'), KeyModifiers::NONE)),
            Some(Key::Quit)
        );
        assert_eq!(
            key_of(&key(KeyCode::Tab, KeyModifiers::NONE)),
            Some(Key::Tab)
        );
        assert_eq!(key_of(&key(KeyCode::Char('z'), KeyModifiers::NONE)), None);
    }
}
