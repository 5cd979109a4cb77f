//! The probe matrix: which paths to probe from which vantage point, and which
//! layers ("segments") each path crosses. Pure: the topology is described,
//! not discovered.
//!
//! The story's layers, from the outside in: the NodePort (NAT on the node that
//! receives it, "node1"), the overlay to the pod's node ("node2"), node2's
//! host RX, the pod. Probing the NodePort, the pod IP and each node IP at once
//! gives paths that share some layers and not others; comparing them names
//! the layer that adds stalls.

use std::net::Ipv4Addr;

pub use netstall_events::bisect::{Destination, Segment, Vantage};
use netstall_events::probe::Proto;
use serde::Serialize;

/// How a path's probes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// TCP SYN (SYN-ACK or RST answer it), hashed per flow on the 4-tuple.
    Tcp { port: u16 },
    /// ICMP echo, hashed on the addresses only: one RX CPU per path.
    Icmp,
}

impl ProbeKind {
    pub fn proto(self) -> Proto {
        match self {
            ProbeKind::Tcp { .. } => Proto::Tcp,
            ProbeKind::Icmp => Proto::Icmp,
        }
    }
}

/// One path of the matrix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathSpec {
    /// `vantage/destination-proto`, e.g. `client/nodeport-tcp`.
    pub name: String,
    pub vantage: Vantage,
    pub destination: Destination,
    pub addr: Ipv4Addr,
    pub probe: ProbeKind,
    /// The layers crossed, in no particular order, without repeats.
    pub segments: Vec<Segment>,
}

impl PathSpec {
    /// `addr` or `addr:port`.
    pub fn target(&self) -> String {
        match self.probe {
            ProbeKind::Tcp { port } => format!("{}:{port}", self.addr),
            ProbeKind::Icmp => self.addr.to_string(),
        }
    }

    pub fn crosses(&self, segment: Segment) -> bool {
        self.segments.contains(&segment)
    }
}

/// How the vantage points reach the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// A cluster as usually built: each vantage point reaches the node IPs
    /// directly, the pod IP through the overlay into node2, the NodePort
    /// through node1 (NAT) and, if the pod lives elsewhere, the overlay.
    Cluster,
    /// The netstall lab: the client reaches everything through node1 (its
    /// gateway); the outside host sits on node2's underlay bridge, so it
    /// reaches node1 (and node1's NodePort) through node2, and the pod
    /// through node2 without the overlay.
    Lab,
}

/// What to probe, as given on the command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    /// The NodePort, `HOST:PORT` (HOST is node1).
    pub nodeport: Option<(Ipv4Addr, u16)>,
    /// The pod's IP and TCP port.
    pub pod: Option<(Ipv4Addr, u16)>,
    /// The pod's node (node2).
    pub node: Option<Ipv4Addr>,
    /// TCP port for SYNs to the node IPs (a closed port's RST answers too).
    pub node_port: u16,
}

/// The second vantage point's view of node1, when it differs from the
/// NodePort's HOST (in the lab, node1's underlay address).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutsideView {
    pub nodeport: Option<(Ipv4Addr, u16)>,
}

/// Builds the matrix: for each vantage point, TCP to the NodePort, TCP and
/// ICMP to the pod, to node2 and to node1 (the NodePort's host), for the
/// targets given.
pub fn matrix(
    targets: &Targets,
    outside: Option<&OutsideView>,
    topology: Topology,
) -> Vec<PathSpec> {
    let mut paths = paths_from(Vantage::Client, targets, topology);
    if let Some(view) = outside {
        let targets = Targets {
            nodeport: view.nodeport.or(targets.nodeport),
            ..targets.clone()
        };
        paths.extend(paths_from(Vantage::Outside, &targets, topology));
    }
    paths
}

