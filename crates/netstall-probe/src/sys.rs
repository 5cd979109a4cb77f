//! What only the probers need beyond [`netstall_core::sys`]: `recvmsg` into
//! a probe's buffer (with the kernel timestamp or queued error that came
//! with it), `poll` over the wire's sockets, and the scheduling knobs of the
//! sender thread. Sockets, their options, namespaces and CPU pinning are
//! the shared ones, re-exported here.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

pub use netstall_core::sys::{
    bind, connect, enable_recverr, enable_stamping, enter_netns, grow_receive_buffer, local_addr,
    pin_to_cpu, route_source, send_to, socket, wait_for_rx_timestamps, ExtendedError, Stamping,
    ORIGIN_ICMP, ORIGIN_TIMESTAMPING,
};
use netstall_core::sys::{control_messages, ipv4_of};

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
                                  // SAFETY: zeroed sockaddr_in/msghdr are valid starting values (family 0:
                                  // "no sender" unless the kernel fills it).
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
    // SAFETY: the kernel filled `control` for this message.
    let control = unsafe { control_messages(&msg) };
    Ok(Some(Received {
        len: n as usize,
        kernel_ns: control.kernel_ns,
        error: control.error,
        from: (msg.msg_namelen as usize >= size_of::<libc::sockaddr_in>())
            .then(|| ipv4_of(&from))
            .flatten(),
    }))
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

/// Makes timer wake-ups of the calling thread exact (the default slack is 50 µs).
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
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
