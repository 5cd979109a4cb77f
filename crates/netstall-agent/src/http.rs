//! `/metrics` (Prometheus text, or OpenMetrics when asked for) and
//! `/healthz` (the JSON health report), on a small bounded HTTP server.
//!
//! The agent listens on every node, often where any pod can reach it, so
//! nothing a client sends may grow the agent: one thread serves every
//! connection (hyper on a single-threaded tokio runtime), a request head
//! is at most [`Limits::head_bytes`] and must arrive within
//! [`Limits::head_timeout`], a connection lives at most
//! [`Limits::connection_timeout`] and serves one request, and connections
//! are capped in total and per client address. A client over its share is
//! closed at once; the others (Prometheus, `netstall check`) still get in.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::stream::{FuturesUnordered, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use netstall_core::clock::realtime_ns;
use netstall_core::shutdown::Shutdown;

use crate::State;

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one client can make the server hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, all clients together (far below the
    /// container's 1024 descriptors).
    pub connections: usize,
    /// Connections open at once from one client address.
    pub per_client: usize,
    /// Bytes of request line and headers together (a longer head is
    /// answered 431 and the connection closed).
    pub head_bytes: usize,
    /// Header lines in one request.
    pub headers: usize,
    /// Time for a client to send its whole request head.
    pub head_timeout: Duration,
    /// Time a connection may stay open at all, answer included.
    pub connection_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 256,
            per_client: 16,
            // hyper's smallest read buffer; a scrape's head is a few hundred bytes.
            head_bytes: 8192,
            headers: 32,
            head_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(10),
        }
    }
}

/// The bound listening socket and the limits it serves under.
pub struct Server {
    listener: std::net::TcpListener,
    limits: Limits,
}

impl Server {
    /// The address actually bound (`--listen 127.0.0.1:0` picks a port).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// The same server under other limits (tests use small ones).
    pub fn with_limits(self, limits: Limits) -> Self {
        Self { limits, ..self }
    }
}

/// Binds the listening socket (so a taken port fails the start, not later).
pub fn bind(addr: SocketAddr) -> Result<Server> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(Server {
        listener,
        limits: Limits::default(),
    })
}

/// Serves on this thread until `stop` is requested (the shutdown's eventfd
/// wakes it: no polling). Returns an error only when it cannot start.
pub fn serve(server: &Server, state: &State, stop: &Shutdown) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the HTTP server's runtime")?;
    runtime.block_on(serve_async(server, state, stop))
}

async fn serve_async(server: &Server, state: &State, stop: &Shutdown) -> Result<()> {
    let limits = server.limits;
    let listener = tokio::net::TcpListener::from_std(server.listener.try_clone()?)?;
    // SAFETY: the eventfd belongs to `stop`, which outlives this function
    // and so this registration; nothing closes or replaces it meanwhile.
    let stopped = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(stop.fd(), tokio::io::Interest::READABLE)
    }
    .map_err(std::io::Error::from)?;
    let mut open: HashMap<IpAddr, usize> = HashMap::new();
    let mut total = 0usize;
    // Every connection is a future on this one thread, borrowing `state`.
    let mut connections = FuturesUnordered::new();
    while !stop.is_requested() {
        tokio::select! {
            _ = stopped.readable() => break,
            Some(client) = connections.next(), if !connections.is_empty() => {
                total -= 1;
                if let Some(n) = open.get_mut(&client) {
                    *n -= 1;
                    if *n == 0 {
                        open.remove(&client);
                    }
                }
            }
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    // Out of descriptors, say: do not spin on an error that repeats.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let client = peer.ip();
                let mine = open.get(&client).copied().unwrap_or(0);
                if total >= limits.connections || mine >= limits.per_client {
                    state.metrics.http_rejected.get_or_create(&Vec::new()).inc();
                    continue; // dropped: closed at once
                }
                total += 1;
                *open.entry(client).or_default() += 1;
                connections.push(connection(stream, client, state, limits));
            }
        }
    }
    Ok(())
}

/// Serves one connection (one request) within the limits; yields its client.
async fn connection(
    stream: tokio::net::TcpStream,
    client: IpAddr,
    state: &State,
    limits: Limits,
) -> IpAddr {
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.head_bytes.max(8192))
        .max_header_size(limits.head_bytes)
        .max_headers(limits.headers)
        .keep_alive(false)
        .serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(|request| async move {
                Ok::<_, Infallible>(respond(&request, state))
            }),
        );
    // A client that goes away, or is too slow, is not the agent's problem.
    let _ = tokio::time::timeout(limits.connection_timeout, conn).await;
    client
}