fn paths_from(vantage: Vantage, targets: &Targets, topology: Topology) -> Vec<PathSpec> {
    let node1 = targets.nodeport.map(|(addr, _)| addr);
    // A NodePort on the pod's own node has no overlay and no second node.
    let local_nodeport = node1.is_some() && node1 == targets.node;
    let mut paths = Vec::new();
    let mut add = |destination, addr, probe| {
        let segments = segments(vantage, destination, topology, local_nodeport);
        paths.push(PathSpec {
            name: format!(
                "{}/{}-{}",
                vantage.name(),
                destination.name(),
                ProbeKind::proto(probe)
            ),
            vantage,
            destination,
            addr,
            probe,
            segments,
        });
    };
    if let Some((addr, port)) = targets.nodeport {
        add(Destination::NodePort, addr, ProbeKind::Tcp { port });
    }
    if let Some((addr, port)) = targets.pod {
        add(Destination::Pod, addr, ProbeKind::Tcp { port });
        add(Destination::Pod, addr, ProbeKind::Icmp);
    }
    if let Some(addr) = targets.node {
        add(
            Destination::Node2,
            addr,
            ProbeKind::Tcp {
                port: targets.node_port,
            },
        );
        add(Destination::Node2, addr, ProbeKind::Icmp);
    }
    if let Some(addr) = node1.filter(|_| !local_nodeport) {
        add(
            Destination::Node1,
            addr,
            ProbeKind::Tcp {
                port: targets.node_port,
            },
        );
        add(Destination::Node1, addr, ProbeKind::Icmp);
    }
    paths
}

fn segments(
    vantage: Vantage,
    destination: Destination,
    topology: Topology,
    local_nodeport: bool,
) -> Vec<Segment> {
    use Segment::*;
    let mut segments = vec![Sender(vantage), Network];
    // How the vantage point gets into the cluster before the destination's own layers.
    let entry: &[Segment] = match (topology, vantage) {
        (Topology::Lab, Vantage::Client) => &[Node1],
        (Topology::Lab, Vantage::Outside) => match destination {
            Destination::NodePort | Destination::Node1 => &[Node2],
            Destination::Pod | Destination::Node2 => &[],
        },
        (Topology::Cluster, _) => &[],
    };
    segments.extend_from_slice(entry);
    let own: &[Segment] = match destination {
        Destination::NodePort if local_nodeport => &[Node2, Nat, Pod],
        Destination::NodePort => &[Node1, Nat, Overlay, Node2, Pod],
        Destination::Pod => match (topology, vantage) {
            (Topology::Lab, Vantage::Outside) => &[Node2, Pod],
            _ => &[Overlay, Node2, Pod],
        },
        Destination::Node2 => &[Node2],
        Destination::Node1 => &[Node1],
    };
    for segment in own {
        if !segments.contains(segment) {
            segments.push(*segment);
        }
    }
    segments
}

/// Parses `HOST:PORT` (HOST an IPv4 address or a name resolving to one).
pub fn parse_host_port(text: &str) -> anyhow::Result<(Ipv4Addr, u16)> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("'{text}' is not HOST:PORT"))?;
    Ok((netstall_probe::resolve(host)?, parse_port(port)?))
}

/// Parses `IP[:PORT]`, with `default_port` when no port is given.
pub fn parse_addr_port(text: &str, default_port: u16) -> anyhow::Result<(Ipv4Addr, u16)> {
    match text.rsplit_once(':') {
        Some((host, port)) => Ok((netstall_probe::resolve(host)?, parse_port(port)?)),
        None => Ok((netstall_probe::resolve(text)?, default_port)),
    }
}

