//! The canary: ONE timed read of the memory hierarchy's root `memory.stat`,
//! only when the user asks for it.
//!
//! On an affected node this read is itself the incident: it flushes every
//! dirty (dying) memcg with IRQs off, stalling the CPU it runs on. So it is
//! taken once, never in a loop, on a CPU the user may choose.

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::host::Host;
pub use netstall_events::cgroups::Canary;

/// The warning printed before the read.
pub fn warning(path: &Path, cpu: Option<u32>) -> String {
    let on = match cpu {
        Some(cpu) => format!("CPU {cpu}"),
        None => "the CPU it runs on (pick one with --cpu)".to_owned(),
    };
    format!(
        "canary: reading {} once; on an affected node this very read stalls {on} \
         (IRQs off while it flushes the dying memcgs' stats)",
        path.display()
    )
}

/// Times one read of `path` on `host`, pinned to `cpu` if given. The calling
/// thread's CPU affinity is restored afterwards.
pub fn read_once(host: &Host, path: &Path, cpu: Option<u32>) -> Result<Canary> {
    let file = host.path(path);
    let pinned = match cpu {
        Some(cpu) => {
            netstall_core::cpu::check_online(&[cpu])?;
            Some(netstall_core::sys::PinnedToCpu::pin(cpu)?)
        }
        None => None,
    };
    let mut buf = Vec::with_capacity(16 * 1024);
    let started = Instant::now();
    let result = std::fs::File::open(&file).and_then(|mut f| f.read_to_end(&mut buf));
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    drop(pinned);
    result.with_context(|| format!("canary: cannot read {}", path.display()))?;
    Ok(Canary {
        path: path.to_path_buf(),
        read_ms,
        cpu,
        bytes: buf.len(),
        warning: warning(path, cpu),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed_cpus() -> usize {
        netstall_core::sys::allowed_cpus().unwrap()
    }

    #[test]
    fn the_warning_names_the_cpu() {
        let w = warning(Path::new("/sys/fs/cgroup/memory/memory.stat"), Some(1));
        assert!(w.contains("stalls CPU 1"), "{w}");
        assert!(warning(Path::new("/x"), None).contains("--cpu"));
    }

    #[test]
    fn a_pinned_read_runs_on_that_cpu_and_restores_affinity() {
        let dir = std::env::temp_dir().join(format!("netstall-canary-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cg")).unwrap();
        std::fs::write(dir.join("cg/memory.stat"), "cache 4096\nrss 0\n").unwrap();
        let host = Host::at(&dir);
        let cpu = netstall_core::cpu::online().unwrap()[0];
        let allowed_before = allowed_cpus();
        let canary = read_once(&host, Path::new("/cg/memory.stat"), Some(cpu)).unwrap();
        assert_eq!(canary.bytes, 17);
        assert_eq!(canary.cpu, Some(cpu));
        assert!(canary.warning.contains(&format!("stalls CPU {cpu}")));
        assert!(canary.read_ms >= 0.0);
        assert_eq!(allowed_cpus(), allowed_before, "affinity restored");
        let missing = read_once(&host, Path::new("/nope/memory.stat"), None).unwrap_err();
        assert!(format!("{missing:#}").contains("cannot read /nope/memory.stat"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
