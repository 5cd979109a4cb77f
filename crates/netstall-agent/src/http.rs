//! `/metrics` (Prometheus text, or OpenMetrics when asked for) and
//! `/healthz` (the JSON health report), on a small blocking HTTP server.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use netstall_core::clock::realtime_ns;
use netstall_core::shutdown::Shutdown;
use tiny_http::{Header, Request, Response, Server};

use crate::State;

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the listening socket (so a taken port fails the start, not later).
pub fn bind(addr: SocketAddr) -> Result<Server> {
    Server::http(addr).map_err(|e| anyhow!("cannot listen on {addr}: {e}"))
}

/// Serves until `stop`; whoever requests it must also `server.unblock()`,
/// as this waits for requests only (no periodic wake-up).
pub fn serve(server: &Server, state: &State, stop: &Shutdown) {
    while !stop.is_requested() {
        match server.recv() {
            Ok(request) => respond(request, state),
            // Unblocked, or a failed accept: look at the shutdown, and do
            // not spin on an error that repeats.
            Err(_) => {
                stop.wait(Duration::from_secs(1));
            }
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn respond(request: Request, state: &State) {
    let path = request.url().split('?').next().unwrap_or("");
    let response = match path {
        "/metrics" => {
            let openmetrics = request.headers().iter().any(|h| {
                h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text")
            });
            let (body, content_type) = if openmetrics {
                (state.metrics.encode_openmetrics(), OPENMETRICS_TEXT)
            } else {
                (state.metrics.encode_prometheus(), PROMETHEUS_TEXT)
            };
            Response::from_string(body).with_header(header("Content-Type", content_type))
        }
        "/healthz" => {
            let report = state
                .health
                .lock()
                .expect("health lock")
                .report(realtime_ns());
            let body = netstall_events::Record::Health(report).to_json_line();
            Response::from_string(body).with_header(header("Content-Type", "application/json"))
        }
        _ => Response::from_string("not found: try /metrics or /healthz\n").with_status_code(404),
    };
    // A client that went away is not the agent's problem.
    let _ = request.respond(response);
}

/// GETs `path` from `addr` (HTTP/1.0, one request per connection); returns
/// the body of a 200 response. What `netstall check` and the tests use.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to the agent at {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: a server may answer (and close) as soon as the head is in.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    std::io::Write::write_all(&mut stream, request.as_bytes())?;
    let mut response = String::new();
    stream
        .take(16 << 20)
        .read_to_string(&mut response)
        .with_context(|| format!("no answer from the agent at {addr}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response from {addr}"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        bail!("the agent at {addr} answered {path} with HTTP {status}");
    }
    Ok(body.to_string())
}
