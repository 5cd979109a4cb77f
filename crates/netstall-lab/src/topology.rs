//! `lab up | down | status`: the story's data path in network namespaces.
//!
//! Every link is created directly inside its namespaces, so a lab leaves
//! nothing in the root namespace and deleting its namespaces removes every
//! link, address, route and nftables rule it made. Names carry the lab's
//! prefix, so labs (and parallel tests) coexist.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netstall_events::Record;

use crate::command::{run, run_with_input};
use crate::netns;
pub use netstall_events::lab::{Endpoint, Host, LabStatus, Responder, Role};

/// NodePort ports on node1, as kube-proxy would program them.
pub const NODEPORT_TCP: u16 = 30080;
pub const NODEPORT_UDP: u16 = 30081;
/// Ports of the responders in every lab host but the client.
pub const RESPONDER_TCP: u16 = 8080;
pub const RESPONDER_UDP: u16 = 9000;

const CLIENT_ADDR: &str = "192.168.50.2";
const NODE1_EXT_ADDR: &str = "192.168.50.1";
const NODE1_UNDERLAY_ADDR: &str = "172.31.0.1";
const NODE2_UNDERLAY_ADDR: &str = "172.31.0.2";
const OUTSIDE_ADDR: &str = "172.31.0.3";
const NODE1_OVERLAY_ADDR: &str = "10.245.0.1";
const NODE2_OVERLAY_ADDR: &str = "10.245.0.2";
const NODE2_POD_GW: &str = "10.244.2.1";
const POD_ADDR: &str = "10.244.2.10";
const POD_CIDR: &str = "10.244.2.0/24";
const VXLAN_PORT: &str = "8472";

/// Where each lab host sits in the topology (its names, interfaces and
/// addresses): the lab's knowledge, kept out of the record type.
trait Placement: Copy {
    fn suffix(self) -> &'static str;
    fn rx_interfaces(self) -> &'static [&'static str];
    fn is_node_side(self) -> bool;
    fn addrs(self) -> &'static [&'static str];
}

impl Placement for Role {
    /// The short name of a lab host, in its namespace's name.
    fn suffix(self) -> &'static str {
        match self {
            Role::Client => "cli",
            Role::Node1 => "n1",
            Role::Node2 => "n2",
            Role::Pod => "pod",
            Role::Outside => "out",
        }
    }

    /// Interfaces on which this host receives, and whether they belong to a
    /// node (steered to the RX CPUs) or to a machine outside the nodes.
    fn rx_interfaces(self) -> &'static [&'static str] {
        match self {
            Role::Client => &["c0"],
            Role::Node1 => &["n1ext", "n1u", "vx0"],
            Role::Node2 => &["n2u", "n2o", "vx0", "vethpod"],
            Role::Pod => &["eth0"],
            Role::Outside => &["o0"],
        }
    }

    fn is_node_side(self) -> bool {
        matches!(self, Role::Node1 | Role::Node2 | Role::Pod)
    }

    fn addrs(self) -> &'static [&'static str] {
        match self {
            Role::Client => &[CLIENT_ADDR],
            Role::Node1 => &[NODE1_EXT_ADDR, NODE1_UNDERLAY_ADDR, NODE1_OVERLAY_ADDR],
            Role::Node2 => &[NODE2_UNDERLAY_ADDR, NODE2_OVERLAY_ADDR, NODE2_POD_GW],
            Role::Pod => &[POD_ADDR],
            Role::Outside => &[OUTSIDE_ADDR],
        }
    }
}

/// The namespace name of `role` in the lab `prefix`.
pub fn netns_name(prefix: &str, role: Role) -> String {
    format!("{prefix}-{}", role.suffix())
}

