//! Folding `perf script` samples into stacks (`comm;root;...;leaf`), line by
//! line, with the state machine and name tidying of `stackcollapse-perf.pl`.
//!
//! [`Folder`] is pure: it takes lines and hands each finished sample to a
//! callback. The aggregated, ordered and parallel drivers are in
//! [`crate::collapse`].

use crate::perf_script::{parse_frame, parse_header, Frame, Header};

/// Bytes of function names one sample holds at most: real stacks are
/// KiBs (perf keeps 127 frames by default, `kernel.perf_event_max_stack`
/// at most a few thousand).
pub const MAX_SAMPLE_BYTES: usize = 1 << 20;

/// `stackcollapse-perf.pl`'s options as flags, for `collapse` and for
/// `flame` on `perf script` input.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FoldArgs {
    /// Include the PID with the process name (`comm-PID`).
    #[arg(long)]
    pub pid: bool,
    /// Include PID and TID with the process name (`comm-PID/TID`).
    #[arg(long)]
    pub tid: bool,
    /// Annotate kernel frames with `_[k]`.
    #[arg(long)]
    pub kernel: bool,
    /// Annotate JIT frames (`/tmp/perf-PID.map`) with `_[j]`.
    #[arg(long)]
    pub jit: bool,
    /// All annotations: --kernel and --jit.
    #[arg(long)]
    pub all: bool,
    /// Keep the address of frames without a symbol: `[unknown <addr>]`.
    #[arg(long)]
    pub addrs: bool,
    /// Keep only samples of this event (default: the first event in the input).
    #[arg(long, value_name = "EVENT")]
    pub event_filter: Option<String>,
    /// Not supported (the Perl script runs addr2line on every address):
    /// record with `perf script --inline`, which prints inlined frames.
    #[arg(long)]
    pub inline: bool,
    /// Not supported (source lines through addr2line, with --inline):
    /// use `perf script -F+srcline`.
    #[arg(long)]
    pub context: bool,
    /// Not supported (source lines through addr2line): use `perf script -F+srcline`.
    #[arg(long)]
    pub srcline: bool,
}

impl FoldArgs {
    /// The fold options, or a one-line refusal of a Perl option this
    /// folder does not have, naming what to use instead.
    pub fn options(&self) -> anyhow::Result<FoldOptions> {
        if self.inline {
            anyhow::bail!("--inline is not supported (stackcollapse-perf.pl runs addr2line per frame): use `perf script --inline`, which prints inlined frames");
        }
        if self.context || self.srcline {
            let flag = if self.context {
                "--context"
            } else {
                "--srcline"
            };
            anyhow::bail!("{flag} is not supported (stackcollapse-perf.pl runs addr2line per frame): use `perf script -F+srcline`");
        }
        Ok(FoldOptions {
            include_pid: self.pid,
            include_tid: self.tid,
            annotate_kernel: self.kernel || self.all,
            annotate_jit: self.jit || self.all,
            include_addrs: self.addrs,
            event_filter: self.event_filter.clone().map(String::into_bytes),
        })
    }
}

/// Options of `stackcollapse-perf.pl` that change its output. The defaults
/// are the script's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldOptions {
    /// `--pid`: the first frame is `comm-PID`.
    pub include_pid: bool,
    /// `--tid`: the first frame is `comm-PID/TID`.
    pub include_tid: bool,
    /// `--kernel`: kernel frames get a `_[k]` suffix.
    pub annotate_kernel: bool,
    /// `--jit`: frames from `/tmp/perf-PID.map` get a `_[j]` suffix.
    pub annotate_jit: bool,
    /// `--addrs`: `[unknown]` frames keep their address, `[unknown <pc>]`.
    pub include_addrs: bool,
    /// `--event-filter`: keep only this event. Without it, the first event seen wins.
    pub event_filter: Option<Vec<u8>>,
}

/// Counters for what was not folded, so nothing is dropped silently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldStats {
    /// Samples folded.
    pub samples: u64,
    /// Samples of another event than the one kept.
    pub filtered_samples: u64,
    /// The first such event name.
    pub filtered_event: Option<Vec<u8>>,
    /// Lines that are neither a header, a frame, a comment nor blank.
    pub unrecognized_lines: u64,
    /// Line number (from 1) of the first unrecognized line, counted within
    /// what this folder was given.
    pub first_unrecognized_line: Option<u64>,
    /// Lines seen.
    pub lines: u64,
    /// Frames left out of samples already [`MAX_SAMPLE_BYTES`] long (a
    /// stack that never ends is not a stack; memory stays bounded).
    pub dropped_frames: u64,
}

