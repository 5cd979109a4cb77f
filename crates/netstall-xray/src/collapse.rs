//! `perf script` text to folded stacks: aggregated (what FlameGraph's
//! `stackcollapse-perf.pl` prints, streamed and folded in parallel) or
//! ordered (one line per sample, in input order, which is time order).
//!
//! Input is read in parts that end right after a blank line. Every sample
//! ends at a blank line and the folding state is empty there, so parts fold
//! independently; only the kept event (the first one seen, unless given) is
//! decided up front, by the reader. Memory stays bounded by the part size
//! and the number of distinct stacks, whatever the input size: a part grows
//! past its size only until it reaches a blank line, and at most to
//! [`MAX_PART_BYTES`]; text with no blank line that long (`perf script` of a
//! recording made without `-g`, `/dev/zero`) is cut at a line end instead,
//! and counted in [`CollapseStats::cut_parts`].

use std::io::{self, Read, Write};
use std::thread;

use anyhow::Context;
use netstall_events::xray::{CollapseSummary, FoldedStack};
use netstall_events::Record;
use rustc_hash::FxHashMap;
use std::io::BufWriter;

use crate::fold::{first_event, FoldOptions, FoldStats, Folder, Sample};

/// How to collapse.
#[derive(Debug, Clone)]
pub struct CollapseOptions {
    pub fold: FoldOptions,
    /// Fold a last sample that has no blank line after it.
    /// `stackcollapse-perf.pl` drops it, so the default is false.
    pub flush_at_eof: bool,
    /// Folding threads for the aggregated mode (the reader is one more).
    pub threads: usize,
}

impl Default for CollapseOptions {
    fn default() -> Self {
        Self {
            fold: FoldOptions::default(),
            flush_at_eof: false,
            threads: thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// What was folded and what was not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollapseStats {
    pub fold: FoldStats,
    /// The event whose samples were kept.
    pub kept_event: Option<Vec<u8>>,
    /// The input ended inside a sample (no blank line after its last frame).
    pub unterminated_last_sample: bool,
    /// That sample was folded anyway (`flush_at_eof`).
    pub flushed_last_sample: bool,
    /// Times the input ran [`MAX_PART_BYTES`] without a blank line and was
    /// cut at a line end (or mid-line, without one) to bound memory.
    pub cut_parts: u64,
}

/// Aggregated folded stacks, sorted bytewise as the Perl script sorts them.
#[derive(Debug, Clone, Default)]
pub struct Collapsed {
    pub stacks: Vec<(Vec<u8>, u64)>,
    pub stats: CollapseStats,
}

impl Collapsed {
    /// Writes `stack count` lines.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        for (stack, count) in &self.stacks {
            out.write_all(stack)?;
            writeln!(out, " {count}")?;
        }
        Ok(())
    }
}

/// Bytes read per part; a part grows past this only to reach a blank line.
const PART_BYTES: usize = 1 << 20;
/// The most a part grows to reach a blank line. A real sample is a few KiB;
/// the parts in flight (two per folding thread, at most) stay within memory.
pub const MAX_PART_BYTES: usize = 4 << 20;
/// Folding threads at most: more cannot run at once on any machine this
/// targets, and each holds parts in flight.
pub const MAX_THREADS: usize = 64;

/// Splits a byte stream into parts that end just after a blank line.
struct Parts<R> {
    reader: R,
    carry: Vec<u8>,
    eof: bool,
    /// Parts cut without a blank line (see [`MAX_PART_BYTES`]).
    cut: u64,
}