/// Checks a lab prefix: 1–12 characters, lowercase letters, digits, starting with a letter.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    let ok = (1..=12).contains(&prefix.len())
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        bail!("invalid lab prefix '{prefix}': use 1-12 lowercase letters and digits, starting with a letter");
    }
    Ok(())
}

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    pub prefix: String,
    /// CPUs that the nodes' receive processing is steered to (RPS).
    pub rx_cpus: Vec<u32>,
    /// The `netstall` executable, started as `responder` in the lab hosts.
    pub responder_exe: PathBuf,
}

fn state_dir() -> PathBuf {
    PathBuf::from("/run/netstall/lab")
}

fn state_file(prefix: &str) -> PathBuf {
    state_dir().join(format!("{prefix}.json"))
}

/// Reads the status of the lab `prefix`, or explains that there is none.
pub fn status(prefix: &str) -> Result<LabStatus> {
    validate_prefix(prefix)?;
    let path = state_file(prefix);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        anyhow::anyhow!("no lab '{prefix}' is up (run `netstall lab up --prefix {prefix}`)")
    })?;
    let status = read_state(&text)
        .map_err(|e| anyhow::anyhow!("corrupt lab state {}: {e}", path.display()))?;
    if let Some(missing) = Role::ALL
        .iter()
        .map(|r| netns_name(prefix, *r))
        .find(|n| !netns::exists(n))
    {
        bail!("lab '{prefix}' is broken: namespace {missing} is gone (run `netstall lab down --prefix {prefix}`)");
    }
    Ok(status)
}

/// Whether anything of the lab `prefix` exists (state or any namespace).
pub fn exists(prefix: &str) -> bool {
    state_file(prefix).exists()
        || Role::ALL
            .iter()
            .any(|r| netns::exists(&netns_name(prefix, *r)))
}

/// `lab up`: builds lab `prefix` with the nodes' RX on `rx_cpu` (a CPU
/// list), this executable as the responders, saying so on stderr.
pub fn up_printed(
    prefix: &str,
    rx_cpu: &str,
    out: netstall_core::output::Output,
) -> Result<LabStatus> {
    let config = LabConfig {
        prefix: prefix.to_owned(),
        rx_cpus: netstall_core::cpu::parse_list(rx_cpu)?,
        responder_exe: std::env::current_exe()?,
    };
    out.progress(format!("building lab '{}'...", config.prefix));
    up(&config)
}

/// Builds the lab. On any failure, everything built so far is removed: a
/// half-built lab is never left behind.
pub fn up(config: &LabConfig) -> Result<LabStatus> {
    validate_prefix(&config.prefix)?;
    netstall_core::privilege::require_root("lab up")?;
    if config.rx_cpus.is_empty() {
        bail!("--rx-cpu needs at least one CPU");
    }
    netstall_core::cpu::check_online(&config.rx_cpus)?;
    if exists(&config.prefix) {
        bail!(
            "lab '{p}' already exists (use `netstall lab status --prefix {p}`, or `netstall lab down --prefix {p}` first)",
            p = config.prefix
        );
    }
    match build(config) {
        Ok(status) => Ok(status),
        Err(e) => {
            let _ = teardown(&config.prefix);
            Err(e.context(format!(
                "lab '{}' could not be built and was removed",
                config.prefix
            )))
        }
    }
}