impl FoldStats {
    /// Adds another part's counters; `line_offset` is how many lines came
    /// before that part, so its line numbers become global.
    pub fn merge(&mut self, other: &FoldStats, line_offset: u64) {
        self.samples += other.samples;
        self.filtered_samples += other.filtered_samples;
        if self.filtered_event.is_none() {
            self.filtered_event.clone_from(&other.filtered_event);
        }
        self.unrecognized_lines += other.unrecognized_lines;
        if self.first_unrecognized_line.is_none() {
            self.first_unrecognized_line = other.first_unrecognized_line.map(|l| l + line_offset);
        }
        self.lines += other.lines;
        self.dropped_frames += other.dropped_frames;
    }
}

/// One folded sample, as the [`Folder`] hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample<'a> {
    /// `comm;frame;...;leaf`.
    pub stack: &'a [u8],
    /// What it weighs: its period as perf printed it, or 1 without one
    /// (`stackcollapse-perf.pl`'s rule, for graphs and charts alike).
    pub weight: u64,
    /// When it was taken, in ns of perf's clock, if its header had a time.
    pub time_ns: Option<u64>,
}

/// The folding state machine. Feed it lines (without their `\n`); at every
/// blank line it calls `emit` with the [`Sample`] just finished.
#[derive(Debug)]
pub struct Folder {
    opts: FoldOptions,
    /// The event kept: set by the options or by the first header with an event.
    event_filter: Option<Vec<u8>>,
    /// The first frame of the current sample; empty when no sample is open
    /// (Perl's undefined `$pname`).
    pname: Vec<u8>,
    java: bool,
    weight: u64,
    time_ns: Option<u64>,
    /// Tidied function names, back to back.
    names: Vec<u8>,
    /// `(start, end)` of each name in `names`, in line order (leaf first).
    spans: Vec<(u32, u32)>,
    /// Index into `spans` where each frame line's names start: `a->b` inline
    /// chains give several names per line, kept in their order.
    groups: Vec<u32>,
    stack: Vec<u8>,
    scratch: Vec<u8>,
    parts: Vec<(usize, usize)>,
    stats: FoldStats,
}

impl Folder {
    pub fn new(opts: FoldOptions) -> Self {
        Self {
            event_filter: opts.event_filter.clone(),
            opts,
            pname: Vec::new(),
            java: false,
            weight: 1,
            time_ns: None,
            names: Vec::new(),
            spans: Vec::new(),
            groups: Vec::new(),
            stack: Vec::new(),
            scratch: Vec::new(),
            parts: Vec::new(),
            stats: FoldStats::default(),
        }
    }

    /// The event being kept, if known yet.
    pub fn event_filter(&self) -> Option<&[u8]> {
        self.event_filter.as_deref()
    }

    /// Sets the event to keep, as found by a scan of earlier input (the
    /// parallel driver decides it once, before the parts are folded).
    pub fn set_event_filter(&mut self, event: Option<Vec<u8>>) {
        self.event_filter = event;
    }

    pub fn stats(&self) -> &FoldStats {
        &self.stats
    }

    pub fn take_stats(&mut self) -> FoldStats {
        std::mem::take(&mut self.stats)
    }

    /// Whether a sample is open (a header was read and no blank line yet).
    pub fn in_sample(&self) -> bool {
        !self.pname.is_empty()
    }

