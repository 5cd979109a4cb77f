//! The self-contained HTML report: one file, no network fetches. The verdict
//! on top, then an RTT timeline with episodes marked, per-CPU stall lanes,
//! the culprit table, the pre-stall flame chart, dying-cgroup counts, and
//! the raw findings attached as JSON for reproduction.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};

use netstall_events::Record;

use crate::diagnose::Verdict;
pub use crate::findings::Extras;
use crate::findings::{Findings, Saved};
use netstall_events::kernel::FRAMES_SHOWN;
use netstall_events::stack;

const WIDTH: f64 = 960.0;
const COLORS: [&str; 6] = [
    "#d62728", "#1f77b4", "#ff7f0e", "#9467bd", "#2ca02c", "#8c564b",
];

/// Renders the report into `path`.
pub fn write(path: &Path, verdict: &Verdict, findings: &Findings, extras: &Extras) -> Result<()> {
    std::fs::write(path, render(verdict, findings, extras))
        .with_context(|| format!("cannot write the report {}", path.display()))
}

/// Renders the report.
pub fn render(verdict: &Verdict, findings: &Findings, extras: &Extras) -> String {
    let mut html = String::with_capacity(64 * 1024);
    html.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>netstall doctor report</title><style>",
        "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}",
        "h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}",
        ".verdict{padding:12px 16px;border-radius:6px;margin:12px 0}",
        ".healthy{background:#e6f4ea;border:1px solid #34a853}.sick{background:#fce8e6;border:1px solid #d93025}",
        ".cause{margin:10px 0;padding:8px 12px;border-left:4px solid #d93025;background:#fff8f7}",
        "table{border-collapse:collapse;font-size:12px;width:100%}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}",
        "th{background:#f3f3f3}code,.mono{font-family:ui-monospace,monospace;font-size:12px}.stack{word-break:break-all;max-width:380px}",
        "svg text{font:11px sans-serif}.muted{color:#777}",
        "</style></head><body>\n"
    ));
    let _ = writeln!(
        html,
        "<h1>netstall doctor</h1><p class=\"muted\">{}</p>",
        esc(&extras.host)
    );
    verdict_section(&mut html, verdict);
    timeline_section(&mut html, findings);
    lanes_section(&mut html, findings, verdict);
    culprit_table(&mut html, findings);
    icmp_table(&mut html, findings);
    flame_section(&mut html, extras);
    cgroups_section(&mut html, findings, extras);
    let _ = writeln!(
        html,
        "<h2>Raw records</h2><p class=\"muted\">Every record the verdict was computed from, as JSON lines in this \
         file (<code>script#{RECORDS_ID}</code>): <code>netstall doctor --replay</code> this file recomputes the verdict \
         and this report.</p>\n<script type=\"application/x-ndjson\" id=\"{RECORDS_ID}\">"
    );
    for record in findings.to_records(extras, Some(verdict)) {
        // `</` would end the script element; `<\/` is the same JSON.
        html.push_str(&record.to_json_line().replace("</", "<\\/"));
        html.push('\n');
    }
    html.push_str("</script>\n");
    html.push_str("</body></html>\n");
    html
}

fn verdict_section(html: &mut String, verdict: &Verdict) {
    let class = if verdict.healthy { "healthy" } else { "sick" };
    let _ = write!(
        html,
        "<section id=\"verdict\" class=\"verdict {class}\"><h2 style=\"border:0;margin:0\">Verdict: {}</h2><p>",
        verdict.status.as_str()
    );
    let headline = verdict.headline();
    html.push_str(&esc(headline
        .strip_prefix("VERDICT: ")
        .unwrap_or(&headline)));
    if let (Some(t), Some(f)) = (verdict.time_to_verdict_s, verdict.from_first_stall_s) {
        let _ = write!(
            html,
            " Verdict {t:.1} s after start, {f:.1} s after the first stall."
        );
    }
    html.push_str("</p>");
    let sources: Vec<String> = verdict
        .sources
        .iter()
        .map(|s| format!("{} {} ({})", s.name.as_str(), s.state.as_str(), s.detail))
        .collect();
    let _ = write!(
        html,
        "<p class=\"muted\">Sources: {}</p>",
        esc(&sources.join("; "))
    );
    for cause in verdict.causes.iter().chain(&verdict.also) {
        let _ = write!(
            html,
            "<div class=\"cause\"><b class=\"cause-id mono\">{}</b> — {} <span class=\"muted\">({}, confidence {:.0}%{})</span><ul>",
            esc(cause.id.as_str()),
            esc(&cause.title),
            match cause.severity {
                crate::diagnose::Severity::Unhealthy => "unhealthy",
                crate::diagnose::Severity::Degraded => "degraded",
            },
            cause.confidence * 100.0,
            cause.cpu.map(|c| format!(", CPU {c}")).unwrap_or_default()
        );
        for e in &cause.evidence {
            let _ = write!(html, "<li>{}</li>", esc(e));
        }
        html.push_str("</ul><b>Remediation</b><ol>");
        for r in &cause.remediation {
            let _ = write!(html, "<li>{}</li>", esc(r));
        }
        html.push_str("</ol></div>");
    }
    html.push_str("</section>\n");
}