fn build(config: &LabConfig) -> Result<LabStatus> {
    let p = &config.prefix;
    let ns = |role| netns_name(p, role);
    let (cli, n1, n2, pod, out) = (
        ns(Role::Client),
        ns(Role::Node1),
        ns(Role::Node2),
        ns(Role::Pod),
        ns(Role::Outside),
    );
    // The lab is IPv4. Left on, IPv6 autoconfiguration sends router
    // solicitations and MLD reports the nodes drop for want of a route
    // (IP_INNOROUTES): real drops, but noise in a lab meant to be healthy.
    let ipv6 = std::path::Path::new("/proc/sys/net/ipv6").exists();
    for name in [&cli, &n1, &n2, &pod, &out] {
        run("ip", &["netns", "add", name])?;
        if ipv6 {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    name,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            )?;
        }
        run("ip", &["-n", name, "link", "set", "lo", "up"])?;
    }

    // client <-> node1: the "external" network of the NodePort.
    veth(
        &cli,
        "c0",
        &format!("{CLIENT_ADDR}/24"),
        &n1,
        "n1ext",
        &format!("{NODE1_EXT_ADDR}/24"),
    )?;
    run(
        "ip",
        &["-n", &cli, "route", "add", "default", "via", NODE1_EXT_ADDR],
    )?;

    // Underlay: node1 <-> a bridge in node2 that the outside host also plugs into.
    run("ip", &["-n", &n2, "link", "add", "ul0", "type", "bridge"])?;
    run(
        "ip",
        &[
            "-n",
            &n2,
            "addr",
            "add",
            &format!("{NODE2_UNDERLAY_ADDR}/24"),
            "dev",
            "ul0",
        ],
    )?;
    run("ip", &["-n", &n2, "link", "set", "ul0", "up"])?;
    veth(
        &n1,
        "n1u",
        &format!("{NODE1_UNDERLAY_ADDR}/24"),
        &n2,
        "n2u",
        "",
    )?;
    veth(&out, "o0", &format!("{OUTSIDE_ADDR}/24"), &n2, "n2o", "")?;
    for port in ["n2u", "n2o"] {
        run("ip", &["-n", &n2, "link", "set", port, "master", "ul0"])?;
    }

    // VXLAN overlay, flannel style: VNI 1 on UDP 8472.
    vxlan(
        &n1,
        NODE1_UNDERLAY_ADDR,
        NODE2_UNDERLAY_ADDR,
        "n1u",
        NODE1_OVERLAY_ADDR,
    )?;
    vxlan(
        &n2,
        NODE2_UNDERLAY_ADDR,
        NODE1_UNDERLAY_ADDR,
        "ul0",
        NODE2_OVERLAY_ADDR,
    )?;

    // The pod on node2.
    veth(
        &pod,
        "eth0",
        &format!("{POD_ADDR}/24"),
        &n2,
        "vethpod",
        &format!("{NODE2_POD_GW}/24"),
    )?;
    run(
        "ip",
        &["-n", &pod, "route", "add", "default", "via", NODE2_POD_GW],
    )?;

    // Routing: pods through the overlay from node1, straight over the underlay from outside.
    run(
        "ip",
        &[
            "-n",
            &n1,
            "route",
            "add",
            POD_CIDR,
            "via",
            NODE2_OVERLAY_ADDR,
            "dev",
            "vx0",
        ],
    )?;
    run(
        "ip",
        &[
            "-n",
            &n2,
            "route",
            "add",
            "192.168.50.0/24",
            "via",
            NODE1_UNDERLAY_ADDR,
        ],
    )?;
    run(
        "ip",
        &[
            "-n",
            &out,
            "route",
            "add",
            POD_CIDR,
            "via",
            NODE2_UNDERLAY_ADDR,
        ],
    )?;
    for node in [&n1, &n2] {
        run(
            "ip",
            &[
                "netns",
                "exec",
                node,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;
    }

    // kube-proxy: NodePort DNAT to the pod, masquerade into the overlay.
    let rules = format!(
        "table ip kube {{
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;
    tcp dport {NODEPORT_TCP} dnat to {POD_ADDR}:{RESPONDER_TCP}
    udp dport {NODEPORT_UDP} dnat to {POD_ADDR}:{RESPONDER_UDP}
  }}
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    oifname \"vx0\" masquerade
  }}
}}
"
    );
    run_with_input(
        "ip",
        &["netns", "exec", &n1, "nft", "-f", "-"],
        Some(&rules),
    )
    .context("programming the NodePort with nftables")?;

    let host_rx_cpus = steer_rx(p, &config.rx_cpus)?;

    let mut responders = Vec::new();
    for role in [Role::Node1, Role::Node2, Role::Pod, Role::Outside] {
        let pid = start_responder(&config.responder_exe, &ns(role), p, role)?;
        responders.push(Responder { role, pid });
    }

    let status = LabStatus {
        prefix: p.clone(),
        rx_cpu: config.rx_cpus[0],
        rx_cpus: config.rx_cpus.clone(),
        hosts: Role::ALL
            .iter()
            .zip(host_rx_cpus)
            .map(|(&role, rx_cpus)| Host {
                role,
                netns: ns(role),
                addrs: role.addrs().iter().map(|a| a.to_string()).collect(),
                rx_cpus,
            })
            .collect(),
        nodeport: Endpoint {
            addr: NODE1_EXT_ADDR.into(),
            tcp: NODEPORT_TCP,
            udp: NODEPORT_UDP,
        },
        pod: Endpoint {
            addr: POD_ADDR.into(),
            tcp: RESPONDER_TCP,
            udp: RESPONDER_UDP,
        },
        responders,
    };
    save(&status)?;
    Ok(status)
}

