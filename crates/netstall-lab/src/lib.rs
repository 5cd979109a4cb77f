//! The incident lab: the story's mini-Kubernetes data path in network
//! namespaces, the responders that answer probes in it, and bounded,
//! reversible fault injectors that reproduce the incident for real.
//!
//! ```text
//! client ──► node1 (nft DNAT NodePort 30080/tcp 30081/udp + masquerade)
//!              └─ VXLAN overlay (UDP 8472) over the underlay ─► node2 ─► pod
//!                                                  outside ──┘ (same underlay)
//! ```
//!
//! * [`topology`]: `lab up | down | status`.
//! * [`responder`]: TCP (line or HTTP 200) and UDP echo servers.
//! * [`zombies`], [`poller`], [`clean`]: dying memory cgroups, a cadvisor-like
//!   reader of `memory.stat`, and their removal.
//! * [`incident`]: all of them together, as `netstall demo` stages the story.
//! * [`inject`]: `lab drops`, a share of the packets to the pod dropped at random.
//! * [`throttle`]: `lab throttle`, the pod's HTTP server in a CPU cgroup with a small quota.
//! * [`backlog`]: `lab backlog`, CPU input backlogs overflowed by a tiny
//!   `netdev_max_backlog` and bursts toward the pod.
//! * `lab spin` lives in `netstall-kernel` (it is a BPF program).

pub mod backlog;
pub mod clean;
pub mod incident;
pub mod inject;
pub mod netns;
pub mod poller;
pub mod responder;
pub mod throttle;
pub mod topology;
pub mod zombies;

mod command;
