//! Drawing the model (ratatui) and the keys that move around it. Pure: it
//! draws into whatever backend it is given, so tests render to a buffer.

use netstall_events::kernel::{Detector, Stall};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use crate::model::{short_frame, Cell, CulpritRow, Model, WINDOW_NS};

/// Which pane the arrows move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Focus {
    #[default]
    Culprits,
    Lanes,
}

/// What the user has chosen to look at.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub focus: Focus,
    /// Selected CPU lane (index into `Model::cpus`).
    pub lane: usize,
    /// Selected culprit row.
    pub culprit: usize,
    /// The stall shown in the detail pane (Enter), if open.
    pub detail: Option<Box<Stall>>,
    pub help: bool,
    pub paused: bool,
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Quit,
    Pause,
    Help,
    Tab,
    Up,
    Down,
    Enter,
    Escape,
}

impl View {
    /// Applies a key; true when the user asked to quit.
    pub fn key(&mut self, key: Key, model: &Model) -> bool {
        if (self.help || self.detail.is_some()) && key != Key::Quit {
            // An open pane closes on any key but quit.
            self.help = false;
            self.detail = None;
            return false;
        }
        match key {
            Key::Quit => return true,
            Key::Pause => self.paused = !self.paused,
            Key::Help => self.help = true,
            Key::Tab => {
                self.focus = match self.focus {
                    Focus::Culprits => Focus::Lanes,
                    Focus::Lanes => Focus::Culprits,
                }
            }
            Key::Up => match self.focus {
                Focus::Culprits => self.culprit = self.culprit.saturating_sub(1),
                Focus::Lanes => self.lane = self.lane.saturating_sub(1),
            },
            Key::Down => match self.focus {
                Focus::Culprits => {
                    self.culprit = (self.culprit + 1).min(model.culprits().len().saturating_sub(1))
                }
                Focus::Lanes => self.lane = (self.lane + 1).min(model.cpus.len().saturating_sub(1)),
            },
            Key::Enter => self.detail = self.selected_stall(model).map(Box::new),
            Key::Escape => {}
        }
        false
    }

    /// The stall Enter opens: the selected culprit's worst, or the latest
    /// stall of the selected CPU's culprits.
    fn selected_stall(&self, model: &Model) -> Option<Stall> {
        let rows = model.culprits();
        match self.focus {
            Focus::Culprits => rows.get(self.culprit).map(|r| r.worst.clone()),
            Focus::Lanes => {
                let cpu = *model.cpus.get(self.lane)?;
                rows.iter()
                    .filter(|r| r.worst.cpu == cpu)
                    .max_by_key(|r| r.last_ns)
                    .map(|r| r.worst.clone())
            }
        }
    }
}

/// The header's facts.
#[derive(Debug, Clone)]
pub struct Header {
    pub threshold_ms: f64,
    pub refresh_ms: u64,
    pub detectors: Vec<String>,
}

const LANE_LABEL: u16 = 6; // "cpu12 "
const LANE_STATS: u16 = 12; // " rx 12% 999"

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, model: &Model, view: &View, header: &Header, now_ns: u64) {
    let area = frame.area();
    let targets = model.targets.len() as u16;
    let lanes_wanted = model.cpus.len() as u16 + 2;
    // The culprits table keeps at least its header and three rows.
    let fixed = 2 + if targets > 0 { targets + 2 } else { 0 };
    let lanes_height = lanes_wanted.min(area.height.saturating_sub(fixed + 6).max(3));
    let mut constraints = vec![Constraint::Length(1), Constraint::Length(lanes_height)];
    if targets > 0 {
        constraints.push(Constraint::Length(targets + 2));
    }
    constraints.push(Constraint::Min(3));
    constraints.push(Constraint::Length(1));
    let chunks = Layout::vertical(constraints).split(area);

    draw_header(frame, chunks[0], model, view, header);
    draw_lanes(frame, chunks[1], model, view, now_ns);
    let mut next = 2;
    if targets > 0 {
        draw_targets(frame, chunks[next], model, now_ns);
        next += 1;
    }
    draw_culprits(frame, chunks[next], model, view);
    draw_status(frame, chunks[next + 1], model);

    if let Some(stall) = &view.detail {
        draw_detail(frame, area, stall);
    } else if view.help {
        draw_help(frame, area);
    }
}

