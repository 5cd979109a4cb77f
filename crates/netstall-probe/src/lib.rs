//! `netstall probe`: precise multi-protocol probing with backlog-episode detection.
//!
//! * [`episodes`]: pure analysis of a probe series (backlog release, spike,
//!   loss burst), reused by the doctor and bisect.
//! * [`summary`]: loss and RTT quantiles (HDR histogram), overall and per flow.
//! * [`model`]: what a probe produced.
//! * [`packet`]: ICMP / TCP packet building and parsing.

pub mod episodes;
pub mod model;
pub mod packet;
pub mod summary;
