//! The agent's HTTP endpoint under the attacks any pod on the node could
//! make (issue 21): an endless header line, thousands of idle half-requests.
//! Neither may grow the agent's memory or threads, and `/metrics` keeps
//! answering within a second for everyone else. Real sockets on loopback;
//! the attacker connects from 127.0.0.2, the scraper from 127.0.0.1.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use netstall_agent::events::EventLog;
use netstall_agent::http::{self, Limits};
use netstall_agent::{AgentOptions, State};
use netstall_core::shutdown::Shutdown;

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn state() -> State {
    let config = AgentOptions::default().resolve().unwrap();
    State::new(&config, EventLog::stdout())
}

/// A field of /proc/self/status, in its unit (kB for memory).
fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// A connection to `server` from the attacker's address.
fn attacker_connects(server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((ATTACKER, 0)).into())?;
    socket.connect_timeout(&server.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

/// `/metrics` from the scraper's address answers within a second.
fn scrape_is_quick(server: SocketAddr) {
    let started = Instant::now();
    let body = http::get(server, "/metrics", Duration::from_secs(1)).unwrap();
    let took = started.elapsed();
    assert!(body.contains("netstall_agent_info"), "{body}");
    assert!(took < Duration::from_secs(1), "/metrics took {took:?}");
}

/// Runs `attack` against a served agent endpoint, then stops it.
fn under_attack(limits: Limits, attack: impl FnOnce(SocketAddr, &State)) {
    let server = http::bind("127.0.0.1:0".parse().unwrap())
        .unwrap()
        .with_limits(limits);
    let addr = server.local_addr();
    let state = state();
    let stop = Shutdown::new().unwrap();
    std::thread::scope(|scope| {
        let serving = scope.spawn(|| http::serve(&server, &state, &stop));
        // Stop the server however the attack ends, a failed assertion too.
        let attacked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| attack(addr, &state)));
        stop.request();
        serving.join().unwrap().unwrap();
        if let Err(panic) = attacked {
            std::panic::resume_unwind(panic);
        }
    });
}

#[test]
fn a_64_mb_header_line_does_not_grow_the_agent() {
    under_attack(Limits::default(), |addr, _| {
        scrape_is_quick(addr); // warm: the first scrape's allocations are not the attack's
        let rss_before = status("VmRSS");
        let mut stream = attacker_connects(addr).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let chunk = vec![b'a'; 1 << 20];
        let mut written = 0usize;
        let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nX-Long: ");
        while written < 64 << 20 {
            match stream.write(&chunk) {
                Ok(n) => written += n,
                Err(_) => break, // closed by the server: the point
            }
        }
        let rss_after = status("VmRSS");
        // The server stops reading after its 8 KiB head limit: what the
        // client got in before the reset sat in socket buffers, not the agent.
        assert!(
            written < 32 << 20,
            "the server read {written} bytes of one header"
        );
        assert!(
            rss_after < rss_before + 16 * 1024,
            "RSS {rss_before} kB -> {rss_after} kB"
        );
        scrape_is_quick(addr);
    });
}

#[test]
fn thousands_of_idle_half_requests_make_no_threads() {
    under_attack(Limits::default(), |addr, state| {
        scrape_is_quick(addr);
        let threads_before = status("Threads");
        let rss_before = status("VmRSS");
        let mut idle = Vec::new();
        for _ in 0..3000 {
            let Ok(mut stream) = attacker_connects(addr) else {
                continue; // a full accept queue: also not the agent's memory
            };
            let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
            idle.push(stream);
        }
        assert!(idle.len() > 2000, "only {} connections opened", idle.len());
        scrape_is_quick(addr);
        assert_eq!(
            status("Threads"),
            threads_before,
            "no thread per connection"
        );
        let rss_after = status("VmRSS");
        assert!(
            rss_after < rss_before + 16 * 1024,
            "RSS {rss_before} kB -> {rss_after} kB"
        );
        // All but the attacker's share were closed unserved, and counted
        // (a share is freed again 5 s on: a slow run sees a few more served).
        let metrics = state.metrics.encode_prometheus();
        let rejected: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("netstall_http_rejected_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(
            rejected as usize >= idle.len() - 4 * Limits::default().per_client,
            "{rejected} rejected of {}",
            idle.len()
        );
    });
}

#[test]
fn an_idle_connection_is_closed_after_the_head_timeout() {
    let limits = Limits {
        head_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    under_attack(limits, |addr, _| {
        let mut stream = attacker_connects(addr).unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        // The server answers 408 or just closes; either way it lets go.
        stream.read_to_end(&mut answer).unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "held for {took:?}");
        assert!(!String::from_utf8_lossy(&answer).contains(" 200 "));
    });
}