fn draw_header(frame: &mut Frame, area: Rect, model: &Model, view: &View, header: &Header) {
    let mut spans = vec![
        Span::styled("netstall top", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "  {} CPUs · stalls ≥ {} ms · {} stalls · refresh {} ms",
            model.cpus.len(),
            trim_float(header.threshold_ms),
            model.stalls_total,
            header.refresh_ms
        )),
    ];
    if view.paused {
        spans.push(Span::styled(
            "  PAUSED",
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn cell_style(cell: Cell) -> Style {
    match cell {
        Cell::Stall(Detector::IrqsOff | Detector::RstatHold) => {
            Style::new().fg(Color::White).bg(Color::Red)
        }
        Cell::Stall(_) => Style::new().fg(Color::Black).bg(Color::LightRed),
        Cell::SampleGap => Style::new().fg(Color::Black).bg(Color::Yellow),
        Cell::NetRx(_) => Style::new().fg(Color::Cyan),
        Cell::Quiet | Cell::Unknown => Style::new().fg(Color::DarkGray),
    }
}

fn draw_lanes(frame: &mut Frame, area: Rect, model: &Model, view: &View, now_ns: u64) {
    let focused = view.focus == Focus::Lanes;
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(focus_style(focused))
        .title(format!(
            " lanes, last {} s: S/I/B/K/R stall, G sample gap, ▁▄█ NET_RX ",
            WINDOW_NS / 1_000_000_000
        ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width.saturating_sub(LANE_LABEL + LANE_STATS) as usize;
    let rows = inner.height as usize;
    // Keep the selected lane visible.
    let first = view.lane.saturating_sub(rows.saturating_sub(1));
    let lines: Vec<Line> = model
        .cpus
        .iter()
        .enumerate()
        .skip(first)
        .take(rows)
        .map(|(i, &cpu)| {
            let selected = focused && i == view.lane;
            let label_style = if selected {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            let mut spans = vec![Span::styled(
                format!(
                    "{:<width$}",
                    format!("cpu{cpu}"),
                    width = LANE_LABEL as usize
                ),
                label_style,
            )];
            let cells = model.lane(cpu, now_ns, width);
            // Runs of one cell kind become one span.
            let mut run = String::new();
            let mut run_style = None;
            for cell in cells {
                let style = cell_style(cell);
                if run_style.is_some_and(|s| s != style) {
                    spans.push(Span::styled(std::mem::take(&mut run), run_style.unwrap()));
                }
                run_style = Some(style);
                run.push(cell.glyph());
            }
            if let Some(style) = run_style {
                spans.push(Span::styled(run, style));
            }
            let rx = model
                .net_rx_pct(cpu)
                .map_or_else(|| "  -".to_string(), |p| format!("{p:>3.0}"));
            spans.push(Span::raw(format!(
                " rx{rx}% {:>3}",
                model.stalls_in_window(cpu).min(999)
            )));
            Line::from(spans)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_targets(frame: &mut Frame, area: Rect, model: &Model, now_ns: u64) {
    let block = Block::new()
        .borders(Borders::ALL)
        .title(" targets: worst RTT per column (x = loss) ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let name_width = 22.min(inner.width as usize / 3);
    let stats_width = 33; // " max 12345.6ms ep 999 loss 100.0%"
    let spark_width = (inner.width as usize).saturating_sub(name_width + stats_width + 2);
    let lines: Vec<Line> = model
        .targets
        .iter()
        .map(|t| {
            let spark: String = t
                .sparkline(now_ns, spark_width)
                .iter()
                .map(|s| s.glyph())
                .collect();
            let max = t
                .max_rtt_us(now_ns)
                .map_or_else(|| "-".to_string(), |us| format!("{:.1}ms", us / 1e3));
            Line::from(vec![
                Span::raw(format!("{:<name_width$} ", truncate(&t.name, name_width),)),
                Span::styled(spark, Style::new().fg(Color::Green)),
                Span::raw(format!(
                    " max {max:>8} ep {:>3} loss {:>5.1}%",
                    t.episodes,
                    t.loss_pct()
                )),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn syscall_text(row: &CulpritRow) -> String {
    match (&row.syscall, &row.path) {
        (Some(s), Some(p)) => format!("{s}({})", p.rsplit('/').next().unwrap_or(p)),
        (Some(s), None) => format!("{s}()"),
        _ => "-".into(),
    }
}

fn draw_culprits(frame: &mut Frame, area: Rect, model: &Model, view: &View) {
    let focused = view.focus == Focus::Culprits;
    let rows = model.culprits();
    let table_rows: Vec<Row> = rows
        .iter()
        .map(|r| {
            Row::new(vec![
                r.task.clone(),
                syscall_text(r),
                r.stalls.to_string(),
                format!("{:.1}", r.worst_ms),
                format!("{:.1}", r.total_ms),
                r.frame.as_deref().map_or_else(|| "-".into(), short_frame),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(14),
        Constraint::Length(14),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Min(10),
    ];
    let table = Table::new(table_rows, widths)
        .header(
            Row::new(vec![
                "TASK",
                "SYSCALL(FILE)",
                "STALLS",
                "WORST ms",
                "TOTAL ms",
                "FRAME",
            ])
            .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(if focused {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        })
        .block(
            Block::new()
                .borders(Borders::ALL)
                .border_style(focus_style(focused))
                .title(" culprits (Enter: the worst stall, its stack and packets) "),
        );
    let mut state = TableState::default();
    if !rows.is_empty() {
        state.select(Some(view.culprit.min(rows.len() - 1)));
    }
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_status(frame: &mut Frame, area: Rect, model: &Model) {
    let s = &model.status;
    let mut text = format!(
        "dying memcgs {} · tracer {} · drops {} · top {}",
        s.dying_memcgs.map_or_else(|| "-".into(), |n| n.to_string()),
        s.bpf_ns_per_s
            .map_or_else(|| "-".into(), |ns| format!("{:.2} ms/s", ns / 1e6)),
        s.ring_drops,
        s.own_cpu_pct
            .map_or_else(|| "-".into(), |p| format!("{p:.1}% CPU")),
    );
    for note in &s.notes {
        text += &format!(" · {note}");
    }
    let keys = " ? help  q quit";
    let room = (area.width as usize).saturating_sub(keys.chars().count());
    let line = Line::from(vec![
        Span::styled(
            format!("{:<room$}", truncate(&text, room)),
            Style::new().fg(if s.ring_drops > 0 {
                Color::Yellow
            } else {
                Color::Reset
            }),
        ),
        Span::styled(keys, Style::new().add_modifier(Modifier::BOLD)),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

/// The lines of the detail pane for one stall.
pub fn detail_lines(stall: &Stall) -> Vec<String> {
    let when = clock_time(stall.start_ns);
    let mut lines = vec![format!(
        "{} on cpu{} at {when}: {:.1} ms (seen by {})",
        stall.detector.name(),
        stall.cpu,
        stall.duration_ms,
        stall
            .seen_by
            .iter()
            .map(|d| d.name())
            .collect::<Vec<_>>()
            .join(", ")
    )];
    lines.push(match (stall.packets, stall.max_wait_ms) {
        (Some(n), Some(w)) => format!("packets that waited: {n}, the longest {w:.1} ms"),
        (Some(n), None) => format!("packets that waited: {n}"),
        _ => "packets that waited: none measured".into(),
    });
    if let Some(by) = &stall.drained_by {
        lines.push(format!("drained by: {by}"));
    }
    if let Some(c) = &stall.culprit {
        let mut who = format!("culprit: {} pid {} tid {}", c.comm, c.pid, c.tid);
        if let Some(ctx) = &c.context {
            who += &format!(" in {ctx}");
        }
        lines.push(who);
        if let Some(sc) = &c.syscall {
            let mut line = format!("syscall: {sc}({})", c.path.as_deref().unwrap_or(""));
            if let Some(ms) = c.syscall_ms {
                line += &format!(" {ms:.1} ms");
            }
            lines.push(line);
        }
        if let Some(cg) = &c.cgroup {
            lines.push(format!("cgroup: {cg}"));
        }
        lines.push("kernel stack (innermost first):".into());
        lines.extend(
            netstall_events::stack::without_own(&c.kstack)
                .iter()
                .map(|f| format!("  {f}")),
        );
    } else {
        lines.push("culprit: not sampled (the CPU was not held long enough to look)".into());
    }
    lines
}

fn draw_detail(frame: &mut Frame, area: Rect, stall: &Stall) {
    let pane = centered(area, 90, 80);
    let lines: Vec<Line> = detail_lines(stall).into_iter().map(Line::from).collect();
    frame.render_widget(Clear, pane);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::new()
                .borders(Borders::ALL)
                .title(" stall (any key closes) "),
        ),
        pane,
    );
}

const HELP: &[&str] = &[
    "q, Ctrl-C   quit",
    "p           pause the screen (data keeps coming)",
    "Tab         switch between lanes and culprits",
    "↑ ↓         move in the focused pane",
    "Enter       a stall: packets, culprit, stack",
    "?           this help; any key closes it",
    "",
    "Lanes: one per CPU, oldest left, now right.",
    "S softirq-delay  I irqs-off  B rx-backlog",
    "K ksoftirqd  R rstat-hold  G sample gap",
    "▁..█ share of time in NET_RX softirq",
];

fn draw_help(frame: &mut Frame, area: Rect) {
    let pane = centered(area, 76, 70);
    frame.render_widget(Clear, pane);
    frame.render_widget(
        Paragraph::new(HELP.iter().map(|l| Line::from(*l)).collect::<Vec<_>>())
            .block(Block::new().borders(Borders::ALL).title(" help ")),
        pane,
    );
}

fn centered(area: Rect, pct_x: u16, pct_y: u16) -> Rect {
    let w = area.width * pct_x / 100;
    let h = area.height * pct_y / 100;
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn focus_style(focused: bool) -> Style {
    if focused {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new()
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut t: String = text.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `HH:MM:SS.mmm` UTC of a REALTIME timestamp.
pub fn clock_time(realtime_ns: u64) -> String {
    let ms = realtime_ns / 1_000_000;
    let (s, ms) = (ms / 1000, ms % 1000);
    format!(
        "{:02}:{:02}:{:02}.{ms:03} UTC",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Update;
    use netstall_events::kernel::Culprit;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    const S: u64 = 1_000_000_000;

    fn spin_stall(start_s: u64) -> Stall {
        Stall {
            detector: Detector::SoftirqDelay,
            cpu: 1,
            start_ns: start_s * S,
            end_ns: start_s * S + 50_000_000,
            duration_ms: 50.0,
            seen_by: vec![Detector::SoftirqDelay, Detector::RxBacklog],
            packets: Some(4),
            max_wait_ms: Some(48.5),
            drained_by: Some("ksoftirqd/1".into()),
            culprit: Some(Culprit {
                comm: "swapper/1".into(),
                context: Some("softirq TIMER".into()),
                kstack: vec![
                    "bpf_loop+0x4a".into(),
                    "bpf_prog_0123456789abcdef_spin_in_softirq+0x3c".into(),
                    "handle_softirqs+0xd1".into(),
                ],
                ..Culprit::default()
            }),
            node: None,
        }
    }

    fn screen(width: u16, height: u16, model: &Model, view: &View) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        let header = Header {
            threshold_ms: 10.0,
            refresh_ms: 500,
            detectors: vec![],
        };
        terminal
            .draw(|f| draw(f, model, view, &header, 100 * S))
            .unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn model() -> Model {
        let mut m = Model::new(vec![0, 1], vec!["192.168.50.1:30080".into()], 0);
        m.apply(Update::Stall(Box::new(spin_stall(95))));
        m.apply(Update::Probe {
            target: 0,
            sent_ns: 95 * S,
            rtt_us: Some(52_000.0),
        });
        m
    }

    #[test]
    fn fits_80x24_with_the_stall_on_its_lane_and_the_culprit_named() {
        let text = screen(80, 24, &model(), &View::default());
        let lane1 = text.lines().find(|l| l.contains("cpu1")).unwrap();
        assert!(lane1.contains('S'), "{text}");
        let lane0 = text.lines().find(|l| l.contains("cpu0")).unwrap();
        assert!(!lane0.contains('S'), "{text}");
        assert!(text.contains("bpf:spin_in_softirq"), "{text}");
        assert!(text.contains("(softirq)"), "{text}");
        assert!(text.contains("192.168.50.1:30080"), "{text}");
        assert!(text.contains("q quit"), "{text}");
    }

    #[test]
    fn enter_opens_the_stall_with_stack_and_packets_and_any_key_closes_it() {
        let m = model();
        let mut view = View::default();
        assert!(!view.key(Key::Enter, &m));
        let text = screen(80, 24, &m, &view);
        assert!(text.contains("packets that waited: 4"), "{text}");
        assert!(text.contains("spin_in_softirq+0x3c"), "{text}");
        assert!(!view.key(Key::Down, &m));
        assert!(view.detail.is_none());
        assert!(view.key(Key::Quit, &m));
    }

    #[test]
    fn tab_moves_focus_to_the_lanes_and_enter_opens_that_cpus_stall() {
        let m = model();
        let mut view = View::default();
        view.key(Key::Tab, &m);
        view.key(Key::Down, &m);
        view.key(Key::Down, &m);
        assert_eq!(view.lane, 1, "stops at the last CPU");
        view.key(Key::Enter, &m);
        assert_eq!(view.detail.as_ref().unwrap().cpu, 1);
        view.key(Key::Escape, &m);
        view.key(Key::Up, &m);
        view.key(Key::Enter, &m);
        assert!(view.detail.is_none(), "cpu0 has no stall");
    }

    #[test]
    fn fits_200x50_and_many_cpus_keep_the_culprits_visible() {
        let mut m = Model::new((0..64).collect(), vec![], 0);
        m.apply(Update::Stall(Box::new(spin_stall(95))));
        let text = screen(200, 50, &m, &View::default());
        assert!(text.contains("bpf:spin_in_softirq"), "{text}");
        let text = screen(80, 24, &m, &View::default());
        assert!(text.contains("bpf:spin_in_softirq"), "{text}");
        let mut view = View {
            help: true,
            ..View::default()
        };
        let text = screen(80, 24, &m, &view);
        assert!(text.contains("pause the screen"), "{text}");
        view.key(Key::Pause, &m);
        assert!(!view.help && !view.paused, "the key only closed the help");
    }
}
