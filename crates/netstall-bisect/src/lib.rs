//! `netstall bisect`: the story's layer-by-layer experiment, automated.
//!
//! The NodePort (NAT + overlay), the pod IP (overlay), the pod's node IP and
//! the NodePort's node IP are probed at once, TCP SYN over several flows and
//! ICMP, from the client and optionally from a second vantage point outside
//! the cluster. Each path's episodes and tails are compared with statistics
//! that hold up, and the layer that adds stalls is named: NAT, the overlay,
//! host RX on a node (receiver or sender side), or the network; per flow (RX
//! queue/CPU hashing) or per host.
//!
//! * [`plan`]: the matrix of paths and the layers each crosses (pure).
//! * [`run`]: probe every path concurrently (real sockets).
//! * [`analysis`]: the table and the verdict from per-path results (pure).
//! * [`stats`]: Poisson rate intervals and tests, quantile intervals (pure).

pub mod analysis;
pub mod plan;
pub mod run;
pub mod setup;
pub mod stats;

pub use analysis::{
    analyze, Analysis, Layer, PathOutcome, PathRow, Scope, Settings, Side, Status, Verdict,
};
pub use plan::{matrix, OutsideView, PathSpec, Segment, Targets, Topology, Vantage};
pub use run::{run, RunConfig};
