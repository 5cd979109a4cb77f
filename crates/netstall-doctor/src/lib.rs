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
pub mod server;
pub mod story;

pub use diagnose::{diagnose, Cause, CauseId, Verdict};
pub use findings::Findings;
