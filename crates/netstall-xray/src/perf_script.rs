//! The lines of `perf script` text, read exactly the way FlameGraph's
//! `stackcollapse-perf.pl` reads them.
//!
//! The Perl script classifies each line with three regular expressions. The
//! functions here compute the same matches and captures by hand, because they
//! run on every line of inputs that are gigabytes long. Where a hand-written
//! fast path cannot decide (odd frame lines), [`parse_frame`] falls back to the
//! Perl pattern itself, run by the `regex` crate, whose leftmost-first
//! semantics give the same captures as Perl's backtracking engine.
//!
//! Perl reads the input as bytes, so `\s` is ASCII whitespace, `\d` is `[0-9]`
//! and `\w` is `[A-Za-z0-9_]`; these helpers work on `&[u8]` for the same reason.

use std::sync::OnceLock;

use regex::bytes::Regex;

/// Perl's `\s` on a byte string: space, `\t`, `\n`, `\v`, `\f`, `\r`.
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Perl's `\w` on a byte string.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A sample's first line: `comm [pid/]tid [cpu] time: [period] event:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// The task name, which may contain spaces (`V8 WorkerThread`).
    pub comm: &'a [u8],
    /// The first number after the name: the TID when perf printed one number,
    /// the PID when it printed `pid/tid`.
    pub first_id: &'a [u8],
    /// The number after the slash in `pid/tid`.
    pub second_id: Option<&'a [u8]>,
    /// The period and event name at the end of the line, when present.
    pub event: Option<Event<'a>>,
    /// The timestamp (`12345.678901`, seconds), when perf printed one.
    pub time: Option<&'a [u8]>,
}

/// `[period] event:` at the end of a header line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub period: Option<&'a [u8]>,
    pub name: &'a [u8],
}

/// One stack frame line: `addr symbol[+off] (dso)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The address as printed (a run of word characters).
    pub pc: &'a [u8],
    /// The symbol, possibly with `+0x..` and inline `a->b` chains.
    pub symbol: &'a [u8],
    /// What perf printed between the parentheses: a DSO path, `[kernel.kallsyms]`, `[unknown]`...
    pub module: &'a [u8],
}

/// Matches a header line as `^(\S.+?)\s+(\d+)\/*(\d+)*\s+` does, then the
/// event as `:\s*(\d+)*\s+(\S+):\s*$` does.
///
/// The lazy name means the name ends at the first run of whitespace that is
/// followed by digits and then whitespace: `worker 1 4242 ...` is the task
/// `worker` with TID 1, as the Perl script (and inferno) read it.
pub fn parse_header(line: &[u8]) -> Option<Header<'_>> {
    if line.len() < 2 || is_space(line[0]) {
        return None;
    }
    let mut end = 2;
    while end < line.len() {
        if !is_space(line[end]) {
            end += 1;
            continue;
        }
        if let Some((first_id, second_id)) = ids_at(line, end) {
            return Some(Header {
                comm: &line[..end],
                first_id,
                second_id,
                event: parse_event(line),
                time: parse_time(&line[end..]),
            });
        }
        // Every start inside the same whitespace run sees the same digits
        // after it, so none of them can match either.
        while end < line.len() && is_space(line[end]) {
            end += 1;
        }
    }
    None
}

/// `\s+(\d+)\/*(\d+)*\s+` at `start`. Greedy and deterministic: whitespace
/// and digits are disjoint, so backtracking can never find another match.
fn ids_at(line: &[u8], start: usize) -> Option<(&[u8], Option<&[u8]>)> {
    let run = |mut i: usize, pred: fn(u8) -> bool| {
        while i < line.len() && pred(line[i]) {
            i += 1;
        }
        i
    };
    let digits_start = run(start, is_space);
    let digits_end = run(digits_start, |b| b.is_ascii_digit());
    if digits_end == digits_start {
        return None;
    }
    let second_start = run(digits_end, |b| b == b'/');
    let second_end = run(second_start, |b| b.is_ascii_digit());
    if second_end >= line.len() || !is_space(line[second_end]) {
        return None;
    }
    let second = (second_end > second_start).then(|| &line[second_start..second_end]);
    Some((&line[digits_start..digits_end], second))
}

/// The sample's time: the last word of the form `DIGITS.DIGITS:` (perf
/// prints it after the CPU and before the period and event).
fn parse_time(rest: &[u8]) -> Option<&[u8]> {
    rest.split(|&b| is_space(b))
        .rev()
        .filter_map(|word| word.strip_suffix(b":"))
        .find(|word| {
            let mut parts = word.splitn(2, |&b| b == b'.');
            let whole = parts.next().unwrap_or_default();
            let fraction = parts.next().unwrap_or_default();
            !whole.is_empty()
                && !fraction.is_empty()
                && whole.iter().chain(fraction).all(u8::is_ascii_digit)
        })
}