/// Records the lab's state (for `status`, `down` and re-steering).
pub fn save(status: &LabStatus) -> Result<()> {
    std::fs::create_dir_all(state_dir())?;
    let line = Record::Lab(status.clone()).to_json_line() + "\n";
    std::fs::write(state_file(&status.prefix), line)?;
    Ok(())
}

/// The lab's state on disk: one `lab` record.
fn read_state(text: &str) -> Result<LabStatus, String> {
    match netstall_events::parse_line(text) {
        Ok(Record::Lab(status)) => Ok(status),
        Ok(other) => Err(format!("a `{}` record, not `lab`", other.type_name())),
        Err(e) => Err(e),
    }
}

fn veth(ns_a: &str, a: &str, addr_a: &str, ns_b: &str, b: &str, addr_b: &str) -> Result<()> {
    run(
        "ip",
        &[
            "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b,
        ],
    )?;
    for (ns, dev, addr) in [(ns_a, a, addr_a), (ns_b, b, addr_b)] {
        if !addr.is_empty() {
            run("ip", &["-n", ns, "addr", "add", addr, "dev", dev])?;
        }
        run("ip", &["-n", ns, "link", "set", dev, "up"])?;
    }
    Ok(())
}

fn vxlan(ns: &str, local: &str, remote: &str, dev: &str, overlay_addr: &str) -> Result<()> {
    run(
        "ip",
        &[
            "-n", ns, "link", "add", "vx0", "type", "vxlan", "id", "1", "local", local, "remote",
            remote, "dstport", VXLAN_PORT, "dev", dev,
        ],
    )?;
    run(
        "ip",
        &[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{overlay_addr}/24"),
            "dev",
            "vx0",
        ],
    )?;
    run("ip", &["-n", ns, "link", "set", "vx0", "up"])
}

/// Steers the nodes' (and the pod's) receive processing to `rx_cpus` with
/// RPS, and the client's and outside host's to the other CPUs, so the
/// machines that probe are not stalled with the nodes they probe.
/// Returns the CPUs each host now receives on, in [`Role::ALL`] order.
pub fn steer_rx(prefix: &str, rx_cpus: &[u32]) -> Result<Vec<Vec<u32>>> {
    let online = netstall_core::cpu::online()?;
    let others: Vec<u32> = online
        .iter()
        .copied()
        .filter(|c| !rx_cpus.contains(c))
        .collect();
    Role::ALL
        .iter()
        .map(|&role| {
            let cpus = if role.is_node_side() {
                rx_cpus.to_vec()
            } else {
                others.clone()
            };
            steer_host(prefix, role, &cpus)?;
            Ok(cpus)
        })
        .collect()
}

