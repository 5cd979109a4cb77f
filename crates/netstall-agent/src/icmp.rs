//! One raw ICMP socket for the whole mesh: echo requests out, echo replies
//! in with the kernel's receive timestamp. The socket filters out every
//! ICMP type but echo reply in the kernel, so a busy node's other ICMP
//! traffic never wakes the agent.

use std::io;
use std::mem::{size_of, size_of_val, zeroed};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result};
use netstall_core::privilege::{self, Capability};

/// `ICMP_FILTER` (linux/icmp.h): a bit set per ICMP type to drop.
const ICMP_FILTER: libc::c_int = 1;
const ICMP_ECHO_REPLY: u32 = 0;

/// An echo reply read from the socket.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub from: Ipv4Addr,
    /// When the kernel received it (CLOCK_REALTIME ns), if stamped.
    pub kernel_ns: Option<u64>,
}

/// The mesh's raw ICMP socket (non-blocking).
pub struct IcmpSocket {
    fd: OwnedFd,
}

impl IcmpSocket {
    /// Opens the socket; needs CAP_NET_RAW.
    pub fn open() -> Result<Self> {
        privilege::require(&[Capability::NetRaw], "mesh probing (ICMP)")?;
        // SAFETY: plain socket(2); the fd is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("cannot open a raw ICMP socket");
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let socket = Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        };
        let drop_all_but_replies: u32 = !(1 << ICMP_ECHO_REPLY);
        socket
            .set(libc::SOL_RAW, ICMP_FILTER, &drop_all_but_replies)
            .context("ICMP_FILTER")?;
        let one: libc::c_int = 1;
        socket
            .set(libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &one)
            .context("SO_TIMESTAMPNS")?;
        Ok(socket)
    }

    fn set<T>(&self, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` points to a live T of the size given.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
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

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends an ICMP message (header and payload) to `to`.
    pub fn send(&self, message: &[u8], to: Ipv4Addr) -> io::Result<()> {
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(to).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `message` and `sa` are valid for the call.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads one datagram (IP header included) without blocking.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let mut control = [0u64; 16]; // aligned room for one timespec cmsg
                                      // SAFETY: zeroed sockaddr_in / msghdr are valid starting values.
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
        // SAFETY: msg points to live buffers of the sizes given.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(err),
            };
        }
        let mut kernel_ns = None;
        // SAFETY: the CMSG_* macros walk the control buffer the kernel filled.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                let c = &*cmsg;
                if (c.cmsg_level, c.cmsg_type) == (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
                    kernel_ns = (ns != 0).then_some(ns);
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Ok(Some(Received {
            len: n as usize,
            from: Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr)),
            kernel_ns,
        }))
    }
}
