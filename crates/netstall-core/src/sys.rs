//! The system calls every netstall source shares, written once: sockets and
//! their options, kernel timestamps, the control messages they arrive in,
//! entering a network namespace, pinning to a CPU, and copying this binary.
//!
//! Most of it goes through `socket2` (sockets, addresses) and `nix` (socket
//! options, `setns`, CPU affinity). What no crate covers for us stays here,
//! once: the walk over a received message's control data (a kernel RX/TX
//! timestamp, a queued ICMP error), which the probe's `recvmsg` and the
//! agent's `recvmmsg` both need, raw `sockaddr_in`s for the message headers
//! those calls take, and options without a typed wrapper (`ICMP_FILTER`).

use std::fs::File;
use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};
use nix::sched::{sched_getaffinity, sched_setaffinity, setns, CloneFlags, CpuSet};
use nix::sys::socket::{setsockopt, sockopt, TimestampingFlag};
use nix::unistd::Pid;
use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

/// Which kernel timestamps a socket delivers, worst first (so `min` of
/// several sockets is what the whole session can promise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stamping {
    /// No kernel timestamps at all.
    None,
    /// SO_TIMESTAMPNS: RX only; sends are stamped in user space.
    RxOnly,
    /// SO_TIMESTAMPING software TX (error queue, keyed by OPT_ID) and RX.
    TxRx,
}

impl Stamping {
    /// How a session reports it.
    pub fn describe(self) -> &'static str {
        match self {
            Stamping::TxRx => "kernel TX+RX (SO_TIMESTAMPING)",
            Stamping::RxOnly => "kernel RX (SO_TIMESTAMPNS), user TX",
            Stamping::None => "user space",
        }
    }
}

/// A new AF_INET socket (`libc::SOCK_RAW`, `SOCK_DGRAM`, ..., optionally
/// `| SOCK_NONBLOCK`), close-on-exec.
pub fn socket(kind: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    Socket::new(
        Domain::IPV4,
        Type::from(kind),
        Some(Protocol::from(protocol)),
    )
    .map(OwnedFd::from)
}

