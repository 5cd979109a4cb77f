//! The flight recorder: the doctor-grade evidence of every stall the agent
//! sees, kept on disk (`--state-dir`) across restarts, bounded
//! (`--state-max-bytes`), and read back by `GET /stalls` and
//! `netstall report --from` into the same verdict `doctor` computes.
//!
//! Format: JSON lines, each one `netstall_events::Record` (the records
//! `doctor --replay` reads), in segment files `stalls-NNNNNNNNNN.jsonl`
//! numbered in write order. A segment is closed at an eighth of the limit
//! (at least 4 KiB) and the oldest segments are deleted so that all of them together stay
//! within the limit. Each start opens a new segment, so nothing is appended
//! behind a line a killed agent left torn.
//!
//! Crash safety: every record is one `write(2)` of a whole line to a file
//! opened with `O_APPEND`, so a killed agent leaves whole lines (what the
//! kernel has, survives the process). Data reach the disk with `fdatasync`
//! at most once per [`SYNC_EVERY`]: a power loss costs at most that much of
//! the newest evidence. A reader skips a torn or unparsable line with a
//! warning; it is never fatal.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netstall_events::Record;

/// `--state-max-bytes`'s default: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// The smallest limit: four segments of a few stalls (1–3 KiB each, with
/// their stacks).
pub const MIN_MAX_BYTES: u64 = 16 << 10;
/// The smallest segment: a stall with a deep stack fits.
const MIN_SEGMENT_BYTES: u64 = 4 << 10;
/// How often written records are made durable (`fdatasync`), at most.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

const PREFIX: &str = "stalls-";
const SUFFIX: &str = ".jsonl";

/// The segment files in `dir`, oldest first, with their numbers.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the recorder directory {}", dir.display()))?;
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let number = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
            Some((number.parse().ok()?, e.path()))
        })
        .collect();
    found.sort();
    Ok(found)
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{number:010}{SUFFIX}"))
}

/// Writes records to the segments of one directory, within a byte limit.
pub struct Recorder {
    dir: PathBuf,
    max_bytes: u64,
    /// Closed segments, oldest first, with their sizes.
    closed: std::collections::VecDeque<(PathBuf, u64)>,
    current: Option<(u64, File, u64)>,
    next_number: u64,
    total: u64,
    last_sync: Option<Instant>,
    /// Records too large for the limit, not written.
    pub dropped: u64,
}

impl Recorder {
    /// Opens `dir` (created if missing); what earlier runs wrote is kept,
    /// trimmed to `max_bytes` if the limit shrank.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        let mut closed = std::collections::VecDeque::new();
        let mut total = 0;
        let mut next_number = 0;
        for (number, path) in segments(dir)? {
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            total += len;
            closed.push_back((path, len));
            next_number = number + 1;
        }
        let mut recorder = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            closed,
            current: None,
            next_number,
            total,
            last_sync: None,
            dropped: 0,
        };
        recorder.make_room(0)?;
        Ok(recorder)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes in every segment together (never more than the limit).
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 8)
            .max(MIN_SEGMENT_BYTES)
            .min(self.max_bytes)
    }

    /// Deletes the oldest segments until `incoming` more bytes fit.
    fn make_room(&mut self, incoming: u64) -> Result<()> {
        while self.total + incoming > self.max_bytes {
            let Some((path, len)) = self.closed.pop_front() else {
                break;
            };
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.closed.push_front((path.clone(), len));
                    return Err(e).with_context(|| format!("cannot delete {}", path.display()));
                }
            }
            self.total -= len;
        }
        Ok(())
    }

    /// Appends one record as a whole line.
    pub fn write(&mut self, record: &Record) -> Result<()> {
        let mut line = record.to_json_line().into_bytes();
        line.push(b'\n');
        let len = line.len() as u64;
        if len > self.segment_bytes() {
            self.dropped += 1;
            bail!("a {len}-byte record is larger than a recorder segment");
        }
        if self
            .current
            .as_ref()
            .is_some_and(|(_, _, written)| written + len > self.segment_bytes())
        {
            self.close_current();
        }
        if self.current.is_none() {
            let number = self.next_number;
            let path = segment_path(&self.dir, number);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            self.next_number += 1;
            self.current = Some((number, file, 0));
        }
        // The current segment is never deleted: only closed ones make room.
        self.make_room(len)?;
        let (_, file, written) = self.current.as_mut().expect("a segment is open");
        file.write_all(&line).context("cannot write the recorder")?;
        *written += len;
        self.total += len;
        if self.last_sync.is_none_or(|t| t.elapsed() >= SYNC_EVERY) {
            self.last_sync = Some(Instant::now());
            file.sync_data().context("cannot sync the recorder")?;
        }
        Ok(())
    }

    fn close_current(&mut self) {
        if let Some((number, file, written)) = self.current.take() {
            let _ = file.sync_data();
            self.closed
                .push_back((segment_path(&self.dir, number), written));
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.close_current();
    }
}

