//! The thin layer over libc the probers need: sockets with kernel
//! timestamps, `recvmsg` with control messages, the error queue, CPU pinning
//! and entering a named network namespace.

use std::fs::File;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result};

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
    /// How the session reports it.
    pub fn describe(self) -> &'static str {
        match self {
            Stamping::TxRx => "kernel TX+RX (SO_TIMESTAMPING)",
            Stamping::RxOnly => "kernel RX (SO_TIMESTAMPNS), user TX",
            Stamping::None => "user space",
        }
    }
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A new AF_INET socket, close-on-exec.
pub fn socket(kind: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned from here on.
    let fd = check(unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, protocol) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size given.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Turns on the best kernel timestamps the socket supports.
pub fn enable_stamping(fd: RawFd) -> Stamping {
    let flags: libc::c_uint = libc::SOF_TIMESTAMPING_TX_SOFTWARE
        | libc::SOF_TIMESTAMPING_RX_SOFTWARE
        | libc::SOF_TIMESTAMPING_SOFTWARE
        | libc::SOF_TIMESTAMPING_OPT_ID
        | libc::SOF_TIMESTAMPING_OPT_TSONLY;
    if setsockopt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, &flags).is_ok() {
        return Stamping::TxRx;
    }
    let one: libc::c_int = 1;
    if setsockopt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &one).is_ok() {
        return Stamping::RxOnly;
    }
    Stamping::None
}

/// Asks for ICMP errors on the error queue (UDP port unreachable).
pub fn enable_recverr(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    setsockopt(fd, libc::SOL_IP, libc::IP_RECVERR, &one)
}

/// A larger receive buffer, so a burst of replies released together (and
/// their TX timestamps, queued against the same budget) is not dropped.
/// Beyond `net.core.rmem_max` only with CAP_NET_ADMIN (SO_RCVBUFFORCE).
pub fn grow_receive_buffer(fd: RawFd, bytes: libc::c_int) {
    // Best effort: the default still works at ordinary rates.
    if setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &bytes).is_err() {
        let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &bytes);
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    )
}