impl<R: Read> Parts<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            carry: Vec::new(),
            eof: false,
            cut: 0,
        }
    }

    /// Fills `buf` with the next part; `Ok(None)` at the end. The returned
    /// flag says whether this is the last part.
    fn next_part(&mut self, mut buf: Vec<u8>) -> io::Result<Option<(Vec<u8>, bool)>> {
        buf.clear();
        buf.append(&mut self.carry);
        let mut want = PART_BYTES;
        let mut searched = 0usize;
        loop {
            while !self.eof && buf.len() < want {
                let room = (want - buf.len()) as u64;
                if (&mut self.reader).take(room).read_to_end(&mut buf)? == 0 {
                    self.eof = true;
                }
            }
            if self.eof {
                return Ok((!buf.is_empty()).then_some((buf, true)));
            }
            // Look again only at what is new (and the byte before it).
            let from = searched.saturating_sub(1);
            if let Some(pos) = memchr::memmem::rfind(&buf[from..], b"\n\n") {
                let split = from + pos + 2;
                self.carry.extend_from_slice(&buf[split..]);
                buf.truncate(split);
                return Ok(Some((buf, false)));
            }
            if buf.len() >= MAX_PART_BYTES {
                // No blank line in reach: cut at the last line end (or
                // here, in an endless line) rather than hold it all.
                let split = memchr::memrchr(b'\n', &buf).map_or(buf.len(), |i| i + 1);
                self.carry.extend_from_slice(&buf[split..]);
                buf.truncate(split);
                self.cut += 1;
                return Ok(Some((buf, false)));
            }
            searched = buf.len();
            want = (want * 2).min(MAX_PART_BYTES);
        }
    }
}

/// Calls `f` on every line of `buf` (without its `\n`); a last line without
/// a newline counts too.
fn for_each_line(buf: &[u8], mut f: impl FnMut(&[u8])) {
    let mut start = 0;
    for newline in memchr::memchr_iter(b'\n', buf) {
        f(&buf[start..newline]);
        start = newline + 1;
    }
    if start < buf.len() {
        f(&buf[start..]);
    }
}

/// The first event named by a header line in `buf`.
fn scan_first_event(buf: &[u8]) -> Option<Vec<u8>> {
    let mut start = 0;
    while start < buf.len() {
        let end = memchr::memchr(b'\n', &buf[start..]).map_or(buf.len(), |i| start + i);
        if let Some(event) = first_event(&buf[start..end]) {
            return Some(event.to_vec());
        }
        start = end + 1;
    }
    None
}

/// Ends the input: a sample still open is dropped (as Perl does) or folded.
fn finish_input(
    folder: &mut Folder,
    flush_at_eof: bool,
    stats: &mut CollapseStats,
    emit: &mut impl FnMut(Sample<'_>),
) {
    if folder.in_sample() {
        stats.unterminated_last_sample = true;
        if flush_at_eof {
            folder.finish_sample(emit);
            stats.flushed_last_sample = true;
        }
    }
}

struct Job {
    index: usize,
    buf: Vec<u8>,
    event: Option<Vec<u8>>,
    last: bool,
}

/// What one folding thread returns.
#[derive(Default)]
struct WorkerResult {
    stacks: FxHashMap<Box<[u8]>, u64>,
    /// Per part: its index and counters, to number lines globally.
    parts: Vec<(usize, FoldStats)>,
    end: CollapseStats,
}

/// Folds `reader` and aggregates identical stacks, summing their weights:
/// the output of `stackcollapse-perf.pl` for the same input and options.
pub fn aggregate(reader: impl Read, opts: &CollapseOptions) -> io::Result<Collapsed> {
    let threads = opts.threads.clamp(1, MAX_THREADS);
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(threads * 2);
    let (free_tx, free_rx) = crossbeam_channel::unbounded::<Vec<u8>>();
    let mut kept_event = opts.fold.event_filter.clone();
    let mut cut_parts = 0;
    let results = thread::scope(|scope| -> io::Result<Vec<WorkerResult>> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let job_rx = job_rx.clone();
                let free_tx = free_tx.clone();
                scope.spawn(move || fold_jobs(job_rx, free_tx, opts))
            })
            .collect();
        drop(job_rx);
        let mut parts = Parts::new(reader);
        let mut index = 0;
        let read_result = loop {
            let buf = free_rx.try_recv().unwrap_or_default();
            let (buf, last) = match parts.next_part(buf) {
                Ok(Some(part)) => part,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            if kept_event.is_none() {
                kept_event = scan_first_event(&buf);
            }
            let job = Job {
                index,
                buf,
                event: kept_event.clone(),
                last,
            };
            index += 1;
            if job_tx.send(job).is_err() {
                break Ok(());
            }
        };
        drop(job_tx);
        cut_parts = parts.cut;
        let results = workers
            .into_iter()
            .map(|w| w.join().expect("a folding thread panicked"))
            .collect();
        read_result.map(|()| results)
    })?;

    let mut stacks: FxHashMap<Box<[u8]>, u64> = FxHashMap::default();
    let mut parts = Vec::new();
    let mut stats = CollapseStats {
        kept_event,
        cut_parts,
        ..CollapseStats::default()
    };
    for result in results {
        if stacks.len() < result.stacks.len() {
            let smaller = std::mem::replace(&mut stacks, result.stacks);
            merge_into(&mut stacks, smaller);
        } else {
            merge_into(&mut stacks, result.stacks);
        }
        parts.extend(result.parts);
        stats.unterminated_last_sample |= result.end.unterminated_last_sample;
        stats.flushed_last_sample |= result.end.flushed_last_sample;
    }
    parts.sort_by_key(|(index, _)| *index);
    let mut line_offset = 0;
    for (_, part) in &parts {
        stats.fold.merge(part, line_offset);
        line_offset += part.lines;
    }
    let mut stacks: Vec<(Vec<u8>, u64)> = stacks
        .into_iter()
        .map(|(stack, count)| (stack.into_vec(), count))
        .collect();
    stacks.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(Collapsed { stacks, stats })
}