/// The time a record is about, REALTIME ns; `None` for the records that
/// belong to the timed one before them (a `memcg-count` after its stall).
fn time_of(record: &Record) -> Option<u64> {
    match record {
        Record::Stall(s) => Some(s.end_ns),
        Record::Episode(e) => Some(e.end_ns),
        Record::Agent(a) => Some(a.ts_ns),
        Record::StatFlush(f) => Some(f.end_ns),
        Record::CpuSampling(c) => Some(c.end_ns),
        _ => None,
    }
}

/// What [`scan`] found besides the records.
#[derive(Debug, Default)]
pub struct Scanned {
    /// Segments read.
    pub segments: usize,
    /// Lines skipped (torn by a crash, truncated, corrupt), each told.
    pub warnings: Vec<String>,
}

/// Reads the records of `dir` that end at or after `since_ns`, oldest
/// first, each given to `on_record` with its line. Untimed records go with
/// the timed record before them. A missing or unreadable directory or
/// segment, or a directory without segments, is an error; a bad line is
/// only a warning.
pub fn scan(dir: &Path, since_ns: u64, mut on_record: impl FnMut(Record, &str)) -> Result<Scanned> {
    let found = segments(dir)?;
    if found.is_empty() {
        bail!(
            "{} holds no recorder segments ({PREFIX}*{SUFFIX}): not an agent's --state-dir, or no stall recorded yet",
            dir.display()
        );
    }
    let mut scanned = Scanned {
        segments: found.len(),
        ..Scanned::default()
    };
    let mut keep = false;
    for (_, path) in &found {
        let file = match File::open(path) {
            Ok(file) => file,
            // Deleted by the agent's rotation since the listing: older than the rest.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        let mut number = 0usize;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            number += 1;
            let whole = line.last() == Some(&b'\n');
            let parsed = std::str::from_utf8(&line)
                .ok()
                .map(str::trim)
                .filter(|text| !text.is_empty())
                .map(|text| (text, netstall_events::parse_line(text)));
            match parsed {
                Some((text, Ok(record))) if whole => {
                    if let Some(t) = time_of(&record) {
                        keep = t >= since_ns;
                    }
                    if keep {
                        on_record(record, text);
                    }
                }
                None if whole => {} // a blank line
                _ => scanned.warnings.push(format!(
                    "{}:{number}: skipped a {} line",
                    path.display(),
                    if whole {
                        "corrupt"
                    } else {
                        "torn (unfinished)"
                    }
                )),
            }
        }
    }
    Ok(scanned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstall_events::agent::MemcgDying;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "netstall-recorder-{name}-{}",
            netstall_testkit::unique_prefix()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn stall(start_ns: u64) -> Record {
        Record::Stall(crate::tracer::cadvisor_stall(start_ns))
    }

    fn read_all(dir: &Path) -> (Vec<Record>, Scanned) {
        let mut records = Vec::new();
        let scanned = scan(dir, 0, |r, _| records.push(r)).unwrap();
        (records, scanned)
    }

    #[test]
    fn records_stay_within_the_limit_and_survive_a_reopen() {
        let dir = dir("bound");
        let max = MIN_MAX_BYTES;
        let mut recorder = Recorder::open(&dir, max).unwrap();
        for i in 0..500 {
            recorder.write(&stall(i * 1_000_000_000)).unwrap();
            let on_disk: u64 = segments(&dir)
                .unwrap()
                .iter()
                .map(|(_, p)| std::fs::metadata(p).unwrap().len())
                .sum();
            assert!(on_disk <= max, "{on_disk} > {max} after {i} records");
            assert_eq!(on_disk, recorder.total_bytes());
        }
        drop(recorder);
        let (records, scanned) = read_all(&dir);
        assert!(scanned.warnings.is_empty(), "{:?}", scanned.warnings);
        // The newest records are kept, in order.
        let Some(Record::Stall(last)) = records.last() else {
            panic!("{records:?}")
        };
        assert_eq!(last.start_ns, 499_000_000_000);
        assert!(records.len() > 10, "{}", records.len());
        // A restart appends to a new segment after the old ones.
        let mut recorder = Recorder::open(&dir, max).unwrap();
        recorder.write(&stall(500_000_000_000)).unwrap();
        drop(recorder);
        let (again, _) = read_all(&dir);
        assert!(matches!(again.last(), Some(Record::Stall(s)) if s.start_ns == 500_000_000_000));
        // A lower limit trims at open.
        let recorder = Recorder::open(&dir, max / 2).unwrap();
        assert!(recorder.total_bytes() <= max / 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_and_a_truncated_file_are_skipped_with_a_warning() {
        let dir = dir("torn");
        let mut recorder = Recorder::open(&dir, 1 << 20).unwrap();
        recorder.write(&stall(1_000)).unwrap();
        recorder.write(&stall(2_000)).unwrap();
        drop(recorder);
        let (_, path) = segments(&dir).unwrap().remove(0);
        // kill -9 mid-write: the last line has no end.
        let text = std::fs::read_to_string(&path).unwrap();
        let first_len = text.find('\n').unwrap() + 1;
        std::fs::write(&path, &text[..text.len() - 40]).unwrap();
        let (records, scanned) = read_all(&dir);
        assert_eq!(records.len(), 1);
        assert_eq!(scanned.warnings.len(), 1, "{:?}", scanned.warnings);
        assert!(
            scanned.warnings[0].contains(":2: skipped a torn"),
            "{:?}",
            scanned.warnings
        );
        // Truncated inside the first line: nothing whole, still not fatal.
        std::fs::write(&path, &text[..first_len / 2]).unwrap();
        let (records, scanned) = read_all(&dir);
        assert!(records.is_empty());
        assert_eq!(scanned.warnings.len(), 1);
        // A corrupt line in the middle is skipped too; later ones are read.
        let mut corrupt = text[..first_len].to_string();
        corrupt.push_str("{\"type\":\"stall\",\"cpu\":\n");
        corrupt.push_str(&text[first_len..]);
        std::fs::write(&path, corrupt).unwrap();
        let (records, scanned) = read_all(&dir);
        assert_eq!(records.len(), 2);
        assert!(
            scanned.warnings[0].contains("corrupt"),
            "{:?}",
            scanned.warnings
        );
        // And a recorder opened on it writes to a new segment, not behind the bad line.
        let mut recorder = Recorder::open(&dir, 1 << 20).unwrap();
        recorder.write(&stall(3_000)).unwrap();
        drop(recorder);
        assert_eq!(segments(&dir).unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn since_keeps_recent_records_with_what_belongs_to_them() {
        let dir = dir("since");
        let mut recorder = Recorder::open(&dir, 1 << 20).unwrap();
        let dying = |n| {
            Record::MemcgDying(MemcgDying {
                node: "n".into(),
                dying: n,
                limit: 1,
                over_limit: true,
            })
        };
        recorder.write(&stall(1_000)).unwrap();
        recorder.write(&dying(1)).unwrap();
        recorder.write(&stall(5_000_000_000)).unwrap();
        recorder.write(&dying(2)).unwrap();
        drop(recorder);
        let mut records = Vec::new();
        scan(&dir, 5_000_000_000, |r, _| records.push(r)).unwrap();
        assert_eq!(records.len(), 2, "{records:?}");
        assert!(matches!(records[1], Record::MemcgDying(ref m) if m.dying == 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_or_foreign_directory_is_an_error() {
        let dir = dir("missing");
        let error = scan(&dir, 0, |_, _| {}).unwrap_err();
        assert!(format!("{error:#}").contains("cannot read the recorder directory"));
        std::fs::create_dir_all(&dir).unwrap();
        let error = scan(&dir, 0, |_, _| {}).unwrap_err();
        assert!(
            format!("{error:#}").contains("no recorder segments"),
            "{error:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
