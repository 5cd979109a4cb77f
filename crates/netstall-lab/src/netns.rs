//! Named network namespaces (`/run/netns/NAME`, as iproute2 makes them).

use std::path::PathBuf;

/// Where iproute2 keeps the bind mount of a named namespace.
pub fn path(name: &str) -> PathBuf {
    netstall_core::sys::netns_path(name)
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
pub use netstall_core::sys::enter_netns as enter;