/// Re-steers a running lab (`lab rps`): one host's receive processing to
/// `cpus`, or, without `host`, every host's as [`steer_rx`] does; records
/// the new steering in the lab's state and returns it.
pub fn resteer(prefix: &str, cpus: &[u32], host: Option<Role>) -> Result<LabStatus> {
    let mut status = status(prefix)?;
    let steered = match host {
        Some(role) => {
            steer_host(prefix, role, cpus)?;
            Steered::One(role)
        }
        None => Steered::All(steer_rx(prefix, cpus)?),
    };
    record_steering(&mut status, cpus, steered);
    save(&status)?;
    Ok(status)
}

/// What a re-steer changed.
enum Steered {
    /// One host, to the CPUs asked for.
    One(Role),
    /// Every host, to these CPUs each, in [`Role::ALL`] order.
    All(Vec<Vec<u32>>),
}

fn record_steering(status: &mut LabStatus, cpus: &[u32], steered: Steered) {
    match steered {
        Steered::One(role) => {
            if let Some(h) = status.hosts.iter_mut().find(|h| h.role == role) {
                h.rx_cpus = cpus.to_vec();
            }
        }
        Steered::All(per_host) => {
            for (h, host_cpus) in status.hosts.iter_mut().zip(per_host) {
                h.rx_cpus = host_cpus;
            }
            if let Some(&first) = cpus.first() {
                status.rx_cpu = first;
            }
            status.rx_cpus = cpus.to_vec();
        }
    }
}

/// Steers one host's receive processing to `cpus` (empty: no RPS, each
/// packet is processed on the CPU that received it).
pub fn steer_host(prefix: &str, role: Role, cpus: &[u32]) -> Result<()> {
    let mask = if cpus.is_empty() {
        "0".to_owned()
    } else {
        netstall_core::cpu::mask_hex(cpus)
    };
    let script = role
        .rx_interfaces()
        .iter()
        .map(|dev| format!("echo {mask} > /sys/class/net/{dev}/queues/rx-0/rps_cpus"))
        .collect::<Vec<_>>()
        .join(" && ");
    run(
        "ip",
        &[
            "netns",
            "exec",
            &netns_name(prefix, role),
            "sh",
            "-c",
            &script,
        ],
    )
    .with_context(|| format!("steering RX of {} with RPS", role.suffix()))
}

fn start_responder(exe: &Path, netns: &str, prefix: &str, role: Role) -> Result<u32> {
    let log_dir = state_dir().join(prefix);
    std::fs::create_dir_all(&log_dir)?;
    let log = std::fs::File::create(log_dir.join(format!("responder-{}.log", role.suffix())))?;
    let mut child = Command::new(exe)
        .args(["responder", "--netns", netns, "--tcp"])
        .arg(RESPONDER_TCP.to_string())
        .arg("--udp")
        .arg(RESPONDER_UDP.to_string())
        .arg("--ready-line")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        // Its own process group: outlives `lab up`, untouched by the terminal's ^C.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start the responder {}", exe.display()))?;
    wait_ready(&mut child, netns)?;
    Ok(child.id())
}

fn wait_ready(child: &mut Child, netns: &str) -> Result<()> {
    use std::io::BufRead;
    let stdout = child.stdout.take().context("responder stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the responder in {netns} did not start (see /run/netstall/lab/*/responder-*.log)");
    }
    Ok(())
}

/// Removes the lab: stops its responders by PID, deletes its namespaces
/// (and with them every link, address, route and rule), and its state.
pub fn down(prefix: &str) -> Result<()> {
    validate_prefix(prefix)?;
    netstall_core::privilege::require_root("lab down")?;
    if !exists(prefix) {
        bail!("no lab '{prefix}' to remove");
    }
    teardown(prefix)
}