fn x_of(ns: u64, findings: &Findings, left: f64, width: f64) -> f64 {
    let span = findings.end_ns.saturating_sub(findings.start_ns).max(1) as f64;
    left + (ns.saturating_sub(findings.start_ns) as f64 / span).min(1.0) * width
}

fn time_axis(svg: &mut String, findings: &Findings, left: f64, width: f64, y: f64) {
    let span_s = findings.end_ns.saturating_sub(findings.start_ns) as f64 / 1e9;
    let step = [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0]
        .into_iter()
        .find(|s| span_s / s <= 12.0)
        .unwrap_or(600.0);
    let mut t = 0.0;
    while t <= span_s + 1e-9 {
        let x = left + t / span_s.max(1e-9) * width;
        let _ = write!(svg, "<line x1=\"{x:.1}\" y1=\"{y}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#999\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t:.0}s</text>", y + 4.0, y + 16.0);
        t += step;
    }
}

fn timeline_section(html: &mut String, findings: &Findings) {
    html.push_str("<h2>Probe RTT timeline</h2>");
    if findings.targets.is_empty() {
        html.push_str("<p class=\"muted\">No targets were probed (give <code>--target HOST[:PORT]</code>).</p>");
        return;
    }
    let (left, plot_w, plot_h) = (60.0, WIDTH - 80.0, 220.0);
    let max_rtt_ms = findings
        .targets
        .iter()
        .flat_map(|t| t.rtts.iter().filter_map(|(_, r)| *r))
        .fold(1.0_f64, |m, us| m.max(us / 1e3))
        .max(1.0);
    let mut svg = format!(
        "<svg id=\"rtt-timeline\" class=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{}\" viewBox=\"0 0 {WIDTH} {}\">",
        plot_h + 50.0,
        plot_h + 50.0
    );
    for target in &findings.targets {
        for e in &target.episodes {
            let x0 = x_of(e.start_ns, findings, left, plot_w);
            let x1 = x_of(e.end_ns, findings, left, plot_w).max(x0 + 2.0);
            let _ = write!(svg, "<rect class=\"episode\" x=\"{x0:.1}\" y=\"10\" width=\"{:.1}\" height=\"{plot_h}\" fill=\"#fbbc04\" opacity=\"0.35\"><title>{} {:.1} ms, {} probes</title></rect>", x1 - x0, e.kind.name(), e.duration_ms, e.probes);
        }
    }
    for (i, target) in findings.targets.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        for (sent, rtt) in &target.rtts {
            let x = x_of(*sent, findings, left, plot_w);
            match rtt {
                Some(us) => {
                    let y = 10.0 + plot_h - (us / 1e3 / max_rtt_ms) * plot_h;
                    let _ = write!(
                        svg,
                        "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"1.6\" fill=\"{color}\"/>"
                    );
                }
                None => {
                    let _ = write!(svg, "<text x=\"{x:.1}\" y=\"20\" fill=\"{color}\">×</text>");
                }
            }
        }
        // One legend line per target, stacked: never drawn over each other.
        let _ = write!(
            svg,
            "<text class=\"legend\" x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">● {} ({})</text>",
            left + 10.0,
            24.0 + 16.0 * i as f64,
            esc(&target.target),
            esc(&target.proto)
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"10\" x2=\"{left}\" y2=\"{:.1}\" stroke=\"#999\"/>",
        10.0 + plot_h
    );
    for frac in [0.0, 0.5, 1.0] {
        let y = 10.0 + plot_h - frac * plot_h;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"end\">{:.1} ms</text>",
            left - 4.0,
            frac * max_rtt_ms
        );
    }
    time_axis(&mut svg, findings, left, plot_w, 10.0 + plot_h);
    svg.push_str("</svg>");
    html.push_str(&svg);
    html.push_str("<table><tr><th>target</th><th>proto</th><th>sent</th><th>received</th><th>p50</th><th>p99</th><th>max</th><th>episodes</th></tr>");
    for t in &findings.targets {
        let ms = |v: Option<f64>| {
            v.map(|us| format!("{:.2} ms", us / 1e3))
                .unwrap_or_else(|| "–".into())
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&t.target), esc(&t.proto), t.sent, t.received, ms(t.p50_us), ms(t.p99_us), ms(t.max_us), t.episodes.len()
        );
    }
    html.push_str("</table>\n");
}

