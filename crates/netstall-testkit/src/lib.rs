//! Helpers shared by netstall's tests.
//!
//! * [`privileged`]: a test that needs root either runs, or (outside CI) says
//!   it skipped. Under `CI` a missing privilege fails the test: CI runs as
//!   root, so a skip there would hide a broken runner.
//! * [`unique_prefix`]: short unique names so tests can run in parallel.
//! * [`MachineLock`]: serializes tests with machine-wide effects (injected
//!   stalls, dying cgroups, drop_caches) across test processes.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};

/// True when the test may run privileged work. Outside CI, prints why it
/// skips and returns false; under CI, panics instead of skipping.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let reason = format!("{test}: needs root (network namespaces, BPF, cgroups)");
    if std::env::var_os("CI").is_some() {
        panic!("{reason}; CI is set, so this is a failure, not a skip");
    }
    eprintln!("SKIP {reason}");
    false
}

/// A short name unique to this process and call, usable in interface and
/// namespace names (≤ 8 characters: `t` + 4 pid digits + 3 counter digits, base 36).
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "t{}{}",
        base36(std::process::id() % 36u32.pow(4), 4),
        base36(n % 36u32.pow(3), 3)
    )
}

fn base36(mut n: u32, width: usize) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = digits[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out).expect("ascii digits")
}

/// An exclusive lock for tests whose effects cross namespaces: injected
/// stalls delay every test's packets on that CPU, and dying cgroups and
/// drop_caches are global. Held until dropped.
pub struct MachineLock {
    _file: File,
}

impl MachineLock {
    pub fn acquire() -> Self {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/tmp/netstall-machine-tests.lock")
            .expect("open the machine-wide test lock");
        // SAFETY: the fd is valid for the lifetime of `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock the machine-wide test lock");
        Self { _file: file }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_short_and_unique() {
        let a = unique_prefix();
        let b = unique_prefix();
        assert_ne!(a, b);
        assert_eq!(a.len(), 8);
    }
}
