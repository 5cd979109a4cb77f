//! Syscall numbers of the running architecture: names, and which syscalls
//! take a file descriptor as their first argument (their path is resolved).

use syscalls::Sysno;

/// Syscalls whose first argument is an fd worth naming by its path.
const FD_SYSCALLS: &[&str] = &[
    "read",
    "write",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "lseek",
    "ioctl",
    "fsync",
    "fdatasync",
    "fstat",
    "ftruncate",
    "fallocate",
    "getdents64",
    "flock",
    "fcntl",
    "readahead",
    "sync_file_range",
    "syncfs",
    "copy_file_range",
    "close",
];

/// The syscall's name, or `syscall_N` for a number this build does not know.
pub fn name(nr: i64) -> String {
    usize::try_from(nr)
        .ok()
        .and_then(Sysno::new)
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| format!("syscall_{nr}"))
}

/// A 512-bit set (as BPF reads it): bit `nr` is set if syscall `nr` takes an fd first.
pub fn fd_syscall_bitmap() -> [u64; 8] {
    let mut bits = [0u64; 8];
    for sysno in Sysno::iter().filter(|s| FD_SYSCALLS.contains(&s.name())) {
        let nr = sysno.id() as usize;
        if nr < 512 {
            bits[nr / 64] |= 1 << (nr % 64);
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_fd_bits_follow_the_architecture() {
        let read = Sysno::read.id() as i64;
        assert_eq!(name(read), "read");
        assert_eq!(name(-1), "syscall_-1");
        let bits = fd_syscall_bitmap();
        let has = |nr: i64| bits[nr as usize / 64] & (1 << (nr % 64)) != 0;
        assert!(has(read));
        assert!(has(Sysno::pread64.id() as i64));
        assert!(!has(Sysno::openat.id() as i64));
        assert!(!has(Sysno::nanosleep.id() as i64));
    }
}