/// Sets a socket option that has no typed wrapper in `nix` (`ICMP_FILTER`,
/// `IP_MTU_DISCOVER`): `value` is passed as the option's bytes.
pub fn set_option<T: Copy>(
    fd: impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size given; the fd is borrowed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Turns on the best kernel timestamps the socket supports: software TX
/// (on the error queue, keyed by OPT_ID) and RX with SO_TIMESTAMPING, else
/// RX only with SO_TIMESTAMPNS.
pub fn enable_stamping(fd: impl AsFd) -> Stamping {
    let flags = TimestampingFlag::SOF_TIMESTAMPING_TX_SOFTWARE
        | TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE
        | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE
        | TimestampingFlag::SOF_TIMESTAMPING_OPT_ID
        | TimestampingFlag::SOF_TIMESTAMPING_OPT_TSONLY;
    if setsockopt(&fd, sockopt::Timestamping, &flags).is_ok() {
        return Stamping::TxRx;
    }
    if enable_rx_stamping(&fd).is_ok() {
        return Stamping::RxOnly;
    }
    Stamping::None
}

/// SO_TIMESTAMPNS: every datagram received carries the kernel's receive time.
pub fn enable_rx_stamping(fd: impl AsFd) -> io::Result<()> {
    setsockopt(&fd, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// Waits, at most `limit`, until the kernel stamps received packets, and
/// says whether it does.
///
/// The first socket that asks for RX timestamps only schedules turning them
/// on: `net_enable_timestamp` defers flipping its static key to a
/// workqueue, so the packets received right after carry no SO_TIMESTAMPING
/// stamp, more of them on a loaded machine. Call this after opening the
/// sockets that want stamps (they keep the key on): a datagram sent to
/// itself on loopback shows when the stamps are on. `false` also when
/// loopback cannot be used here; the first replies may then fall back to
/// user-space time, as each probe's `timestamps` says.
pub fn wait_for_rx_timestamps(limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    let Ok(socket) = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    // SO_TIMESTAMPING, not SO_TIMESTAMPNS: the latter stamps at read time
    // when the packet has none, which would hide the very thing waited for.
    let flags = TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE
        | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE;
    let ready = setsockopt(&socket, sockopt::Timestamping, &flags).is_ok()
        && socket
            .set_read_timeout(Some(std::time::Duration::from_millis(10)))
            .is_ok();
    let Ok(me) = socket.local_addr() else {
        return false;
    };
    // Bounded by the deadline, and by a count should the clock misbehave.
    // Loopback delivers at once: without the pause, the count would end
    // the wait long before the workqueue has had a chance to run.
    for _ in 0..100_000 {
        if !ready || std::time::Instant::now() >= deadline || socket.send_to(b"t", me).is_err() {
            return false;
        }
        if received_with_stamp(&socket) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

/// Reads one datagram; whether it came with a kernel RX timestamp.
fn received_with_stamp(socket: &std::net::UdpSocket) -> bool {
    let mut buf = [0u8; 16];
    let mut ctl = [0u64; 32];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr; every pointer set below is live.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&ctl);
    // SAFETY: msg points to live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    // SAFETY: the kernel filled the control buffer of `msg`.
    n >= 0 && unsafe { control_messages(&msg) }.kernel_ns.is_some()
}

/// Asks for ICMP errors on the error queue (UDP port unreachable).
pub fn enable_recverr(fd: impl AsFd) -> io::Result<()> {
    setsockopt(&fd, sockopt::Ipv4RecvErr, &true).map_err(io::Error::from)
}

/// A larger receive buffer, so a burst of replies released together (and
/// their TX timestamps, queued against the same budget) is not dropped.
/// Beyond `net.core.rmem_max` only with CAP_NET_ADMIN (SO_RCVBUFFORCE).
pub fn grow_receive_buffer(fd: impl AsFd, bytes: usize) {
    // Best effort: the default still works at ordinary rates.
    if setsockopt(&fd, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = SockRef::from(&fd).set_recv_buffer_size(bytes);
    }
}

/// Binds the socket to `addr` (port 0: the kernel picks a free one).
pub fn bind(fd: impl AsFd, addr: SocketAddrV4) -> io::Result<()> {
    SockRef::from(&fd).bind(&SockAddr::from(addr))
}

/// Connects the socket (for UDP: fixes the peer and routes ICMP errors to it).
pub fn connect(fd: impl AsFd, addr: SocketAddrV4) -> io::Result<()> {
    SockRef::from(&fd).connect(&SockAddr::from(addr))
}

/// The address the socket is bound to.
pub fn local_addr(fd: impl AsFd) -> io::Result<SocketAddrV4> {
    SockRef::from(&fd)
        .local_addr()?
        .as_socket_ipv4()
        .ok_or_else(|| io::Error::other("not an IPv4 socket"))
}

/// The source address the kernel would use towards `target`, or the routing
/// error (no route, network unreachable) as a one-line reason.
pub fn route_source(target: Ipv4Addr) -> Result<Ipv4Addr> {
    let fd = socket(libc::SOCK_DGRAM, 0).context("cannot open a UDP socket")?;
    connect(&fd, SocketAddrV4::new(target, 9))
        .with_context(|| format!("target {target} is unreachable"))?;
    Ok(*local_addr(&fd)?.ip())
}

/// Sends `data` to `to`, or to the connected peer; returns the bytes sent.
pub fn send_to(fd: impl AsFd, data: &[u8], to: Option<SocketAddrV4>) -> io::Result<usize> {
    let socket = SockRef::from(&fd);
    match to {
        Some(to) => socket.send_to(data, &SockAddr::from(to)),
        None => socket.send(data),
    }
}

/// A raw `sockaddr_in`, for the message headers of `recvmsg`/`sendmmsg`/`recvmmsg`.
pub fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// The IPv4 address in a `sockaddr_in` the kernel filled, if it is one.
pub fn ipv4_of(sa: &libc::sockaddr_in) -> Option<Ipv4Addr> {
    (sa.sin_family == libc::AF_INET as libc::sa_family_t)
        .then(|| Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)))
}

/// A queued extended error: a TX timestamp's key, or an ICMP error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedError {
    pub origin: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// The OPT_ID key of a TX timestamp.
    pub data: u32,
    /// Who sent the ICMP error.
    pub offender: Option<Ipv4Addr>,
}

/// `ee_origin` values (linux/errqueue.h).
pub const ORIGIN_ICMP: u8 = 2;
pub const ORIGIN_TIMESTAMPING: u8 = 4;

/// What a received message's control data said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Control {
    /// The kernel's software timestamp (SO_TIMESTAMPING or SO_TIMESTAMPNS),
    /// CLOCK_REALTIME ns.
    pub kernel_ns: Option<u64>,
    /// An error-queue entry (IP_RECVERR): a TX timestamp's key or an ICMP error.
    pub error: Option<ExtendedError>,
}

