//! "The N samples before X": the lines `grep PATTERN -B N` prints, without
//! its `--` group separators, computed while streaming.

use std::collections::VecDeque;

/// Keeps the last `before` lines and releases them when a line matches.
///
/// Like `grep -B N`: each matching line is printed with up to N lines before
/// it; a line is printed at most once, so overlapping windows merge.
#[derive(Debug)]
pub struct BeforeWindow<T> {
    before: usize,
    recent: VecDeque<T>,
}

impl<T> BeforeWindow<T> {
    pub fn new(before: usize) -> Self {
        Self {
            before,
            recent: VecDeque::with_capacity(before.min(4096)),
        }
    }

    /// Offers the next line. When `matched`, returns the window (the kept
    /// lines, then this one), oldest first; otherwise keeps it and returns nothing.
    pub fn push(&mut self, item: T, matched: bool) -> Option<Vec<T>> {
        if matched {
            let mut window: Vec<T> = self.recent.drain(..).collect();
            window.push(item);
            return Some(window);
        }
        if self.before > 0 {
            if self.recent.len() == self.before {
                self.recent.pop_front();
            }
            self.recent.push_back(item);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grep_b(lines: &[&str], pattern: &str, before: usize) -> Vec<String> {
        let mut window = BeforeWindow::new(before);
        let mut out = Vec::new();
        for line in lines {
            if let Some(w) = window.push(line.to_string(), line.contains(pattern)) {
                out.extend(w);
            }
        }
        out
    }

    #[test]
    fn overlapping_windows_print_each_line_once() {
        let lines = ["a", "b", "X1", "c", "X2", "d", "e", "f", "X3", "g"];
        assert_eq!(
            grep_b(&lines, "X", 2),
            ["a", "b", "X1", "c", "X2", "e", "f", "X3"]
        );
    }

    #[test]
    fn zero_context_prints_only_matches() {
        let lines = ["a", "X", "b"];
        assert_eq!(grep_b(&lines, "X", 0), ["X"]);
    }
}
