//! `netstall doctor`: one verdict, with evidence, from everything netstall
//! measures on a node.
//!
//! * [`findings`]: what the sources measured, on one REALTIME time base.
//! * [`diagnose`]: the catalogue of causes and the rules that rank them (pure).
//! * [`report`]: the self-contained HTML report.

pub mod demo;
pub mod diagnose;
pub mod findings;
pub mod recorded;
pub mod replay;
pub mod report;
pub mod run;
pub mod story;

pub use diagnose::{diagnose, Cause, CauseId, Verdict};
pub use findings::Findings;

/// The exit code of a verdict (`doctor`, `report`): 0 healthy or degraded,
/// 1 unhealthy, 2 unknown.
pub fn exit_code(status: diagnose::Status) -> u8 {
    use diagnose::Status;
    match status {
        Status::Healthy | Status::Degraded => 0,
        Status::Unhealthy => 1,
        Status::Unknown => 2,
    }
}
