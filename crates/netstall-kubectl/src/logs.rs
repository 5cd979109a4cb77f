//! The doctor pod's log, line by line: the doctor's own output (passed on
//! to the user as it comes) and, when asked for, its HTML report, written
//! to standard output after the verdict and cut out here.

/// Where one log line belongs.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The doctor's output: show it.
    Output(&'a str),
    /// Part of the HTML report: keep it.
    Report,
}

/// Splits a doctor pod's log into output and report.
#[derive(Debug, Default)]
pub struct LogSplitter {
    in_report: bool,
    report: String,
    complete: bool,
}

impl LogSplitter {
    /// Sorts one line (without its newline).
    pub fn line<'a>(&mut self, line: &'a str) -> Line<'a> {
        if !self.in_report && !self.complete && line.starts_with("<!DOCTYPE html>") {
            self.in_report = true;
        }
        // The doctor's own note that it wrote the report (to its stdout, the log).
        if !self.in_report && line == "report written to /dev/stdout" {
            return Line::Report;
        }
        if !self.in_report {
            return Line::Output(line);
        }
        self.report.push_str(line);
        self.report.push('\n');
        if line.trim_end().ends_with("</html>") {
            self.in_report = false;
            self.complete = true;
        }
        Line::Report
    }

    /// The report, once its closing tag has been seen.
    pub fn report(&self) -> Option<&str> {
        self.complete.then_some(self.report.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_cut_out_of_the_output() {
        let mut s = LogSplitter::default();
        let log = "watching 2 s\nverdict: healthy\n<!DOCTYPE html>\n<html><body>\n<p>x</p>\n</body></html>\nreport written to /dev/stdout";
        let shown: Vec<&str> = log
            .lines()
            .filter_map(|l| match s.line(l) {
                Line::Output(o) => Some(o),
                Line::Report => None,
            })
            .collect();
        assert_eq!(shown, ["watching 2 s", "verdict: healthy"]);
        assert_eq!(
            s.report(),
            Some("<!DOCTYPE html>\n<html><body>\n<p>x</p>\n</body></html>\n")
        );
    }

    #[test]
    fn a_cut_off_report_is_no_report() {
        let mut s = LogSplitter::default();
        s.line("<!DOCTYPE html>");
        s.line("<html><body>");
        assert_eq!(s.report(), None);
    }
}