/// `:\s*(\d+)*\s+(\S+):\s*$`, reasoned from the end of the line: the event is
/// the last word, which must end in `:`; before it come whitespace, an
/// optional period, optional whitespace and a `:` (the end of the timestamp).
pub fn parse_event(line: &[u8]) -> Option<Event<'_>> {
    let mut end = line.len();
    while end > 0 && is_space(line[end - 1]) {
        end -= 1;
    }
    if end == 0 || line[end - 1] != b':' {
        return None;
    }
    let name_end = end - 1;
    let mut name_start = name_end;
    while name_start > 0 && !is_space(line[name_start - 1]) {
        name_start -= 1;
    }
    if name_start == name_end || name_start == 0 {
        return None;
    }
    let name = &line[name_start..name_end];
    let mut gap_start = name_start;
    while gap_start > 0 && is_space(line[gap_start - 1]) {
        gap_start -= 1;
    }
    if gap_start == 0 {
        return None;
    }
    if line[gap_start - 1] == b':' {
        return Some(Event { period: None, name });
    }
    let mut period_start = gap_start;
    while period_start > 0 && line[period_start - 1].is_ascii_digit() {
        period_start -= 1;
    }
    if period_start == gap_start {
        return None;
    }
    let mut colon = period_start;
    while colon > 0 && is_space(line[colon - 1]) {
        colon -= 1;
    }
    (colon > 0 && line[colon - 1] == b':').then(|| Event {
        period: Some(&line[period_start..gap_start]),
        name,
    })
}

/// Matches a frame line as `^\s*(\w+)\s*(.+) \((.*)\)` does: the symbol runs
/// to the last ` (` that has a `)` after it, and the module to the last `)`.
pub fn parse_frame(line: &[u8]) -> Option<Frame<'_>> {
    fast_frame(line).or_else(|| regex_frame(line))
}

/// The match Perl tries first (every quantifier at its greediest), when it exists.
fn fast_frame(line: &[u8]) -> Option<Frame<'_>> {
    let mut i = 0;
    while i < line.len() && is_space(line[i]) {
        i += 1;
    }
    let pc_start = i;
    while i < line.len() && is_word(line[i]) {
        i += 1;
    }
    if i == pc_start {
        // `\w+` cannot start anywhere else: the prefix is all whitespace.
        return None;
    }
    let pc = &line[pc_start..i];
    while i < line.len() && is_space(line[i]) {
        i += 1;
    }
    let symbol_start = i;
    let close = memchr::memrchr(b')', line)?;
    // The `(` at `open` needs a space before it, at least one symbol byte
    // before that, and must come before the last `)`.
    let lowest_open = symbol_start + 2;
    if close <= lowest_open {
        return None;
    }
    let open = memchr::memrchr_iter(b'(', &line[lowest_open..close])
        .map(|pos| lowest_open + pos)
        .find(|&pos| line[pos - 1] == b' ')?;
    Some(Frame {
        pc,
        symbol: &line[symbol_start..open - 1],
        module: &line[open + 1..close],
    })
}

/// The Perl pattern itself, for lines where the greediest match fails and
/// Perl would backtrack into the address or the whitespace.
fn regex_frame(line: &[u8]) -> Option<Frame<'_>> {
    static FRAME: OnceLock<Regex> = OnceLock::new();
    let re = FRAME.get_or_init(|| {
        Regex::new(r"(?-u)^\s*(\w+)\s*(.+) \((.*)\)").expect("the frame pattern is valid")
    });
    let caps = re.captures(line)?;
    Some(Frame {
        pc: caps.get(1)?.as_bytes(),
        symbol: caps.get(2)?.as_bytes(),
        module: caps.get(3)?.as_bytes(),
    })
}

/// Name, first and second number of a header line.
#[cfg(test)]
type HeaderIds<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>);

/// The Perl header pattern, for tests that check the hand-written matcher.
#[cfg(test)]
pub(crate) fn regex_header(line: &[u8]) -> Option<HeaderIds<'_>> {
    static HEADER: OnceLock<Regex> = OnceLock::new();
    let re = HEADER.get_or_init(|| {
        Regex::new(r"(?-u)^(\S.+?)\s+(\d+)/*(\d+)*\s+").expect("the header pattern is valid")
    });
    let caps = re.captures(line)?;
    Some((
        caps.get(1)?.as_bytes(),
        caps.get(2)?.as_bytes(),
        caps.get(3).map(|m| m.as_bytes()),
    ))
}