fn teardown(prefix: &str) -> Result<()> {
    if let Ok(text) = std::fs::read_to_string(state_file(prefix)) {
        if let Ok(status) = read_state(&text) {
            stop_responders(&status.responders.iter().map(|r| r.pid).collect::<Vec<_>>());
        }
    }
    let mut failures = Vec::new();
    for role in Role::ALL {
        let name = netns_name(prefix, role);
        if netns::exists(&name) {
            if let Err(e) = run("ip", &["netns", "del", &name]) {
                failures.push(e.to_string());
            }
        }
    }
    let _ = std::fs::remove_file(state_file(prefix));
    let _ = std::fs::remove_dir_all(state_dir().join(prefix));
    if let Some(first) = failures.first() {
        bail!("lab '{prefix}' was not fully removed: {first}");
    }
    Ok(())
}

/// Stops the responders we started, after checking each PID still runs one:
/// SIGTERM to all, then SIGKILL to any still running after a grace period.
fn stop_responders(pids: &[u32]) {
    let ours: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).any(|arg| arg == b"responder")
        })
        .collect();
    for &pid in &ours {
        // SAFETY: plain kill(2) on a PID verified to run our responder.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while ours.iter().any(|&pid| is_running(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    for &pid in ours.iter().filter(|&&pid| is_running(pid)) {
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Whether `pid` exists and has not exited. An exited process stays a
/// zombie until its parent (init, once `lab up` has returned) reaps it.
pub fn is_running(pid: u32) -> bool {
    // Reap it ourselves if it is our child (up and down in one process).
    let mut status = 0;
    // SAFETY: WNOHANG waitpid on a specific pid; harmless if it is not our child.
    unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

/// Prefixes of all labs on this host.
pub fn list() -> Vec<String> {
    let mut prefixes: Vec<String> = std::fs::read_dir(state_dir())
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    prefixes.sort();
    prefixes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        assert!(validate_prefix("lab1").is_ok());
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("1lab").is_err());
        assert!(validate_prefix("Lab").is_err());
        assert!(validate_prefix("a-b").is_err());
        assert!(validate_prefix("abcdefghijklm").is_err());
    }

    #[test]
    fn namespace_names_carry_the_prefix() {
        assert_eq!(netns_name("x1", Role::Node2), "x1-n2");
        assert_eq!(netns_name("x1", Role::Outside), "x1-out");
    }

    #[test]
    fn a_resteer_is_recorded_for_one_host_or_all() {
        let mut status = LabStatus {
            prefix: "x1".into(),
            rx_cpu: 0,
            rx_cpus: vec![0],
            hosts: Role::ALL
                .iter()
                .map(|&role| Host {
                    role,
                    netns: netns_name("x1", role),
                    addrs: vec![],
                    rx_cpus: vec![0],
                })
                .collect(),
            nodeport: Endpoint {
                addr: "10.0.0.1".into(),
                tcp: 1,
                udp: 2,
            },
            pod: Endpoint {
                addr: "10.0.0.2".into(),
                tcp: 3,
                udp: 4,
            },
            responders: vec![],
        };
        record_steering(&mut status, &[1], Steered::One(Role::Pod));
        let rx = |s: &LabStatus, role| {
            s.hosts
                .iter()
                .find(|h| h.role == role)
                .unwrap()
                .rx_cpus
                .clone()
        };
        assert_eq!(rx(&status, Role::Pod), [1]);
        assert_eq!(rx(&status, Role::Node1), [0]);
        assert_eq!(
            status.rx_cpus,
            [0],
            "one host leaves the lab's RX CPUs alone"
        );

        let per_host: Vec<Vec<u32>> = Role::ALL.iter().map(|&r| vec![r as u32 + 2]).collect();
        record_steering(&mut status, &[2, 3], Steered::All(per_host.clone()));
        for (host, cpus) in status.hosts.iter().zip(&per_host) {
            assert_eq!(&host.rx_cpus, cpus);
        }
        assert_eq!((status.rx_cpu, status.rx_cpus.clone()), (2, vec![2, 3]));
    }
}