/// Reads the control messages of a message `recvmsg`/`recvmmsg` filled.
///
/// # Safety
/// `msg.msg_control`/`msg_controllen` must describe the control buffer the
/// kernel filled for this message (or be null/0).
pub unsafe fn control_messages(msg: &libc::msghdr) -> Control {
    let mut control = Control::default();
    // SAFETY (caller): the CMSG_* macros walk a control buffer the kernel filled.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            match (c.cmsg_level, c.cmsg_type) {
                // SCM_TIMESTAMPING's first timespec is the software stamp.
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPING | libc::SCM_TIMESTAMPNS) => {
                    let ts: libc::timespec = std::ptr::read_unaligned(data.cast());
                    control.kernel_ns = timespec_ns(&ts);
                }
                (libc::SOL_IP, libc::IP_RECVERR) => {
                    let ee: libc::sock_extended_err = std::ptr::read_unaligned(data.cast());
                    let offender: libc::sockaddr_in = std::ptr::read_unaligned(
                        data.add(size_of::<libc::sock_extended_err>()).cast(),
                    );
                    control.error = Some(ExtendedError {
                        origin: ee.ee_origin,
                        icmp_type: ee.ee_type,
                        icmp_code: ee.ee_code,
                        data: ee.ee_data,
                        offender: ipv4_of(&offender),
                    });
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    control
}

/// Nanoseconds of a kernel timestamp; the kernel writes zero for "none".
fn timespec_ns(ts: &libc::timespec) -> Option<u64> {
    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    (ns != 0).then_some(ns)
}

/// Where iproute2 keeps the bind mount of a named network namespace.
pub fn netns_path(name: &str) -> std::path::PathBuf {
    Path::new("/run/netns").join(name)
}

/// Moves the calling thread into the named network namespace
/// (`/run/netns/NAME`, as iproute2 and the lab make them). Sockets it opens
/// afterwards, and threads it spawns afterwards, live there; other threads
/// stay where they are.
pub fn enter_netns(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') {
        anyhow::bail!("invalid network namespace name '{name}'");
    }
    let file = File::open(netns_path(name))
        .with_context(|| format!("network namespace '{name}' does not exist"))?;
    setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(io::Error::from)
        .with_context(|| format!("cannot enter network namespace '{name}' (needs CAP_SYS_ADMIN)"))
}

/// Moves the calling thread into the network namespace at `path` (a
/// `/proc/PID/ns/net`, a `/run/netns` mount).
pub fn enter_netns_at(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// The IPv4 addresses of the calling thread's network namespace (none
/// when they cannot be listed).
pub fn interface_ipv4_addresses() -> Vec<Ipv4Addr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    interfaces
        .filter_map(|ifa| ifa.address?.as_sockaddr_in().map(|sin| sin.ip()))
        .collect()
}

/// Pins the calling thread (and threads it spawns later) to `cpu`.
pub fn pin_to_cpu(cpu: u32) -> Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu as usize)
        .map_err(io::Error::from)
        .with_context(|| format!("CPU {cpu} is out of range"))?;
    sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(io::Error::from)
        .with_context(|| format!("cannot pin to CPU {cpu}"))
}