fn lanes_section(html: &mut String, findings: &Findings, verdict: &Verdict) {
    html.push_str("<h2>Stalls per CPU</h2>");
    let mut cpus: Vec<u32> = findings
        .stalls
        .iter()
        .map(|s| s.cpu)
        .chain(findings.gaps.iter().map(|g| g.cpu))
        .collect();
    cpus.extend(netstall_core::cpu::online().unwrap_or_default());
    cpus.sort_unstable();
    cpus.dedup();
    let (left, plot_w, lane_h) = (60.0, WIDTH - 80.0, 26.0);
    let height = cpus.len() as f64 * lane_h + 40.0;
    let mut svg = format!("<svg id=\"cpu-lanes\" class=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\">");
    for (lane, cpu) in cpus.iter().enumerate() {
        let y = 10.0 + lane as f64 * lane_h;
        let _ = write!(svg, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">CPU {cpu}</text><rect x=\"{left}\" y=\"{y:.1}\" width=\"{plot_w}\" height=\"{:.1}\" fill=\"#f5f5f5\"/>", left - 4.0, y + lane_h * 0.6, lane_h - 6.0);
        for g in findings.gaps.iter().filter(|g| g.cpu == *cpu) {
            let x0 = x_of(g.start_ns, findings, left, plot_w);
            let w = (g.duration_ms * 1e6
                / findings.end_ns.saturating_sub(findings.start_ns).max(1) as f64
                * plot_w)
                .max(1.5);
            let _ = write!(svg, "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"4\" fill=\"#555\"><title>sample gap {:.1} ms</title></rect>", y + lane_h - 10.0, g.duration_ms);
        }
        for s in findings.stalls.iter().filter(|s| s.cpu == *cpu) {
            let x0 = x_of(s.start_ns, findings, left, plot_w);
            let w = (s.duration_ms * 1e6
                / findings.end_ns.saturating_sub(findings.start_ns).max(1) as f64
                * plot_w)
                .max(2.0);
            let cause = verdict
                .causes
                .iter()
                .position(|c| {
                    c.cpus.contains(cpu)
                        && c.culprit.as_ref().map(|k| &k.comm)
                            == s.culprit.as_ref().map(|k| &k.comm)
                })
                .unwrap_or(0);
            let _ = write!(
                svg,
                "<rect class=\"stall\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {:.1} ms{}</title></rect>",
                lane_h - 12.0,
                COLORS[cause % COLORS.len()],
                s.detector.name(),
                s.duration_ms,
                s.culprit.as_ref().map(|c| format!(" culprit {}[{}]", c.comm, c.pid)).unwrap_or_default()
            );
        }
    }
    time_axis(
        &mut svg,
        findings,
        left,
        plot_w,
        10.0 + cpus.len() as f64 * lane_h,
    );
    svg.push_str("</svg>\n");
    html.push_str(&svg);
}

fn culprit_table(html: &mut String, findings: &Findings) {
    html.push_str("<h2>Culprits</h2>");
    if findings.stalls.is_empty() {
        html.push_str("<p class=\"muted\">No kernel stall over the threshold.</p>");
        return;
    }
    html.push_str("<table id=\"culprits\"><tr><th>time</th><th>CPU</th><th>detector</th><th>ms</th><th>packets</th><th>drained by</th><th>culprit</th><th>syscall</th><th>kernel stack</th></tr>");
    for s in findings.stalls.iter().take(500) {
        let c = s.culprit.clone().unwrap_or_default();
        let _ = write!(
            html,
            "<tr><td>+{:.3} s</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}{}{}</td><td class=\"mono\">{}</td><td class=\"mono stack\">{}</td></tr>",
            s.start_ns.saturating_sub(findings.start_ns) as f64 / 1e9,
            s.cpu,
            s.detector.name(),
            s.duration_ms,
            s.packets.map(|p| p.to_string()).unwrap_or_default(),
            esc(s.drained_by.as_deref().unwrap_or("")),
            esc(&c.comm),
            if c.comm.is_empty() { String::new() } else { format!("[{}]", c.pid) },
            c.context.map(|x| format!(" ({})", esc(&x))).unwrap_or_default(),
            esc(&match (&c.syscall, &c.path) {
                (Some(sc), Some(p)) => format!("{sc}({p})"),
                (Some(sc), None) => sc.clone(),
                _ => String::new(),
            }),
            esc(&stack::line(&stack::meaningful_frames(&c.kstack, FRAMES_SHOWN)))
        );
    }
    html.push_str("</table>\n");
}