fn parse_port(text: &str) -> anyhow::Result<u16> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => anyhow::bail!("invalid port '{text}': use 1-65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_optional_port_parse() {
        assert_eq!(
            parse_host_port("192.168.50.1:30080").unwrap(),
            (Ipv4Addr::new(192, 168, 50, 1), 30080)
        );
        assert_eq!(
            parse_host_port("localhost:80").unwrap(),
            (Ipv4Addr::LOCALHOST, 80)
        );
        assert!(parse_host_port("192.168.50.1")
            .unwrap_err()
            .to_string()
            .contains("HOST:PORT"));
        assert!(parse_host_port("192.168.50.1:0")
            .unwrap_err()
            .to_string()
            .contains("invalid port"));
        assert_eq!(
            parse_addr_port("10.244.2.10", 80).unwrap(),
            (Ipv4Addr::new(10, 244, 2, 10), 80)
        );
        assert_eq!(
            parse_addr_port("10.244.2.10:8080", 80).unwrap(),
            (Ipv4Addr::new(10, 244, 2, 10), 8080)
        );
        assert!(parse_addr_port("10.244.2.10:x", 80).is_err());
    }

    fn lab_targets() -> Targets {
        Targets {
            nodeport: Some(([192, 168, 50, 1].into(), 30080)),
            pod: Some(([10, 244, 2, 10].into(), 8080)),
            node: Some([172, 31, 0, 2].into()),
            node_port: 8080,
        }
    }

    fn find<'a>(paths: &'a [PathSpec], name: &str) -> &'a PathSpec {
        paths
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn the_lab_matrix_has_every_path_from_both_vantage_points() {
        let outside = OutsideView {
            nodeport: Some(([172, 31, 0, 1].into(), 30080)),
        };
        let paths = matrix(&lab_targets(), Some(&outside), Topology::Lab);
        let names: Vec<&str> = paths.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "client/nodeport-tcp",
                "client/pod-tcp",
                "client/pod-icmp",
                "client/node2-tcp",
                "client/node2-icmp",
                "client/node1-tcp",
                "client/node1-icmp",
                "outside/nodeport-tcp",
                "outside/pod-tcp",
                "outside/pod-icmp",
                "outside/node2-tcp",
                "outside/node2-icmp",
                "outside/node1-tcp",
                "outside/node1-icmp",
            ]
        );
        use Segment::*;
        let np = find(&paths, "client/nodeport-tcp");
        assert_eq!(np.target(), "192.168.50.1:30080");
        assert_eq!(
            np.segments,
            [
                Sender(Vantage::Client),
                Network,
                Node1,
                Nat,
                Overlay,
                Node2,
                Pod
            ]
        );
        // The lab's client goes through node1 to reach node2, but not the overlay.
        let n2 = find(&paths, "client/node2-icmp");
        assert_eq!(
            n2.segments,
            [Sender(Vantage::Client), Network, Node1, Node2]
        );
        assert_eq!(n2.target(), "172.31.0.2");
        // The outside host reaches the pod without node1 or the overlay, and node1 through node2's bridge.
        let pod = find(&paths, "outside/pod-tcp");
        assert_eq!(
            pod.segments,
            [Sender(Vantage::Outside), Network, Node2, Pod]
        );
        let n1 = find(&paths, "outside/node1-icmp");
        assert_eq!(n1.addr, Ipv4Addr::new(172, 31, 0, 1));
        assert_eq!(
            n1.segments,
            [Sender(Vantage::Outside), Network, Node2, Node1]
        );
    }

    #[test]
    fn a_cluster_reaches_nodes_directly_and_only_given_targets_are_probed() {
        let targets = Targets {
            pod: None,
            ..lab_targets()
        };
        let paths = matrix(&targets, None, Topology::Cluster);
        assert_eq!(paths.len(), 5);
        assert_eq!(
            find(&paths, "client/node2-tcp").segments,
            [
                Segment::Sender(Vantage::Client),
                Segment::Network,
                Segment::Node2
            ]
        );
        assert!(!find(&paths, "client/node1-icmp").crosses(Segment::Node2));
    }

    #[test]
    fn a_nodeport_on_the_pods_node_has_no_overlay_and_no_node1_paths() {
        let targets = Targets {
            nodeport: Some(([172, 31, 0, 2].into(), 30080)),
            ..lab_targets()
        };
        let paths = matrix(&targets, None, Topology::Cluster);
        let np = find(&paths, "client/nodeport-tcp");
        assert!(np.crosses(Segment::Nat) && !np.crosses(Segment::Overlay));
        assert!(!np.crosses(Segment::Node1));
        assert!(paths.iter().all(|p| p.destination != Destination::Node1));
    }
}
