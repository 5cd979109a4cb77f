//! netstall xray: what a CPU ran, in time order.
//!
//! * [`collapse`]: `perf script` text to folded stacks, aggregated exactly as
//!   FlameGraph's `stackcollapse-perf.pl` does (streamed and parallel), or
//!   ordered, one line per sample, so the samples before an event can be cut
//!   out with [`window`].
//! * [`fold`] and [`perf_script`]: the pure line-level parser and folding
//!   state machine underneath.
//! * [`flame`]: folded stacks to an SVG flame graph or flame chart (inferno).
//! * [`sampler`]: live cpu-clock sampling of chosen CPUs, symbolized, in time
//!   order; [`timeline`]: sample gaps (IRQs off), long softirq runs (BHs
//!   off), ksoftirqd runs and the window of samples before each.

pub mod collapse;
pub mod flame;
pub mod fold;
pub mod perf_script;
pub mod sampler;
pub mod timeline;
pub mod window;
