//! Peers from the Kubernetes API: the endpoints of the agents' own Service
//! (`discovery.k8s.io/v1` EndpointSlices), followed with a kube-rs watch and
//! named by node, so that `peer` labels and rendezvous hashing use node
//! names on every node.
//!
//! A watch, not a periodic list: after the first list the API server sends
//! only changes, which is what lets thousands of agents follow one Service
//! (kube-proxy follows every Service the same way). It needs `list` and
//! `watch` on EndpointSlices in the agents' namespace (deploy/kubernetes/rbac.yaml).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use futures::future::{self, Either};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};
use netstall_core::shutdown::Shutdown;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::config::Peer;

/// The agents' Service, `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

impl FromStr for ServiceRef {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => Ok(Self {
                namespace: namespace.to_string(),
                name: name.to_string(),
            }),
            _ => bail!("--peers-kubernetes wants NAMESPACE/SERVICE, not '{text}'"),
        }
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The peers in `slices`: every endpoint not known to be unready, by its
/// first IPv4 address, named by its node (else its address); sorted by
/// name, one per address.
pub fn peers_of<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> Vec<Peer> {
    let mut peers: Vec<Peer> = slices
        .into_iter()
        .filter(|slice| slice.address_type == "IPv4")
        .flat_map(|slice| &slice.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .filter_map(|e| {
            let addr: Ipv4Addr = e.addresses.first()?.parse().ok()?;
            let name = e.node_name.clone().unwrap_or_else(|| addr.to_string());
            Some(Peer { name, addr })
        })
        .collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name).then(a.addr.cmp(&b.addr)));
    peers.dedup_by_key(|p| p.addr);
    peers
}

/// A connection to the API server, made before the agent starts so that a
/// missing in-cluster config or kubeconfig fails the start with one line.
pub struct KubernetesPeers {
    runtime: tokio::runtime::Runtime,
    client: Client,
    service: ServiceRef,
}

impl KubernetesPeers {
    /// Reads the in-cluster config (service account) or `KUBECONFIG`.
    pub fn connect(service: ServiceRef) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the Kubernetes client's runtime")?;
        let client = runtime
            .block_on(Client::try_default())
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| {
                format!(
                    "--peers-kubernetes {service}: no Kubernetes API config \
                     (in-cluster service account or KUBECONFIG)"
                )
            })?;
        Ok(Self {
            runtime,
            client,
            service,
        })
    }

    /// Watches the Service's EndpointSlices until `stop`, calling `on_change`
    /// with every peer whenever the set changes. API errors are retried with
    /// backoff and told once on stderr; the last known peers stay meanwhile.
    pub fn watch(self, stop: &Shutdown, mut on_change: impl FnMut(Vec<Peer>)) {
        let api: Api<EndpointSlice> = Api::namespaced(self.client, &self.service.namespace);
        let selector = format!("kubernetes.io/service-name={}", self.service.name);
        let (store, writer) = reflector::store();
        // Every event, not just the objects touched: the store takes the
        // first list whole at its end (InitDone), which touches no object.
        let events = reflector(
            writer,
            watcher(api, watcher::Config::default().labels(&selector)),
        )
        .default_backoff();
        let service = &self.service;
        self.runtime.block_on(async move {
            let mut events = std::pin::pin!(events);
            let mut known: Option<Vec<Peer>> = None;
            let mut reported_error = false;
            // The watch waits for the API server or the shutdown, whichever
            // comes first: no periodic wake-up to look at a flag.
            // SAFETY: the shutdown's eventfd stays open while `stop` lives,
            // which outlives this future.
            let registered =
                unsafe { AsyncFd::register_with_interest(stop.fd(), Interest::READABLE) };
            let Ok(shutdown) = registered else {
                eprintln!("netstall agent: cannot watch the endpoints of {service}: no I/O driver");
                return;
            };
            while !stop.is_requested() {
                let event = match future::select(std::pin::pin!(shutdown.readable()), events.next())
                    .await
                {
                    Either::Left(_) => break,
                    Either::Right((event, _)) => event,
                };
                match event {
                    None => break,
                    Some(Err(e)) => {
                        if !reported_error {
                            reported_error = true;
                            eprintln!("netstall agent: watching the endpoints of {service}: {e}");
                        }
                        continue;
                    }
                    Some(Ok(_)) => reported_error = false,
                }
                let slices = store.state();
                let peers = peers_of(slices.iter().map(|s| s.as_ref()));
                if known.as_ref() != Some(&peers) {
                    known = Some(peers.clone());
                    on_change(peers);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn ready_ipv4_endpoints_become_peers_named_by_node() {
        let a = slice(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "agents-a"},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.2"], "nodeName": "node-b", "conditions": {"ready": true}},
                {"addresses": ["10.0.0.1"], "nodeName": "node-a"},
                {"addresses": ["10.0.0.9"], "nodeName": "node-z", "conditions": {"ready": false}},
                {"addresses": ["10.0.0.7"]},
            ]
        }));
        let b = slice(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "agents-b"},
            "addressType": "IPv6",
            "endpoints": [{"addresses": ["fd00::1"], "nodeName": "node-v6"}]
        }));
        let peers = peers_of([&a, &b]);
        let names: Vec<(&str, String)> = peers
            .iter()
            .map(|p| (p.name.as_str(), p.addr.to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("10.0.0.7", "10.0.0.7".to_string()),
                ("node-a", "10.0.0.1".to_string()),
                ("node-b", "10.0.0.2".to_string()),
            ]
        );
    }

    #[test]
    fn service_refs_are_namespace_slash_name() {
        let s: ServiceRef = "netstall/netstall-agent".parse().unwrap();
        assert_eq!(
            (s.namespace.as_str(), s.name.as_str()),
            ("netstall", "netstall-agent")
        );
        for bad in ["netstall", "/x", "x/", ""] {
            let err = bad.parse::<ServiceRef>().unwrap_err().to_string();
            assert!(err.contains("NAMESPACE/SERVICE"), "{err}");
        }
    }
}
