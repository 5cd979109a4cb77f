//! `netstall top`'s status line, when stdout is not a terminal.

use serde::{Deserialize, Serialize};

/// One line a few seconds apart when stdout is not a terminal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopStatus {
    pub cpus: Vec<CpuStatus>,
    pub dying_memcgs: Option<u64>,
    pub bpf_ms_per_s: Option<f64>,
    pub ring_drops: u64,
    pub own_cpu_pct: Option<f64>,
}

/// One CPU in [`TopStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuStatus {
    pub cpu: u32,
    pub net_rx_pct: Option<f64>,
    pub stalls_60s: usize,
}