/// Binds the socket to `addr` (port 0: the kernel picks a free one).
pub fn bind(fd: RawFd, addr: SocketAddrV4) -> io::Result<()> {
    let sa = sockaddr(addr);
    // SAFETY: `sa` is a valid sockaddr_in for the call.
    check(unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Connects the socket (for UDP: fixes the peer and routes ICMP errors to it).
pub fn connect(fd: RawFd, addr: SocketAddrV4) -> io::Result<()> {
    let sa = sockaddr(addr);
    // SAFETY: `sa` is a valid sockaddr_in for the call.
    check(unsafe {
        libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The address the socket is bound to.
pub fn local_addr(fd: RawFd) -> io::Result<SocketAddrV4> {
    // SAFETY: zeroed sockaddr_in is valid; getsockname fills at most `len` bytes.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    check(unsafe { libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_in).cast(), &mut len) })?;
    Ok(from_sockaddr(&sa))
}

/// The source address the kernel would use towards `target`, or the routing
/// error (no route, network unreachable) as a one-line reason.
pub fn route_source(target: Ipv4Addr) -> Result<Ipv4Addr> {
    let fd = socket(libc::SOCK_DGRAM, 0).context("cannot open a UDP socket")?;
    connect(fd.as_raw_fd(), SocketAddrV4::new(target, 9))
        .with_context(|| format!("target {target} is unreachable"))?;
    Ok(*local_addr(fd.as_raw_fd())?.ip())
}

/// `sendto` without blocking forever; returns the bytes sent.
pub fn send_to(fd: RawFd, data: &[u8], to: Option<SocketAddrV4>) -> io::Result<usize> {
    let sa = to.map(sockaddr);
    let (ptr, len) = match &sa {
        Some(sa) => (
            (sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: data and the optional address are valid for the call.
    let n = unsafe { libc::sendto(fd, data.as_ptr().cast(), data.len(), 0, ptr, len) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
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

/// One message read from a socket.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    /// The kernel's software timestamp, CLOCK_REALTIME ns.
    pub kernel_ns: Option<u64>,
    pub error: Option<ExtendedError>,
    pub from: Option<Ipv4Addr>,
}

/// Reads one message without blocking; `Ok(None)` when there is none.
/// `errqueue` reads the error queue (TX timestamps, ICMP errors) instead.
pub fn recv(fd: RawFd, buf: &mut [u8], errqueue: bool) -> io::Result<Option<Received>> {
    let mut control = [0u64; 64]; // 512 bytes, aligned for cmsghdr
                                  // SAFETY: zeroed sockaddr_in/msghdr are valid starting values.
    let mut from: libc::sockaddr_in = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    let flags = libc::MSG_DONTWAIT | if errqueue { libc::MSG_ERRQUEUE } else { 0 };
    // SAFETY: msg points to live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.kind() {
            io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(err),
        };
    }
    let mut received = Received {
        len: n as usize,
        kernel_ns: None,
        error: None,
        from: (msg.msg_namelen as usize >= size_of::<libc::sockaddr_in>()
            && from.sin_family == libc::AF_INET as libc::sa_family_t)
            .then(|| *from_sockaddr(&from).ip()),
    };
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            match (c.cmsg_level, c.cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPING) => {
                    let ts: libc::timespec = std::ptr::read_unaligned(data.cast());
                    received.kernel_ns = timespec_ns(&ts);
                }
                (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                    let ts: libc::timespec = std::ptr::read_unaligned(data.cast());
                    received.kernel_ns = timespec_ns(&ts);
                }
                (libc::SOL_IP, libc::IP_RECVERR) => {
                    let ee: libc::sock_extended_err = std::ptr::read_unaligned(data.cast());
                    let offender: libc::sockaddr_in = std::ptr::read_unaligned(
                        data.add(size_of::<libc::sock_extended_err>()).cast(),
                    );
                    received.error = Some(ExtendedError {
                        origin: ee.ee_origin,
                        icmp_type: ee.ee_type,
                        icmp_code: ee.ee_code,
                        data: ee.ee_data,
                        offender: (offender.sin_family == libc::AF_INET as libc::sa_family_t)
                            .then(|| *from_sockaddr(&offender).ip()),
                    });
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Some(received))
}

fn timespec_ns(ts: &libc::timespec) -> Option<u64> {
    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    (ns != 0).then_some(ns)
}

/// Waits until one of `fds` is readable or has a queued error, or `timeout_ms`.
/// Returns, per fd, whether it has data (`POLLIN`) and errors (`POLLERR`).
pub fn poll(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<(bool, bool)>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: pfds is a valid array of its length.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![(false, false); fds.len()]);
        }
        return Err(err);
    }
    Ok(pfds
        .iter()
        .map(|p| {
            (
                p.revents & libc::POLLIN != 0,
                p.revents & libc::POLLERR != 0,
            )
        })
        .collect())
}

/// Pins the calling thread (and threads it spawns later) to `cpu`.
pub fn pin_to_cpu(cpu: u32) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays within its bounds
    // for any cpu < CPU_SETSIZE, checked first.
    unsafe {
        anyhow::ensure!(
            (cpu as usize) < libc::CPU_SETSIZE as usize,
            "CPU {cpu} is out of range"
        );
        let mut set: libc::cpu_set_t = zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("cannot pin the prober to CPU {cpu}"));
        }
    }
    Ok(())
}

/// Makes timer wake-ups of the calling thread exact (the default slack is 50 µs).
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
}

/// Moves the calling thread into the named network namespace (`/run/netns/NAME`,
/// as iproute2 and the lab make them). Threads it spawns afterwards follow.
pub fn enter_netns(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') {
        anyhow::bail!("invalid network namespace name '{name}'");
    }
    let path = std::path::Path::new("/run/netns").join(name);
    let file =
        File::open(&path).with_context(|| format!("network namespace '{name}' does not exist"))?;
    // SAFETY: the fd is valid while `file` lives; CLONE_NEWNET only changes this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error()).with_context(|| {
            format!("cannot enter network namespace '{name}' (needs CAP_SYS_ADMIN)")
        });
    }
    Ok(())
}

/// Sleeps until `deadline_ns` on CLOCK_MONOTONIC (absolute, so no drift).
pub fn sleep_until_monotonic(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is valid; EINTR just returns early and the caller re-checks the clock.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// Gives the calling thread the lowest real-time priority (SCHED_FIFO 1), so
/// ordinary load on its CPU cannot delay its sends; threads it spawns later
/// go back to normal scheduling. Returns false where that is not permitted.
pub fn make_realtime() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: plain syscall on the calling thread with a valid sched_param.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) == 0
    }
}