fn icmp_table(html: &mut String, findings: &Findings) {
    if findings.icmp.is_empty() {
        return;
    }
    html.push_str("<h2>ICMP echo requests and who processed them</h2><table id=\"icmp\"><tr><th>TGID</th><th>PID</th><th>COMM</th><th>ICMP_SEQ</th><th>CPU</th><th>ksoftirqd</th></tr>");
    for e in findings.icmp.iter().take(300) {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.pid,
            e.tid,
            esc(&e.comm),
            e.seq,
            e.cpu,
            if e.ksoftirqd { "yes" } else { "" }
        );
    }
    html.push_str("</table>\n");
}

fn flame_section(html: &mut String, extras: &Extras) {
    html.push_str("<h2>What ran before the stalls (flame chart)</h2>");
    match flame_chart(&extras.chart) {
        Some(svg) => {
            // inferno's SVG carries a script that takes the page's first <svg> as
            // its own; a sandboxed srcdoc frame keeps it (and its zoom and search)
            // apart from the report's plots, still inside this one file.
            let _ = writeln!(
                html,
                "<iframe id=\"flame-chart\" title=\"flame chart\" sandbox=\"allow-scripts\" \
                 style=\"width:100%;height:640px;border:1px solid #ddd\" srcdoc=\"{}\"></iframe>",
                esc(&svg)
            );
        }
        None => html.push_str("<p class=\"muted\">No CPU samples were taken before a stall.</p>"),
    }
}

fn cgroups_section(html: &mut String, findings: &Findings, extras: &Extras) {
    html.push_str("<h2>Dying memory cgroups</h2>");
    match &findings.memcg {
        Some(m) => {
            let _ = write!(
                html,
                "<table id=\"cgroups\"><tr><th>kernel</th><th>live</th><th>dying (start)</th><th>dying (after remediation)</th><th>worst flush estimate</th></tr>\
                 <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
                esc(&m.kernel),
                m.live,
                m.dying,
                extras.dying_after.map(|d| d.to_string()).unwrap_or_else(|| "–".into()),
                m.worst_stall_ms.map(|w| format!("{w:.1} ms")).unwrap_or_else(|| "–".into())
            );
        }
        None => html.push_str("<p class=\"muted\">Not counted.</p>"),
    }
}

/// The samples before the stalls as an inferno flame chart (SVG).
fn flame_chart(chart: &[String]) -> Option<String> {
    if chart.is_empty() {
        return None;
    }
    let lines: Vec<String> = chart.iter().map(|stack| format!("{stack} 1")).collect();
    let options = netstall_xray::flame::FlameOptions {
        chart: true,
        title: Some("The samples before each stall, in time order".into()),
        ..Default::default()
    };
    let mut svg = Vec::new();
    netstall_xray::flame::render(lines.iter().map(String::as_str), &options, 1.0, &mut svg).ok()?;
    String::from_utf8(svg).ok()
}

/// The id of the script element that holds a report's records.
const RECORDS_ID: &str = "netstall-records";

/// Reads the records a report embeds back into the run they describe.
pub fn records_of(html: &str) -> Result<Vec<Record>, String> {
    let open = format!("id=\"{RECORDS_ID}\">");
    let start = html
        .find(&open)
        .map(|i| i + open.len())
        .ok_or("this HTML file has no embedded records (not a `netstall doctor --report`, or an older one)")?;
    let end = html[start..]
        .find("</script>")
        .map(|i| start + i)
        .ok_or("the report's embedded records are cut off (no closing </script>)")?;
    netstall_events::read_records(html[start..end].trim_start_matches('\n').as_bytes())
        .map_err(|e| format!("embedded record {e}"))
}

/// Reads a saved run from a report.
pub fn saved_of(html: &str) -> anyhow::Result<Saved> {
    let records = records_of(html).map_err(anyhow::Error::msg)?;
    Findings::from_records(records)
}

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::diagnose;

    #[test]
    fn the_report_is_self_contained_and_escapes_text() {
        let findings = Findings {
            start_ns: 1,
            end_ns: 10_000_000_001,
            ..Findings::default()
        };
        let verdict = diagnose(&findings);
        let extras = Extras {
            host: "node <1>".into(),
            ..Extras::default()
        };
        let html = render(&verdict, &findings, &extras);
        assert!(html.contains("Verdict: healthy"));
        assert!(html.contains("node &lt;1&gt;"));
        assert!(
            !html.contains("http://") || !html.contains("src=\"http"),
            "no external fetches"
        );
        assert!(!html.contains("<script src"));
        let saved = saved_of(&html).unwrap();
        assert_eq!(saved.findings, findings);
        assert_eq!(saved.extras, extras);
        assert_eq!(saved.verdict, Some(verdict));
    }
}