/// How many CPUs the calling thread may run on.
pub fn allowed_cpus() -> io::Result<usize> {
    let set = sched_getaffinity(Pid::from_raw(0))?;
    Ok((0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .count())
}

/// The calling thread pinned to one CPU for a while: its previous affinity
/// comes back when this is dropped.
pub struct PinnedToCpu {
    previous: CpuSet,
}

impl PinnedToCpu {
    pub fn pin(cpu: u32) -> Result<Self> {
        let previous = sched_getaffinity(Pid::from_raw(0))
            .map_err(io::Error::from)
            .context("sched_getaffinity")?;
        pin_to_cpu(cpu)?;
        Ok(Self { previous })
    }
}

impl Drop for PinnedToCpu {
    fn drop(&mut self) {
        let _ = sched_setaffinity(Pid::from_raw(0), &self.previous);
    }
}

/// Copies the running binary to `dest` (mode 0755) and returns where it
/// was copied from. Written beside `dest` and renamed over it: whole or not
/// at all, so a plugin run never sees half a binary.
pub fn copy_this_binary(dest: &Path) -> Result<std::path::PathBuf> {
    let source = std::fs::read_link("/proc/self/exe").context("cannot find this binary")?;
    let partial = dest.with_extension("partial");
    std::fs::copy(&source, &partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::set_permissions(
        &partial,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .with_context(|| format!("cannot make {} executable", partial.display()))?;
    std::fs::rename(&partial, dest).with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_sockets_bind_connect_and_carry_a_datagram_with_its_kernel_timestamp() {
        let rx = socket(libc::SOCK_DGRAM, 0).unwrap();
        bind(&rx, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
        let to = local_addr(&rx).unwrap();
        assert_ne!(to.port(), 0);
        assert_eq!(enable_stamping(&rx), Stamping::TxRx);
        // `rx` keeps the stamps on once they are.
        assert!(wait_for_rx_timestamps(std::time::Duration::from_secs(5)));
        let tx = socket(libc::SOCK_DGRAM, 0).unwrap();
        connect(&tx, to).unwrap();
        assert_eq!(send_to(&tx, b"ping", None).unwrap(), 4);
        assert_eq!(send_to(&tx, b"pong!", Some(to)).unwrap(), 5);
        for expected in [4usize, 5] {
            let mut buf = [0u8; 64];
            let mut ctl = [0u64; 64];
            let mut from = sockaddr_in(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: all-zero is a valid msghdr; every pointer set below is live.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut from as *mut libc::sockaddr_in).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = ctl.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&ctl);
            // SAFETY: msg points to live buffers of the sizes given.
            let n = unsafe { libc::recvmsg(rx.as_raw_fd(), &mut msg, 0) };
            assert_eq!(n as usize, expected);
            assert_eq!(ipv4_of(&from), Some(Ipv4Addr::LOCALHOST));
            // SAFETY: the kernel filled the control buffer of `msg`.
            let control = unsafe { control_messages(&msg) };
            let now = crate::clock::realtime_ns();
            let stamp = control.kernel_ns.expect("an RX timestamp");
            assert!(
                stamp <= now && now - stamp < 10_000_000_000,
                "{stamp} vs {now}"
            );
            assert_eq!(control.error, None);
        }
    }

    #[test]
    fn the_route_source_of_loopback_is_loopback_and_bad_names_are_refused() {
        assert_eq!(
            route_source(Ipv4Addr::LOCALHOST).unwrap(),
            Ipv4Addr::LOCALHOST
        );
        assert!(interface_ipv4_addresses().contains(&Ipv4Addr::LOCALHOST));
        let err = enter_netns("../etc").unwrap_err();
        assert!(err.to_string().contains("invalid"), "{err}");
        let err = enter_netns("netstall-no-such-namespace").unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn a_pin_is_undone_when_dropped() {
        let before = allowed_cpus().unwrap();
        let cpu = crate::cpu::online().unwrap()[0];
        {
            let _pinned = PinnedToCpu::pin(cpu).unwrap();
            assert_eq!(allowed_cpus().unwrap(), 1);
        }
        assert_eq!(allowed_cpus().unwrap(), before);
        assert!(pin_to_cpu(1 << 20).is_err());
    }
}