/// The Perl event pattern, for tests that check the hand-written matcher.
#[cfg(test)]
pub(crate) fn regex_event(line: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    static EVENT: OnceLock<Regex> = OnceLock::new();
    let re = EVENT.get_or_init(|| {
        Regex::new(r"(?-u):\s*(\d+)*\s+(\S+):\s*$").expect("the event pattern is valid")
    });
    let caps = re.captures(line)?;
    Some((caps.get(1).map(|m| m.as_bytes()), caps.get(2)?.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_header_with_cpu_and_period() {
        let h = parse_header(b"swapper     0 [000]   456.781427:    1001001 cpu-clock:ppp: ")
            .expect("a header");
        assert_eq!(h.comm, b"swapper");
        assert_eq!(h.first_id, b"0");
        assert_eq!(h.second_id, None);
        let e = h.event.expect("an event");
        assert_eq!(e.period, Some(&b"1001001"[..]));
        assert_eq!(e.name, b"cpu-clock:ppp");
    }

    #[test]
    fn pid_tid_header_without_period() {
        let h = parse_header(b"kworker/u8:8 12/345 [001] 1.000: cpu-clock:ppp:").expect("a header");
        assert_eq!(h.comm, b"kworker/u8:8");
        assert_eq!((h.first_id, h.second_id), (&b"12"[..], Some(&b"345"[..])));
        let e = h.event.expect("an event");
        assert_eq!((e.period, e.name), (None, &b"cpu-clock:ppp"[..]));
    }

    #[test]
    fn thread_name_ending_in_digits_loses_them_like_perl() {
        let h = parse_header(b"worker 1  4242 12.5: 1001001 cpu-clock:").expect("a header");
        assert_eq!(h.comm, b"worker");
        assert_eq!(h.first_id, b"1");
    }

    #[test]
    fn padded_event_names_keep_their_period() {
        let e = parse_event(b"fpdemo  4242  12.5:    1001001   cpu-clock:").expect("an event");
        assert_eq!(e.period, Some(&b"1001001"[..]));
        assert_eq!(e.name, b"cpu-clock");
    }

    #[test]
    fn frame_symbol_runs_to_the_last_space_paren_like_perl() {
        let f =
            parse_frame(b"\t  55d0 std::sort(a (b)) (anon) ([kernel.kallsyms])").expect("a frame");
        assert_eq!(f.pc, b"55d0");
        assert_eq!(f.symbol, b"std::sort(a (b)) (anon)");
        assert_eq!(f.module, b"[kernel.kallsyms]");
        // A module with parentheses of its own is cut at its last " (", as Perl cuts it.
        let f = parse_frame(b"\t55d0 main (/usr/bin/x (deleted))").expect("a frame");
        assert_eq!(
            (f.symbol, f.module),
            (&b"main (/usr/bin/x"[..], &b"deleted)"[..])
        );
    }

    #[test]
    fn frame_that_needs_perl_backtracking() {
        // The greediest match has no symbol byte before " (", so Perl gives
        // a byte of the address to the symbol.
        let f = parse_frame(b"\tffff (foo)").expect("a frame");
        assert_eq!(
            (f.pc, f.symbol, f.module),
            (&b"fff"[..], &b"f"[..], &b"foo"[..])
        );
    }

    /// Hand-written matchers against the Perl patterns on tricky lines.
    #[test]
    fn hand_written_matchers_agree_with_the_perl_patterns() {
        let lines: &[&[u8]] = &[
            b"a 1 2.0: 3 ev:",
            b"ab 1 2.0: 3 ev:",
            b"a 123 [000] 1.0: 1 ev:",
            b"comm 12/ x",
            b"comm 12//34 \t",
            b"comm 12/34x 5 ",
            b"x  y 0 1: c:",
            b"V8 WorkerThread 24636/25607 [000] 94564.109216: 100 cycles:",
            b"java 12688/12764 6544038.708352: 10309278 cpu-clock:",
            b"t 1 :: :",
            b"t 1 1.0:1001 ev:  ",
            b"t 1 1.0 1001 ev:",
            b"t 1 x:1001 ev:",
            b"t 1 :  : :",
            b"  lead 1 2",
            b"swapper 0/0 [000] 456.78: cpu-clock:ppp: ",
        ];
        for line in lines {
            let ours = parse_header(line).map(|h| (h.comm, h.first_id, h.second_id));
            assert_eq!(
                ours,
                regex_header(line),
                "header {:?}",
                String::from_utf8_lossy(line)
            );
            let ours = parse_event(line).map(|e| (e.period, e.name));
            assert_eq!(
                ours,
                regex_event(line),
                "event {:?}",
                String::from_utf8_lossy(line)
            );
        }
        let frames: &[&[u8]] = &[
            b"\tffff (foo)",
            b"\t ffff  f (m)",
            b"ab (c)",
            b"\t1 a (b) (c",
            b"\t1 a (b (c))",
            b"\t1  (x) (y)",
            b"\t1 a( (",
            b"\t\t7f [unknown] ([unknown])",
            b"\t-1 x (y)",
            b"\t1 x ()",
            b"\t1 x)(",
        ];
        for line in frames {
            let ours = parse_frame(line);
            let perl = regex_frame(line);
            assert_eq!(ours, perl, "frame {:?}", String::from_utf8_lossy(line));
        }
    }
}