    /// Folds one line.
    pub fn line(&mut self, line: &[u8], emit: &mut impl FnMut(Sample<'_>)) {
        self.stats.lines += 1;
        if line.first() == Some(&b'#') {
            return;
        }
        if line.is_empty() {
            self.finish_sample(emit);
        } else if let Some(header) = parse_header(line) {
            self.start_sample(&header);
        } else if let Some(frame) = parse_frame(line) {
            if self.in_sample() {
                self.push_frame(&frame);
            }
        } else {
            self.stats.unrecognized_lines += 1;
            if self.stats.first_unrecognized_line.is_none() {
                self.stats.first_unrecognized_line = Some(self.stats.lines);
            }
        }
    }

    /// Ends the open sample as a blank line would. `stackcollapse-perf.pl`
    /// never does this at the end of its input, so it drops a last sample
    /// that has no blank line after it; callers choose.
    pub fn finish_sample(&mut self, emit: &mut impl FnMut(Sample<'_>)) {
        if !self.in_sample() {
            return;
        }
        self.stack.clear();
        self.stack.extend_from_slice(&self.pname);
        for (i, &start) in self.groups.iter().enumerate().rev() {
            let end = self
                .groups
                .get(i + 1)
                .map_or(self.spans.len(), |&e| e as usize);
            for &(a, b) in &self.spans[start as usize..end] {
                self.stack.push(b';');
                self.stack
                    .extend_from_slice(&self.names[a as usize..b as usize]);
            }
        }
        self.stats.samples += 1;
        emit(Sample {
            stack: &self.stack,
            weight: self.weight,
            time_ns: self.time_ns,
        });
        self.pname.clear();
        self.names.clear();
        self.spans.clear();
        self.groups.clear();
    }

    fn start_sample(&mut self, header: &Header<'_>) {
        let mut period = None;
        if let Some(event) = &header.event {
            period = event.period;
            match &self.event_filter {
                None => self.event_filter = Some(event.name.to_vec()),
                Some(kept) if kept.as_slice() != event.name => {
                    // Perl skips the line and leaves `$pname` as it was.
                    self.stats.filtered_samples += 1;
                    if self.stats.filtered_event.is_none() {
                        self.stats.filtered_event = Some(event.name.to_vec());
                    }
                    return;
                }
                Some(_) => {}
            }
        }
        // Perl: `$period = 1 if not $period`, and "0" is false.
        self.weight = match period {
            None | Some(b"0") => 1,
            Some(digits) => digits.iter().fold(0u64, |n, d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            }),
        };
        self.time_ns = header.time.and_then(parse_seconds_ns);
        // Perl: a missing (or "0") TID means the one number was the TID and
        // the PID is unknown.
        let (pid, tid): (&[u8], &[u8]) = match header.second_id {
            Some(tid) if tid != b"0" => (header.first_id, tid),
            _ => (b"?", header.first_id),
        };
        self.pname.clear();
        self.pname.extend(
            header
                .comm
                .iter()
                .map(|&b| if b == b' ' { b'_' } else { b }),
        );
        if self.opts.include_tid {
            self.pname.push(b'-');
            self.pname.extend_from_slice(pid);
            self.pname.push(b'/');
            self.pname.extend_from_slice(tid);
        } else if self.opts.include_pid {
            self.pname.push(b'-');
            self.pname.extend_from_slice(pid);
        }
        self.java = self.pname.starts_with(b"java");
    }

    fn push_frame(&mut self, frame: &Frame<'_>) {
        if self.names.len() >= MAX_SAMPLE_BYTES {
            self.stats.dropped_frames += 1;
            return;
        }
        let symbol = strip_offset(frame.symbol);
        if symbol.first() == Some(&b'(') {
            return;
        }
        let group_start = self.spans.len() as u32;
        let mut parts = std::mem::take(&mut self.parts);
        split_inline(symbol, &mut parts);
        for (index, &(a, b)) in parts.iter().enumerate() {
            let start = self.names.len();
            self.tidy_into(&symbol[a..b], frame, index > 0);
            self.spans.push((start as u32, self.names.len() as u32));
        }
        if !parts.is_empty() {
            self.groups.push(group_start);
        }
        self.parts = parts;
    }

    /// Appends one function name to `names`, tidied and annotated as Perl does.
    fn tidy_into(&mut self, part: &[u8], frame: &Frame<'_>, inlined: bool) {
        let start = self.names.len();
        if part == b"[unknown]" {
            let known = frame.module != b"[unknown]";
            let base: &[u8] = if known {
                // `s/.*\///`: keep what follows the last slash.
                memchr::memrchr(b'/', frame.module).map_or(frame.module, |i| &frame.module[i + 1..])
            } else {
                b"unknown"
            };
            self.names.push(b'[');
            self.names.extend_from_slice(base);
            if self.opts.include_addrs {
                self.names.extend_from_slice(b" <");
                self.names.extend_from_slice(frame.pc);
                self.names.push(b'>');
            }
            self.names.push(b']');
        } else {
            self.names.extend_from_slice(part);
        }
        tidy_generic(&mut self.names, start, &mut self.scratch);
        if self.java && self.names[start..].contains(&b'/') && self.names.get(start) == Some(&b'L')
        {
            self.names.remove(start);
        }
        let name = &self.names[start..];
        if inlined {
            if memchr::memmem::find(name, b"_[i]").is_none() {
                self.names.extend_from_slice(b"_[i]");
            }
        } else if self.opts.annotate_kernel && is_kernel_module(frame.module) {
            self.names.extend_from_slice(b"_[k]");
        } else if self.opts.annotate_jit
            && is_jit_module(frame.module)
            && memchr::memmem::find(name, b"_[j]").is_none()
        {
            self.names.extend_from_slice(b"_[j]");
        }
    }
}

/// `s/\+0x[\da-f]+$//`: a trailing offset such as `+0x1f`.
fn strip_offset(symbol: &[u8]) -> &[u8] {
    let hex_start = symbol
        .iter()
        .rposition(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        .map_or(0, |i| i + 1);
    if hex_start < symbol.len() && symbol[..hex_start].ends_with(b"+0x") {
        &symbol[..hex_start - 3]
    } else {
        symbol
    }
}

/// `split /\->/`: the parts of an inline chain `caller->inlined`, as
/// ranges of `symbol`. Like Perl's split, trailing empty parts are dropped.
fn split_inline(symbol: &[u8], parts: &mut Vec<(usize, usize)>) {
    parts.clear();
    let mut start = 0;
    for arrow in memchr::memmem::find_iter(symbol, b"->") {
        parts.push((start, arrow));
        start = arrow + 2;
    }
    parts.push((start, symbol.len()));
    while parts.last().is_some_and(|(a, b)| a == b) {
        parts.pop();
    }
}

/// Perl's `$tidy_generic` on `names[start..]`, in place: `;` becomes `:`,
/// everything from the first `(` (other than `(anonymous namespace)`) is cut
/// unless the name looks like a Go method, and quotes are removed.
fn tidy_generic(names: &mut Vec<u8>, start: usize, scratch: &mut Vec<u8>) {
    let name = &mut names[start..];
    if !name.iter().any(|b| matches!(b, b';' | b'(' | b'"' | b'\'')) {
        return;
    }
    for b in name.iter_mut() {
        if *b == b';' {
            *b = b':';
        }
    }
    let go_method = memchr::memmem::find(name, b".(")
        .is_some_and(|i| memchr::memmem::find(&name[i + 2..], b").").is_some());
    if !go_method {
        let cut = memchr::memchr_iter(b'(', name)
            .find(|&i| !name[i + 1..].starts_with(b"anonymous namespace)"));
        if let Some(cut) = cut {
            names.truncate(start + cut);
        }
    }
    scratch.clear();
    scratch.extend(names[start..].iter().filter(|&&b| b != b'"' && b != b'\''));
    names.truncate(start);
    names.extend_from_slice(scratch);
}

/// `$mod =~ m/(^\[|vmlinux$)/ && $mod !~ /unknown/`.
fn is_kernel_module(module: &[u8]) -> bool {
    (module.first() == Some(&b'[') || module.ends_with(b"vmlinux"))
        && memchr::memmem::find(module, b"unknown").is_none()
}

/// `$mod =~ m:/tmp/perf-\d+\.map:`.
fn is_jit_module(module: &[u8]) -> bool {
    memchr::memmem::find_iter(module, b"/tmp/perf-").any(|i| {
        let rest = &module[i + b"/tmp/perf-".len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        digits > 0 && rest[digits..].starts_with(b".map")
    })
}

/// Header and event of a line, for the scan that decides the kept event
/// `12345.678901` (perf's seconds) in ns; `None` if it is not that.
fn parse_seconds_ns(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || fraction.len() > 9
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let nanos: u64 = format!("{fraction:0<9}").parse().ok()?;
    whole
        .parse::<u64>()
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos)
}

/// before parallel folding: the first header line with an event.
pub fn first_event(line: &[u8]) -> Option<&[u8]> {
    if line.first() == Some(&b'#') {
        return None;
    }
    let header = parse_header(line)?;
    header.event.map(|e| e.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_that_never_ends_holds_bounded_memory() {
        let mut folder = Folder::new(FoldOptions::default());
        let mut emitted = Vec::new();
        let mut emit = |sample: Sample<'_>| emitted.push(sample.stack.len());
        folder.line(b"t 1 [000] 1.0: 1 cpu-clock:", &mut emit);
        let frame = b"\tffffffff some_function_name_of_thirty+0x1 ([kernel.kallsyms])";
        for _ in 0..100_000 {
            folder.line(frame, &mut emit);
        }
        assert!(folder.names.len() < MAX_SAMPLE_BYTES + 64);
        assert!(folder.stats().dropped_frames > 50_000);
        folder.line(b"", &mut emit);
        assert_eq!(emitted.len(), 1);
        assert!(emitted[0] < 2 * MAX_SAMPLE_BYTES);
    }
}
