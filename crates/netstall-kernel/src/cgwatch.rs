//! Cgroup churn from the kernel: every cgroup mkdir, rmdir and release on
//! every hierarchy, with its path (see `src/bpf/cgwatch.bpf.c`).
//!
//! Only the event source lives here; ranking parents and computing rates is
//! the cgroups crate's (pure) business.

use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{OpenObject, RingBufferBuilder};
use netstall_core::clock::ClockOffset;

use crate::skel::cgwatch::types::{cg_event, cg_op};
use crate::skel::cgwatch::CgwatchSkelBuilder;

/// What happened to a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupOp {
    /// Created.
    Mkdir,
    /// Removed by its owner: dying until the kernel drops the last reference.
    Rmdir,
    /// Freed for good (no longer counted in /proc/cgroups).
    Release,
}

/// One cgroup event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CgroupEvent {
    pub op: CgroupOp,
    /// The hierarchy (`/proc/cgroups` column 2); 0 is cgroup v2.
    pub hierarchy_id: u32,
    /// Depth below the hierarchy root (1 for `/a`).
    pub level: u32,
    /// Path relative to the hierarchy root, e.g. `/kubepods/pod1/c1`.
    pub path: String,
    /// The kernel cut the path at the program's buffer size.
    pub truncated: bool,
    /// The task that did it (for releases, the kernel worker that freed it).
    pub pid: u32,
    pub comm: String,
    /// CLOCK_REALTIME.
    pub ts_ns: u64,
}

/// How a watch went.
#[derive(Debug, Clone, Copy)]
pub struct WatchStats {
    /// CLOCK_REALTIME when the programs were attached.
    pub start_ns: u64,
    /// From attach to detach: the window the events were seen in.
    pub elapsed: Duration,
    /// Events lost because the ring buffer was full.
    pub dropped: u64,
}

/// Watches cgroup events on every hierarchy for `duration`, calling
/// `on_event` for each. Needs CAP_BPF + CAP_PERFMON and kernel BTF.
pub fn watch(duration: Duration, mut on_event: impl FnMut(CgroupEvent)) -> Result<WatchStats> {
    crate::require_bpf("watching cgroup events")?;
    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let open = CgwatchSkelBuilder::default()
        .open(&mut storage)
        .context("open the cgwatch BPF object")?;
    let mut skel = open.load().context(
        "load the cgwatch BPF programs (need tp_btf/cgroup_mkdir, cgroup_rmdir, cgroup_release)",
    )?;
    skel.attach()
        .context("attach tp_btf/cgroup_mkdir, cgroup_rmdir, cgroup_release")?;

    let offset = ClockOffset::sample();
    let mut builder = RingBufferBuilder::new();
    builder.add(&skel.maps.cg_events, |data: &[u8]| {
        if let Some(event) = decode(data, &offset) {
            on_event(event);
        }
        0
    })?;
    let ring = builder.build()?;
    let start_ns = netstall_core::clock::realtime_ns();
    let started = Instant::now();
    let deadline = started + duration;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        ring.poll(left.min(Duration::from_millis(50)))?;
    }
    let elapsed = started.elapsed();
    ring.consume()?;
    drop(ring);
    let dropped = skel
        .maps
        .bss_data
        .as_deref()
        .map(|bss| bss.dropped)
        .unwrap_or(0);
    Ok(WatchStats {
        start_ns,
        elapsed,
        dropped,
    })
}

fn decode(data: &[u8], offset: &ClockOffset) -> Option<CgroupEvent> {
    if data.len() < std::mem::size_of::<cg_event>() {
        return None;
    }
    // SAFETY: the record is a `struct cg_event` written by the BPF program;
    // read_unaligned copes with any alignment.
    let raw: cg_event = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
    let op = match raw.op {
        cg_op::CG_MKDIR => CgroupOp::Mkdir,
        cg_op::CG_RMDIR => CgroupOp::Rmdir,
        cg_op::CG_RELEASE => CgroupOp::Release,
        _ => return None,
    };
    let len = (raw.path_len as usize).min(raw.path.len());
    let bytes: Vec<u8> = raw.path[..len].iter().map(|&c| c as u8).collect();
    let comm: Vec<u8> = raw
        .comm
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Some(CgroupEvent {
        op,
        hierarchy_id: raw.hierarchy_id.max(0) as u32,
        level: raw.level.max(0) as u32,
        path: String::from_utf8_lossy(&bytes).into_owned(),
        truncated: len + 1 >= raw.path.len(),
        pid: raw.pid,
        comm: String::from_utf8_lossy(&comm).into_owned(),
        ts_ns: offset.to_realtime(raw.ts_ns),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(raw: &cg_event) -> Vec<u8> {
        // SAFETY: cg_event is plain old data; reading its bytes is sound.
        unsafe {
            std::slice::from_raw_parts(
                (raw as *const cg_event).cast::<u8>(),
                std::mem::size_of::<cg_event>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn ops_decode_through_the_generated_enum() {
        let mut raw = cg_event {
            op: cg_op::CG_RMDIR,
            hierarchy_id: 4,
            level: 2,
            pid: 42,
            ..Default::default()
        };
        let path = b"/kubepods/pod1";
        for (o, b) in raw.path.iter_mut().zip(path) {
            *o = *b as i8;
        }
        raw.path_len = path.len() as u32;
        let offset = ClockOffset::sample();
        let event = decode(&bytes(&raw), &offset).unwrap();
        assert_eq!(event.op, CgroupOp::Rmdir);
        assert_eq!(event.path, "/kubepods/pod1");
        assert_eq!((event.hierarchy_id, event.level, event.pid), (4, 2, 42));

        raw.op = cg_op(99);
        assert!(decode(&bytes(&raw), &offset).is_none());
        assert!(decode(&[0u8; 4], &offset).is_none());
    }
}