fn merge_into(into: &mut FxHashMap<Box<[u8]>, u64>, from: FxHashMap<Box<[u8]>, u64>) {
    for (stack, count) in from {
        let total = into.entry(stack).or_insert(0);
        *total = total.saturating_add(count);
    }
}

fn fold_jobs(
    jobs: crossbeam_channel::Receiver<Job>,
    free: crossbeam_channel::Sender<Vec<u8>>,
    opts: &CollapseOptions,
) -> WorkerResult {
    let mut result = WorkerResult::default();
    let mut folder = Folder::new(opts.fold.clone());
    let stacks = &mut result.stacks;
    let mut emit = |sample: Sample<'_>| match stacks.get_mut(sample.stack) {
        Some(total) => *total = total.saturating_add(sample.weight),
        None => {
            stacks.insert(sample.stack.into(), sample.weight);
        }
    };
    for job in jobs {
        folder.set_event_filter(job.event);
        for_each_line(&job.buf, |line| folder.line(line, &mut emit));
        if job.last {
            finish_input(&mut folder, opts.flush_at_eof, &mut result.end, &mut emit);
        }
        result.parts.push((job.index, folder.take_stats()));
        // The reader may be gone already; then the buffer is simply freed.
        let _ = free.send(job.buf);
    }
    result
}

