//! CPU lists as the kernel writes them, for the records' text forms (the
//! parsing, which needs the running system's CPUs, is netstall-core's).

/// Formats CPUs back into the compact kernel form (`0-3,6`).
pub fn format_list(cpus: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut iter = cpus.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_cpus_become_ranges() {
        assert_eq!(format_list(&[0, 1, 2, 5]), "0-2,5");
        assert_eq!(format_list(&[3]), "3");
        assert_eq!(format_list(&[]), "");
    }
}
