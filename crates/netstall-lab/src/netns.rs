//! Named network namespaces (`/run/netns/NAME`, as iproute2 makes them).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// Where iproute2 keeps the bind mount of a named namespace.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Whether the named namespace exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Names of all named namespaces.
pub fn list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Moves the calling thread into the named network namespace.
///
/// Sockets created afterwards by this thread live there. Call it before
/// spawning threads, or from the thread that will use the sockets.
pub fn enter(name: &str) -> Result<()> {
    let file = File::open(path(name))
        .with_context(|| format!("network namespace '{name}' does not exist"))?;
    // SAFETY: the fd is valid while `file` lives; CLONE_NEWNET only changes this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!("cannot enter network namespace '{name}' (needs CAP_SYS_ADMIN)")
        });
    }
    Ok(())
}
