//! The lab's responders, also offered as `netstall responder` for users' own
//! tests: TCP that answers a line (or a minimal HTTP 200 to an HTTP request),
//! and UDP echo.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Most connections served at once; more are closed right after accept, so
/// a flood cannot exhaust threads.
const MAX_CONNECTIONS: usize = 256;
/// How long a new connection may take to send a request before it gets the
/// plain-TCP greeting line instead of an HTTP response.
const FIRST_BYTES_WAIT: Duration = Duration::from_millis(100);
/// Idle time after which a keep-alive HTTP connection is closed.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);

/// The line a plain TCP client gets.
pub const GREETING: &str = "netstall-responder\n";

/// What to serve.
#[derive(Debug, Clone)]
pub struct ResponderConfig {
    pub bind: IpAddr,
    pub tcp_port: Option<u16>,
    pub udp_port: Option<u16>,
}

/// Binds the sockets, calls `ready`, then serves until the process ends.
pub fn serve(config: &ResponderConfig, ready: impl FnOnce()) -> Result<()> {
    if config.tcp_port.is_none() && config.udp_port.is_none() {
        bail!("nothing to serve: give --tcp PORT and/or --udp PORT");
    }
    let tcp = config
        .tcp_port
        .map(|port| {
            TcpListener::bind(SocketAddr::new(config.bind, port))
                .with_context(|| format!("cannot listen on TCP {}:{port}", config.bind))
        })
        .transpose()?;
    let udp = config
        .udp_port
        .map(|port| {
            UdpSocket::bind(SocketAddr::new(config.bind, port))
                .with_context(|| format!("cannot bind UDP {}:{port}", config.bind))
        })
        .transpose()?;
    ready();

    let udp_thread = udp.map(|socket| std::thread::spawn(move || udp_echo(socket)));
    if let Some(listener) = tcp {
        tcp_accept(listener)?;
    }
    if let Some(handle) = udp_thread {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("UDP echo thread panicked"))??;
    }
    Ok(())
}

fn udp_echo(socket: UdpSocket) -> Result<()> {
    let mut buf = [0u8; 65536];
    loop {
        let (len, peer) = socket.recv_from(&mut buf)?;
        // A send error (e.g. the peer's port closed) is the peer's business.
        let _ = socket.send_to(&buf[..len], peer);
    }
}

fn tcp_accept(listener: TcpListener) -> Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            continue; // dropped: closed at once
        }
        active.fetch_add(1, Ordering::Relaxed);
        let active = Arc::clone(&active);
        std::thread::spawn(move || {
            let _ = serve_connection(stream);
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
    Ok(())
}

fn serve_connection(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(FIRST_BYTES_WAIT))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => break,
            Err(e) => return Err(e),
        }
        if !looks_like_http(&request) || request.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        stream.set_read_timeout(Some(KEEPALIVE_IDLE))?;
    }
    if !looks_like_http(&request) {
        return stream.write_all(GREETING.as_bytes());
    }
    stream.set_read_timeout(Some(KEEPALIVE_IDLE))?;
    loop {
        let head_end = match request.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) => i + 4,
            None => match stream.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    request.extend_from_slice(&buf[..n]);
                    continue;
                }
                Err(e) if is_timeout(&e) => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
        let close = head.contains("connection: close") || head.contains("http/1.0");
        let body = "ok\n";
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{}",
            body.len(),
            if close { "close" } else { "keep-alive" },
            if head.starts_with("head ") { "" } else { body }
        );
        stream.write_all(response.as_bytes())?;
        request.drain(..head_end);
        if close {
            return Ok(());
        }
    }
}

fn looks_like_http(request: &[u8]) -> bool {
    const METHODS: [&[u8]; 5] = [b"GET ", b"HEAD ", b"POST ", b"PUT ", b"OPTIONS "];
    METHODS.iter().any(|m| {
        request.starts_with(m)
            || (request.len() < m.len() && m.starts_with(request) && !request.is_empty())
    })
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    fn start() -> (u16, u16) {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ports = (
            tcp.local_addr().unwrap().port(),
            udp.local_addr().unwrap().port(),
        );
        std::thread::spawn(move || udp_echo(udp));
        std::thread::spawn(move || tcp_accept(tcp));
        ports
    }

    #[test]
    fn plain_tcp_gets_a_line() {
        let (tcp, _) = start();
        let stream = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stream)
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, GREETING);
    }

    #[test]
    fn http_gets_200_and_keeps_alive() {
        let (tcp, _) = start();
        let mut stream = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        for _ in 0..2 {
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut status = String::new();
            reader.read_line(&mut status).unwrap();
            assert_eq!(status, "HTTP/1.1 200 OK\r\n");
            let mut line = String::new();
            while line != "\r\n" {
                line.clear();
                reader.read_line(&mut line).unwrap();
            }
            let mut body = [0u8; 3];
            reader.read_exact(&mut body).unwrap();
            assert_eq!(&body, b"ok\n");
        }
    }

    #[test]
    fn udp_is_echoed() {
        let (_, udp) = start();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        socket.send_to(b"probe-42", ("127.0.0.1", udp)).unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"probe-42");
    }
}
