//! The L7 path: one HTTP GET per probe, each on a fresh connection (as the
//! story's Vegeta reproduction did), with connect time and time to first
//! byte measured apart, so a stalled SYN-ACK is told from a slow server.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use netstall_core::clock::monotonic_ns;

/// Where `--http URL` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses `http://host[:port][/path]`; https is refused (a TLS handshake
    /// would hide the network in its own latency).
    pub fn parse(url: &str) -> Result<Self> {
        // A CR or LF would end the request line and inject headers; a URL
        // has neither, nor spaces or other control characters.
        if let Some(c) = url.chars().find(|c| c.is_control() || c.is_whitespace()) {
            bail!("invalid URL {url:?}: {c:?} is not allowed in a URL (percent-encode it)");
        }
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => bail!("unsupported URL scheme '{scheme}' in '{url}': use http://"),
            None => bail!("invalid URL '{url}': expected http://host[:port][/path]"),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .with_context(|| format!("invalid port '{port}' in '{url}'"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() || host.contains('@') || port == 0 {
            bail!("invalid URL '{url}': expected http://host[:port][/path]");
        }
        Ok(Self {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// What one request took. Times are CLOCK_MONOTONIC ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTiming {
    pub connect_ns: u64,
    pub ttfb_ns: u64,
    /// When the first byte of the response was read.
    pub first_byte_mono_ns: u64,
    pub status: u16,
}

/// Connects, sends `GET path` with `Connection: close`, reads the response.
pub fn request(addr: SocketAddrV4, url: &HttpUrl, timeout: Duration) -> io::Result<HttpTiming> {
    let start = monotonic_ns();
    let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(addr), timeout)?;
    let connected = monotonic_ns();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: netstall-probe\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::with_capacity(512);
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf)?;
    let first_byte = monotonic_ns();
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    response.extend_from_slice(&buf[..n]);
    // Read the rest (bounded) so the server, not we, closes first.
    while response.len() < 1 << 20 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    Ok(HttpTiming {
        connect_ns: connected - start,
        ttfb_ns: first_byte - connected,
        first_byte_mono_ns: first_byte,
        status: parse_status(&response)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response"))?,
    })
}

/// The status code of an HTTP/1.x response.
fn parse_status(response: &[u8]) -> Option<u16> {
    let line = response.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = HttpUrl::parse("http://192.168.50.1:30080/health?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("192.168.50.1", 30080, "/health?x=1")
        );
        let u = HttpUrl::parse("http://pod").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert!(HttpUrl::parse("https://x/")
            .unwrap_err()
            .to_string()
            .contains("scheme"));
        assert!(HttpUrl::parse("x:80").is_err());
        assert!(HttpUrl::parse("http://:80/").is_err());
        assert!(HttpUrl::parse("http://x:port/").is_err());
        assert!(HttpUrl::parse("http://x:0/").is_err());
        let crlf = HttpUrl::parse("http://x/a\r\nX-Injected: 1").unwrap_err();
        assert!(format!("{crlf}").contains("'\\r' is not allowed"), "{crlf}");
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Busy\r\n"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0\r\n"), None);
    }

    #[test]
    fn a_request_is_timed_against_a_local_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /x HTTP/1.1\r\n"));
            // A slow server: the delay shows in TTFB, not in connect time.
            std::thread::sleep(Duration::from_millis(30));
            conn.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        });
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/x")).unwrap();
        let timing = request(
            SocketAddrV4::new([127, 0, 0, 1].into(), port),
            &url,
            Duration::from_secs(5),
        )
        .unwrap();
        server.join().unwrap();
        assert_eq!(timing.status, 204);
        assert!(timing.ttfb_ns >= 30_000_000, "{timing:?}");
        assert!(timing.connect_ns < 30_000_000, "{timing:?}");
    }
}