/// Folds `reader` in order, calling `emit` with each sample (stack, weight,
/// time), in input order (`perf script` prints samples in time order).
pub fn ordered(
    reader: impl Read,
    opts: &CollapseOptions,
    mut emit: impl FnMut(Sample<'_>) -> io::Result<()>,
) -> io::Result<CollapseStats> {
    let mut folder = Folder::new(opts.fold.clone());
    let mut stats = CollapseStats::default();
    let mut parts = Parts::new(reader);
    let mut buf = Vec::new();
    let mut error = None;
    while let Some((part, last)) = parts.next_part(buf)? {
        let mut sink = |sample: Sample<'_>| {
            if error.is_none() {
                error = emit(sample).err();
            }
        };
        for_each_line(&part, |line| folder.line(line, &mut sink));
        if last {
            finish_input(&mut folder, opts.flush_at_eof, &mut stats, &mut sink);
        }
        buf = part;
        if error.is_some() {
            break;
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    stats.kept_event = folder.event_filter().map(<[u8]>::to_vec);
    stats.fold = folder.take_stats();
    stats.cut_parts = parts.cut;
    Ok(stats)
}

/// Which folded lines [`run`] hands out.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Identical stacks summed and sorted: `stackcollapse-perf.pl`'s output.
    Aggregated,
    /// One line per sample, in input (time) order, each with count 1.
    Ordered,
    /// Ordered, but only the `samples` samples before each sample whose
    /// line (`stack 1`) matches `pattern`, and that one: `grep -B N`
    /// without the `--` separators.
    Before {
        pattern: regex::bytes::Regex,
        samples: usize,
    },
}

/// Collapses `reader` in `mode`, handing each folded stack and its count
/// to `emit` (which may stop the run with an error, e.g. a closed pipe).
pub fn run(
    reader: impl Read,
    opts: &CollapseOptions,
    mode: Mode,
    mut emit: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<CollapseStats> {
    let mut window = match mode {
        Mode::Aggregated => {
            let collapsed = aggregate(reader, opts)?;
            for (stack, count) in &collapsed.stacks {
                emit(stack, *count)?;
            }
            return Ok(collapsed.stats);
        }
        Mode::Ordered => None,
        Mode::Before { pattern, samples } => {
            Some((pattern, crate::window::BeforeWindow::new(samples)))
        }
    };
    let mut line = Vec::new();
    ordered(reader, opts, |Sample { stack, .. }| match &mut window {
        None => emit(stack, 1),
        Some((pattern, window)) => {
            line.clear();
            line.extend_from_slice(stack);
            line.extend_from_slice(b" 1");
            match window.push(stack.to_vec(), pattern.is_match(&line)) {
                Some(lines) => lines.iter().try_for_each(|s| emit(s, 1)),
                None => Ok(()),
            }
        }
    })
}

impl CollapseStats {
    /// An error when the input held no samples at all but did hold other
    /// text: `name` is not `perf script` output.
    pub fn ensure_samples(&self, name: &str) -> anyhow::Result<()> {
        if self.fold.samples == 0 && self.fold.unrecognized_lines > 0 {
            anyhow::bail!(
                "no perf script samples in {name}: line {} is not `perf script` output",
                self.fold.first_unrecognized_line.unwrap_or(1)
            );
        }
        Ok(())
    }

    /// Why the input `name` was cut, if it was: worth saying even when no
    /// sample came out of it, since it tells why (a recording without -g).
    pub fn cut_note(&self, name: &str) -> Option<String> {
        (self.cut_parts > 0).then(|| {
            format!(
                "netstall: {name} ran {} MiB without a blank line ({} time(s)) and was cut at line \
                 ends to bound memory: samples with call stacks end in blank lines; `perf script` \
                 of a recording made without -g looks like this (record with `perf record -g`)",
                MAX_PART_BYTES >> 20,
                self.cut_parts
            )
        })
    }

    /// What was skipped or dropped, one sentence each (for stderr).
    pub fn skipped_notes(&self) -> Vec<String> {
        let fold = &self.fold;
        let mut notes = Vec::new();
        if let Some(line) = fold.first_unrecognized_line {
            notes.push(format!(
                "netstall: skipped {} unrecognized line(s), the first at line {line}",
                fold.unrecognized_lines
            ));
        }
        if fold.filtered_samples > 0 {
            notes.push(format!(
                "netstall: kept only {} samples; skipped {} samples of other events such as {} (see --event-filter)",
                lossy(&self.kept_event).unwrap_or_default(),
                fold.filtered_samples,
                lossy(&fold.filtered_event).unwrap_or_default()
            ));
        }
        if fold.dropped_frames > 0 {
            notes.push(format!(
                "netstall: left out {} frame(s) of samples longer than {} MiB of names",
                fold.dropped_frames,
                crate::fold::MAX_SAMPLE_BYTES >> 20
            ));
        }
        if self.unterminated_last_sample && !self.flushed_last_sample {
            notes.push(
                "netstall: the last sample has no blank line after it and was dropped, \
                 as stackcollapse-perf.pl drops it (--flush-eof keeps it)"
                    .to_owned(),
            );
        }
        notes
    }

    /// The `collapse` record: what was read and what was skipped.
    pub fn summary(&self) -> CollapseSummary {
        CollapseSummary {
            samples: self.fold.samples,
            kept_event: lossy(&self.kept_event),
            filtered_samples: self.fold.filtered_samples,
            unrecognized_lines: self.fold.unrecognized_lines,
            first_unrecognized_line: self.fold.first_unrecognized_line,
            unterminated_last_sample: self.unterminated_last_sample,
        }
    }
}

/// An event name from the input, as text (perf prints bytes).
fn lossy(name: &Option<Vec<u8>>) -> Option<String> {
    name.as_deref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

impl Mode {
    /// The mode asked for: `before`, a regular expression, keeps the
    /// `samples` samples before each match (and implies ordered output).
    pub fn new(ordered: bool, before: Option<&str>, samples: usize) -> anyhow::Result<Mode> {
        Ok(match before {
            Some(p) => Mode::Before {
                pattern: regex::bytes::Regex::new(p)
                    .with_context(|| format!("invalid --before pattern '{p}'"))?,
                samples,
            },
            None if ordered => Mode::Ordered,
            None => Mode::Aggregated,
        })
    }
}

/// `netstall collapse`: folds the `perf script` text of `path` ("-":
/// standard input) to standard output, its notes on stderr and, with
/// `--json`, its summary last. A closed pipe (`| head`) is not an error.
pub fn run_printed(
    path: &std::path::Path,
    opts: &CollapseOptions,
    mode: Mode,
    out: netstall_core::output::Output,
) -> anyhow::Result<()> {
    let name = path.display().to_string();
    let input = crate::open_input(path)?;
    let stdout = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut writer = StackWriter::new(stdout, out.is_json());
    let stats = run(input, opts, mode, |stack, count| writer.stack(stack, count));
    let stats = match stats.and_then(|s| writer.flush().map(|()| s)) {
        Ok(stats) => stats,
        // `netstall collapse big.txt | head` is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot collapse {name}")),
    };
    if let Some(note) = stats.cut_note(&name) {
        out.progress(note);
    }
    // Fails when the input held no samples at all but did hold other text.
    stats.ensure_samples(&name)?;
    for note in stats.skipped_notes() {
        out.progress(note);
    }
    out.json(stats.summary());
    Ok(())
}

/// Folded stacks to a writer: `stack count` lines, or `stack` records
/// (JSON lines).
pub struct StackWriter<W: Write> {
    writer: W,
    json: bool,
}

impl<W: Write> StackWriter<W> {
    pub fn new(writer: W, json: bool) -> Self {
        Self { writer, json }
    }

    pub fn stack(&mut self, stack: &[u8], count: u64) -> io::Result<()> {
        if self.json {
            let record = Record::Stack(FoldedStack {
                stack: String::from_utf8_lossy(stack).into_owned(),
                count,
            });
            writeln!(self.writer, "{}", record.to_json_line())
        } else {
            self.writer.write_all(stack)?;
            writeln!(self.writer, " {count}")
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collapse(input: &str, opts: &CollapseOptions) -> String {
        let collapsed = aggregate(input.as_bytes(), opts).expect("in-memory input");
        let mut out = Vec::new();
        collapsed.write_to(&mut out).expect("write to a Vec");
        String::from_utf8(out).expect("utf-8 test data")
    }

    const TWO_SAMPLES: &str = "\
aa 1 [000] 1.0: 10 cpu-clock:
\tff leaf+0x1 ([kernel.kallsyms])
\tfe root (/bin/a)

bb 2 [000] 1.1: 10 cpu-clock:
\tff leaf ([kernel.kallsyms])
";

    #[test]
    fn last_sample_without_blank_line_is_dropped_like_perl() {
        let opts = CollapseOptions::default();
        assert_eq!(collapse(TWO_SAMPLES, &opts), "aa;root;leaf 10\n");
        let stats = aggregate(TWO_SAMPLES.as_bytes(), &opts).unwrap().stats;
        assert!(stats.unterminated_last_sample && !stats.flushed_last_sample);
    }

    #[test]
    fn flush_at_eof_keeps_the_last_sample() {
        let opts = CollapseOptions {
            flush_at_eof: true,
            ..CollapseOptions::default()
        };
        assert_eq!(
            collapse(TWO_SAMPLES, &opts),
            "aa;root;leaf 10\nbb;leaf 10\n"
        );
    }

    #[test]
    fn parts_split_only_after_blank_lines() {
        let sample = "t 1 1.0: 1 ev:\n\tff f (m)\n\n";
        let input = sample.repeat(PART_BYTES / sample.len() * 3);
        let mut parts = Parts::new(input.as_bytes());
        let mut total = 0;
        let mut buf = Vec::new();
        while let Some((part, _)) = parts.next_part(buf).unwrap() {
            assert!(part.ends_with(b"\n\n"));
            total += part.len();
            buf = part;
        }
        assert_eq!(total, input.len());
    }

    #[test]
    fn text_without_blank_lines_is_cut_into_bounded_parts() {
        // `perf script` of a recording without -g: header lines only.
        let line = "t 1 [000] 1.0: 1 cpu-clock:  ffff f (m)\n";
        let input = line.repeat(3 * MAX_PART_BYTES / line.len());
        let mut parts = Parts::new(input.as_bytes());
        let (mut total, mut buf) = (0, Vec::new());
        while let Some((part, _)) = parts.next_part(buf).unwrap() {
            assert!(part.len() <= MAX_PART_BYTES, "{}", part.len());
            assert!(part.ends_with(b"\n"), "cut at a line end");
            total += part.len();
            buf = part;
        }
        assert_eq!(total, input.len());
        assert!(parts.cut >= 2, "{}", parts.cut);
        // An endless line (`/dev/zero`) is cut too.
        let zeros = std::io::repeat(0).take(3 * MAX_PART_BYTES as u64);
        let stats = aggregate(zeros, &CollapseOptions::default()).unwrap().stats;
        assert!(stats.cut_parts >= 2, "{stats:?}");
        assert_eq!(stats.fold.samples, 0);
    }

    #[test]
    fn unrecognized_lines_are_counted_with_their_line_number() {
        let input = "t 1 1.0: 1 ev:\n\tff f (m)\ngarbage\n\n";
        let stats = aggregate(input.as_bytes(), &CollapseOptions::default())
            .unwrap()
            .stats;
        assert_eq!(stats.fold.unrecognized_lines, 1);
        assert_eq!(stats.fold.first_unrecognized_line, Some(3));
        assert_eq!(stats.fold.samples, 1);
    }

    fn run_to_lines(input: &str, mode: Mode) -> Vec<String> {
        let opts = CollapseOptions {
            flush_at_eof: true,
            ..CollapseOptions::default()
        };
        let mut lines = Vec::new();
        run(input.as_bytes(), &opts, mode, |stack, count| {
            lines.push(format!("{} {count}", String::from_utf8_lossy(stack)));
            Ok(())
        })
        .unwrap();
        lines
    }

    const FOUR_SAMPLES: &str = "\
aa 1 [000] 1.0: 10 cpu-clock:
\tff one (m)

bb 2 [000] 1.1: 10 cpu-clock:
\tff two (m)

aa 1 [000] 1.2: 10 cpu-clock:
\tff one (m)

cc 3 [000] 1.3: 10 cpu-clock:
\tff three (m)

";

    #[test]
    fn each_mode_hands_out_its_lines() {
        assert_eq!(
            run_to_lines(FOUR_SAMPLES, Mode::Aggregated),
            ["aa;one 20", "bb;two 10", "cc;three 10"]
        );
        assert_eq!(
            run_to_lines(FOUR_SAMPLES, Mode::Ordered),
            ["aa;one 1", "bb;two 1", "aa;one 1", "cc;three 1"]
        );
        let before = Mode::Before {
            pattern: regex::bytes::Regex::new("^cc;").unwrap(),
            samples: 2,
        };
        assert_eq!(
            run_to_lines(FOUR_SAMPLES, before),
            ["bb;two 1", "aa;one 1", "cc;three 1"]
        );
    }

    #[test]
    fn text_without_samples_is_not_perf_script() {
        let stats = aggregate("hello\nworld\n".as_bytes(), &CollapseOptions::default())
            .unwrap()
            .stats;
        let err = stats.ensure_samples("x.txt").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no perf script samples in x.txt: line 1 is not `perf script` output"
        );
        assert!(CollapseStats::default().ensure_samples("empty").is_ok());
    }

    #[test]
    fn an_input_without_blank_lines_is_cut_and_says_so() {
        let opts = CollapseOptions {
            threads: 1,
            ..CollapseOptions::default()
        };
        let input = vec![b'x'; MAX_PART_BYTES + 1];
        let stats = run(&input[..], &opts, Mode::Ordered, |_, _| Ok(())).unwrap();
        let note = stats.cut_note("zeros").expect("the input was cut");
        assert!(note.starts_with("netstall: zeros ran 4 MiB without a blank line (1 time(s))"));
        assert!(stats.ensure_samples("zeros").is_err());
    }

    #[test]
    fn notes_say_what_was_skipped_and_the_summary_counts_it() {
        let opts = CollapseOptions::default();
        let input = format!("not perf\n{TWO_SAMPLES}");
        let stats = run(input.as_bytes(), &opts, Mode::Aggregated, |_, _| Ok(())).unwrap();
        assert_eq!(
            stats.skipped_notes(),
            [
                "netstall: skipped 1 unrecognized line(s), the first at line 1",
                "netstall: the last sample has no blank line after it and was dropped, \
                 as stackcollapse-perf.pl drops it (--flush-eof keeps it)",
            ]
        );
        let summary = stats.summary();
        assert_eq!(summary.samples, 1);
        assert_eq!(summary.kept_event.as_deref(), Some("cpu-clock"));
        assert_eq!(summary.first_unrecognized_line, Some(1));
        assert!(summary.unterminated_last_sample);
    }

    #[test]
    fn stacks_are_written_as_lines_or_as_records() {
        let mut text = StackWriter::new(Vec::new(), false);
        text.stack(b"aa;root;leaf", 3).unwrap();
        assert_eq!(text.writer, b"aa;root;leaf 3\n");
        let mut json = StackWriter::new(Vec::new(), true);
        json.stack(b"aa;root;leaf", 3).unwrap();
        assert_eq!(
            String::from_utf8(json.writer).unwrap(),
            "{\"type\":\"stack\",\"stack\":\"aa;root;leaf\",\"count\":3}\n"
        );
    }

    #[test]
    fn a_before_pattern_means_ordered_windows_and_must_be_a_regex() {
        assert!(matches!(
            Mode::new(false, None, 5).unwrap(),
            Mode::Aggregated
        ));
        assert!(matches!(Mode::new(true, None, 5).unwrap(), Mode::Ordered));
        assert!(matches!(
            Mode::new(false, Some("ksoftirqd"), 5).unwrap(),
            Mode::Before { samples: 5, .. }
        ));
        let error = Mode::new(false, Some("("), 5).unwrap_err();
        assert_eq!(error.to_string(), "invalid --before pattern '('");
    }
}
