//! netstall's eBPF programs: CO-RE C in `src/bpf/*.bpf.c`, one small program
//! per tool, built into libbpf-rs skeletons by `build.rs`.
//!
//! Only tracepoints, `tp_btf` and `raw_tp` are relied on: they are the stable
//! ABI, and on locked-down kernels (no kprobes, fentry refused) they are all
//! that loads.

pub mod cgwatch;
pub mod drops;
pub mod nosched;
pub mod spin;
pub mod stack;
pub mod throttle;
pub mod trace;

mod skel {
    #![allow(clippy::all, clippy::pedantic, dead_code, non_camel_case_types)]
    pub mod cgwatch {
        include!(concat!(env!("OUT_DIR"), "/cgwatch.skel.rs"));
    }
    pub mod drops {
        include!(concat!(env!("OUT_DIR"), "/drops.skel.rs"));
    }
    pub mod nosched {
        include!(concat!(env!("OUT_DIR"), "/nosched.skel.rs"));
    }
    pub mod spin {
        include!(concat!(env!("OUT_DIR"), "/spin.skel.rs"));
    }
    pub mod throttle {
        include!(concat!(env!("OUT_DIR"), "/throttle.skel.rs"));
    }
    pub mod trace {
        include!(concat!(env!("OUT_DIR"), "/trace.skel.rs"));
    }
}

use anyhow::Result;
use netstall_core::privilege::{self, Capability};

/// Checks what loading tracing programs needs, naming what is missing.
pub fn require_bpf(what: &str) -> Result<()> {
    privilege::require(&[Capability::Bpf, Capability::Perfmon], what)?;
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        anyhow::bail!(
            "{what} needs kernel BTF (/sys/kernel/btf/vmlinux is missing: CONFIG_DEBUG_INFO_BTF)"
        );
    }
    Ok(())
}
