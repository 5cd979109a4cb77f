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
//!   off), ksoftirqd runs and the window of samples before each;
//!   [`session`]: `netstall xray`'s run of them, printed.

pub mod collapse;
pub mod flame;
pub mod fold;
pub mod perf_script;
pub mod sampler;
pub mod session;
pub mod timeline;
pub mod triggered;
pub mod window;

use std::io::Read;
use std::path::Path;

use anyhow::Context;

/// The input of `collapse` and `flame`: a file, or standard input for `-`.
pub fn open_input(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Box::new(file))
}
