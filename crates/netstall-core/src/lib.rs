//! The small core every netstall crate shares.
//!
//! Data flows one way through netstall: sources (sockets, eBPF, perf sampling,
//! cgroup files) produce events, analysis turns them into findings, sinks print
//! them. This crate holds what all of them agree on: the time base
//! ([`clock`]), the units on the command line ([`duration`], [`cpu`]), what a
//! command needs from the host ([`privilege`]) and how results are printed
//! ([`output`]), how long-running work is told to stop ([`shutdown`]), and
//! how vCPU steal lines up with what probes saw ([`steal`]), and the
//! system calls the sources share ([`sys`]: sockets, kernel timestamps,
//! namespaces, CPU pinning).

pub mod clock;
pub mod cpu;
pub mod duration;
pub mod output;
pub mod privilege;
pub mod shutdown;
pub mod steal;
pub mod sys;
