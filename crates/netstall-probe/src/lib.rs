//! `netstall probe`: precise multi-protocol probing with backlog-episode detection.
//!
//! Probes leave on an absolute schedule (a late send is recorded late, never
//! skipped), RTTs come from kernel timestamps, and the series is read for
//! stall *episodes*: the backlog-release sawtooth, lone spikes, loss bursts.
//!
//! ```no_run
//! use std::time::Duration;
//! use netstall_probe::{run, Mode, ProbeConfig, SessionEvent};
//!
//! let mut config = ProbeConfig::new([192, 168, 50, 1].into(), Mode::Syn { port: 30080 }, Duration::from_millis(10));
//! config.count = Some(500);
//! config.flows = 16;
//! let report = run(&config, |event| {
//!     if let SessionEvent::Probe(probe) = event {
//!         println!("seq {} rtt {:?}", probe.seq, probe.rtt_ns);
//!     }
//! })?;
//! for episode in &report.episodes {
//!     println!("{:?} {:.1} ms, flows {:?}", episode.kind, episode.duration_ms, episode.flows);
//! }
//! # anyhow::Ok(())
//! ```
//!
//! * [`session`]: [`run`] a session (sockets, schedule, collection).
//! * [`episodes`]: pure analysis of a probe series, reused by the doctor and bisect.
//! * [`summary`]: loss and RTT quantiles (HDR histogram), overall and per flow.
//! * [`model`]: what a probe produced; [`packet`]: ICMP / TCP bytes;
//!   [`wire`]: the raw-socket and UDP probers; [`http`]: the L7 prober.

pub mod episodes;
pub mod http;
pub mod local;
/// The records a probe session produces (in netstall-events).
pub use netstall_events::probe as model;
pub mod packet;
pub mod session;
pub mod summary;
pub mod sys;
pub mod wire;

use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};

use anyhow::{bail, Context, Result};

pub use episodes::{detect, DetectorConfig, Episode, EpisodeKind, StreamingDetector};
pub use model::{ProbeResult, Proto, Reply, TsSource};
pub use session::{run, run_printed, Mode, ProbeConfig, Report, SessionEvent, SessionInfo};
pub use summary::Summary;

/// Resolves a probe target (an IPv4 address or a host name) to an IPv4 address.
pub fn resolve(host: &str) -> Result<Ipv4Addr> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(ip);
    }
    if host.parse::<IpAddr>().is_ok() {
        bail!("'{host}' is IPv6; netstall probe speaks IPv4 only");
    }
    let addrs = (host, 0)
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("unknown host '{host}': {e}"))?;
    addrs
        .filter_map(|a| match a.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(_) => None,
        })
        .next()
        .ok_or_else(|| anyhow::anyhow!("unknown host '{host}': it has no IPv4 address"))
}

/// What a probe run was asked for: a target and at most one of `--http`,
/// `--syn`, `--udp` (ICMP otherwise), with `--port` for the last two.
#[derive(Debug, Clone, Default)]
pub struct ModeRequest<'a> {
    pub target: Option<&'a str>,
    pub http: Option<&'a str>,
    pub syn: bool,
    pub udp: bool,
    pub port: Option<u16>,
}

/// The probe mode and the host to resolve (an HTTP URL's host when no
/// target is given), or a one-line reason why the request is incomplete.
pub fn mode_and_host(request: &ModeRequest<'_>) -> Result<(Mode, String)> {
    let mode = if let Some(url) = request.http {
        Mode::Http(http::HttpUrl::parse(url)?)
    } else if request.syn {
        Mode::Syn {
            port: request.port.context("--syn needs --port")?,
        }
    } else if request.udp {
        Mode::Udp {
            port: request.port.context("--udp needs --port")?,
        }
    } else {
        if request.port.is_some() {
            bail!("--port needs --syn or --udp");
        }
        Mode::Icmp
    };
    let host = match (request.target, &mode) {
        (Some(target), _) => target.to_owned(),
        (None, Mode::Http(url)) => url.host.clone(),
        (None, _) => bail!("a TARGET is needed"),
    };
    Ok((mode, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_localhost_resolve() {
        assert_eq!(
            resolve("192.168.50.1").unwrap(),
            Ipv4Addr::new(192, 168, 50, 1)
        );
        assert_eq!(resolve("localhost").unwrap(), Ipv4Addr::LOCALHOST);
        assert!(resolve("::1").unwrap_err().to_string().contains("IPv6"));
    }

    #[test]
    fn the_mode_follows_the_flags_and_incomplete_requests_say_what_is_missing() {
        let icmp = ModeRequest {
            target: Some("10.0.0.1"),
            ..ModeRequest::default()
        };
        let (mode, host) = mode_and_host(&icmp).unwrap();
        assert!(matches!(mode, Mode::Icmp));
        assert_eq!(host, "10.0.0.1");
        let syn = ModeRequest {
            syn: true,
            port: Some(80),
            ..icmp.clone()
        };
        assert!(matches!(
            mode_and_host(&syn).unwrap().0,
            Mode::Syn { port: 80 }
        ));
        let http = ModeRequest {
            http: Some("http://example.test:8080/x"),
            ..ModeRequest::default()
        };
        let (mode, host) = mode_and_host(&http).unwrap();
        assert!(matches!(mode, Mode::Http(_)));
        assert_eq!(host, "example.test");
        for (request, reason) in [
            (
                ModeRequest {
                    syn: true,
                    ..icmp.clone()
                },
                "--syn needs --port",
            ),
            (
                ModeRequest {
                    udp: true,
                    ..icmp.clone()
                },
                "--udp needs --port",
            ),
            (
                ModeRequest {
                    port: Some(1),
                    ..icmp.clone()
                },
                "--port needs --syn or --udp",
            ),
            (ModeRequest::default(), "a TARGET is needed"),
        ] {
            assert_eq!(mode_and_host(&request).unwrap_err().to_string(), reason);
        }
    }
}