fn respond(request: &Request<Incoming>, state: &State) -> Response<String> {
    let (status, body, content_type) = match request.uri().path() {
        "/metrics" => {
            let openmetrics = request
                .headers()
                .get_all(hyper::header::ACCEPT)
                .iter()
                .any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.contains("application/openmetrics-text"))
                });
            if openmetrics {
                (
                    StatusCode::OK,
                    state.metrics.encode_openmetrics(),
                    OPENMETRICS_TEXT,
                )
            } else {
                (
                    StatusCode::OK,
                    state.metrics.encode_prometheus(),
                    PROMETHEUS_TEXT,
                )
            }
        }
        "/healthz" => {
            let report = state
                .health
                .lock()
                .expect("health lock")
                .report(realtime_ns());
            let body = netstall_events::Record::Health(report).to_json_line();
            (StatusCode::OK, body, "application/json")
        }
        "/stalls" => stalls(request.uri().query(), state),
        _ => (
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /stalls?since=1h\n".to_string(),
            "text/plain; charset=utf-8",
        ),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// The most `/stalls` answers: the newest records that fit.
pub const MAX_STALLS_BYTES: usize = 4 << 20;

/// `/stalls?since=1h`: the recorder's records of the last hour (default:
/// all it keeps), JSON lines, the newest [`MAX_STALLS_BYTES`] of them.
fn stalls(query: Option<&str>, state: &State) -> (StatusCode, String, &'static str) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let since = query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("since="))
        .next_back();
    let since_ns = match since.map(netstall_core::duration::parse).transpose() {
        Ok(since) => since.map_or(0, |d| {
            realtime_ns().saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        }),
        Err(e) => return (StatusCode::BAD_REQUEST, format!("since: {e}\n"), TEXT),
    };
    let Some(dir) = state.recorder_dir() else {
        return (
            StatusCode::NOT_FOUND,
            "the flight recorder is off (--state-dir -)\n".into(),
            TEXT,
        );
    };
    let mut lines = std::collections::VecDeque::new();
    let mut bytes = 0usize;
    let scanned = crate::recorder::scan(&dir, since_ns, |_, line| {
        bytes += line.len() + 1;
        lines.push_back(line.to_owned());
        while bytes > MAX_STALLS_BYTES {
            let Some(old) = lines.pop_front() else { break };
            bytes -= old.len() + 1;
        }
    });
    match scanned {
        Ok(scanned) => {
            for warning in scanned.warnings {
                eprintln!("netstall agent: recorder: {warning}");
            }
            let mut body = String::with_capacity(bytes);
            for line in lines {
                body.push_str(&line);
                body.push('\n');
            }
            (StatusCode::OK, body, "application/x-ndjson")
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n"), TEXT),
    }
}

/// Bytes of an answer [`get`] reads at most.
const MAX_ANSWER: usize = 16 << 20;

/// GETs `path` from `addr` (HTTP/1.0, one request per connection); returns
/// the body of a 200 response. What `netstall check` and the tests use.
///
/// `timeout` bounds the whole exchange (connect, request, every byte of
/// the answer): a server that trickles its answer cannot hold it longer.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                anyhow!("no complete answer from the agent at {addr} within {timeout:?}")
            })
    };
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to the agent at {addr}"))?;
    stream.set_write_timeout(Some(left()?))?;
    // One write: a server may answer (and close) as soon as the head is in.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("cannot ask the agent at {addr}"))?;
    let mut response = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        stream.set_read_timeout(Some(left()?))?;
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(left().err().unwrap_or_else(|| e.into()));
            }
            Err(e) => return Err(e).with_context(|| format!("no answer from the agent at {addr}")),
        };
        if n == 0 {
            break;
        }
        response.extend_from_slice(&buf[..n]);
        if response.len() > MAX_ANSWER {
            bail!("the answer of {addr} is larger than {MAX_ANSWER} bytes");
        }
    }
    let response = String::from_utf8(response)
        .map_err(|_| anyhow!("the answer of {addr} is not UTF-8 text"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response from {addr}"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        bail!("the agent at {addr} answered {path} with HTTP {status}");
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn the_timeout_bounds_a_trickled_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n");
            // One byte every 200 ms: each read returns well within any timeout.
            for _ in 0..100 {
                std::thread::sleep(Duration::from_millis(200));
                if stream.write_all(b"x").is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        let error = get(addr, "/healthz", Duration::from_secs(1)).unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "{took:?}");
        assert!(format!("{error:#}").contains("within 1s"), "{error:#}");
    }
}
