//! One raw ICMP socket for the whole mesh: echo requests out, echo replies
//! in with the kernel's receive timestamp. The socket filters out every
//! ICMP type but echo reply in the kernel, so a busy node's other ICMP
//! traffic never wakes the agent.

use std::io;
use std::mem::{size_of, size_of_val, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use netstall_core::privilege::{self, Capability};
use netstall_core::sys;

/// `ICMP_FILTER` (linux/icmp.h): a bit set per ICMP type to drop.
const ICMP_FILTER: libc::c_int = 1;
const ICMP_ECHO_REPLY: u32 = 0;

/// Where a datagram read from the socket came from, and when.
#[derive(Debug, Clone, Copy)]
pub struct Received {
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
        let fd = sys::socket(libc::SOCK_RAW | libc::SOCK_NONBLOCK, libc::IPPROTO_ICMP)
            .context("cannot open a raw ICMP socket")?;
        let drop_all_but_replies: u32 = !(1 << ICMP_ECHO_REPLY);
        sys::set_option(&fd, libc::SOL_RAW, ICMP_FILTER, &drop_all_but_replies)
            .context("ICMP_FILTER")?;
        sys::enable_rx_stamping(&fd).context("SO_TIMESTAMPNS")?;
        // Don't fragment: a 52-byte probe never needs it, and without DF the
        // kernel draws a random IP ID for every packet.
        let dont_fragment: libc::c_int = libc::IP_PMTUDISC_DO;
        sys::set_option(&fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, &dont_fragment)
            .context("IP_MTU_DISCOVER")?;
        Ok(Self { fd })
    }

    /// Sends each message to its address with as few sendmmsg(2) calls as
    /// the kernel allows (one per round of probes, normally); returns
    /// whether each went out.
    pub fn send_each(&self, messages: &[(&[u8], Ipv4Addr)]) -> Vec<io::Result<()>> {
        let mut addrs: Vec<libc::sockaddr_in> = messages
            .iter()
            .map(|&(_, addr)| sys::sockaddr_in(SocketAddrV4::new(addr, 0)))
            .collect();
        // sendmmsg(2) only reads the messages; iovec just has no const form.
        let mut iovs: Vec<libc::iovec> = messages
            .iter()
            .map(|(m, _)| libc::iovec {
                iov_base: m.as_ptr().cast_mut().cast(),
                iov_len: m.len(),
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(addrs.iter_mut())
            .map(|(iov, addr)| message_header(addr, iov))
            .collect();
        let mut results = Vec::with_capacity(messages.len());
        while results.len() < headers.len() {
            let rest = &mut headers[results.len()..];
            // SAFETY: every header points to a live address and message.
            let n = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_uint,
                    0,
                )
            };
            if n < 0 {
                // The first message of the rest failed (an unroutable peer):
                // it is lost, the others are still sent.
                results.push(Err(io::Error::last_os_error()));
            } else {
                results.extend((0..n).map(|_| Ok(())));
            }
        }
        results
    }

    /// Reads the datagrams waiting (IP header included) without blocking,
    /// up to `batch.len()` per recvmmsg(2) call; `on_datagram` gets each.
    pub fn recv_waiting(
        &self,
        batch: &mut RecvBatch,
        mut on_datagram: impl FnMut(&[u8], Received),
    ) -> io::Result<()> {
        loop {
            let slots = batch.buffers.len();
            // SAFETY: all-zero bytes are a valid sockaddr_in.
            let mut from: Vec<libc::sockaddr_in> = vec![unsafe { zeroed() }; slots];
            let mut iovs: Vec<libc::iovec> = batch
                .buffers
                .iter_mut()
                .map(|b| libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: b.len(),
                })
                .collect();
            let mut headers: Vec<libc::mmsghdr> = iovs
                .iter_mut()
                .zip(from.iter_mut())
                .zip(batch.controls.iter_mut())
                .map(|((iov, from), control)| {
                    let mut hdr = message_header(from, iov);
                    hdr.msg_hdr.msg_control = control.as_mut_ptr().cast();
                    hdr.msg_hdr.msg_controllen = size_of_val(control);
                    hdr
                })
                .collect();
            // SAFETY: every header points to live buffers of the sizes given.
            let n = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    headers.as_mut_ptr(),
                    slots as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                return match err.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(()),
                    _ => Err(err),
                };
            }
            let n = n as usize;
            for (i, hdr) in headers.iter().take(n).enumerate() {
                let len = (hdr.msg_len as usize).min(batch.buffers[i].len());
                let received = Received {
                    from: Ipv4Addr::from(u32::from_be(from[i].sin_addr.s_addr)),
                    // SAFETY: the kernel filled this message's control buffer.
                    kernel_ns: unsafe { sys::control_messages(&hdr.msg_hdr) }.kernel_ns,
                };
                on_datagram(&batch.buffers[i][..len], received);
            }
            if n < slots {
                return Ok(());
            }
        }
    }
}

/// Room for the datagrams one recvmmsg(2) call reads.
pub struct RecvBatch {
    buffers: Vec<[u8; DATAGRAM_ROOM]>,
    /// Aligned room for one timestamp control message per datagram.
    controls: Vec<[u64; 8]>,
}

/// Bytes kept of each datagram: an echo reply of ours is 52 (IP header,
/// ICMP header, payload); longer ones are someone else's and are cut.
const DATAGRAM_ROOM: usize = 256;

impl RecvBatch {
    pub fn new(slots: usize) -> Self {
        Self {
            buffers: vec![[0; DATAGRAM_ROOM]; slots.max(1)],
            controls: vec![[0; 8]; slots.max(1)],
        }
    }
}

/// The header of one message of a sendmmsg(2) or recvmmsg(2) call: its
/// peer's address and its one buffer. The header points into both, so they
/// must outlive the call it is passed to.
fn message_header(addr: &mut libc::sockaddr_in, iov: &mut libc::iovec) -> libc::mmsghdr {
    // SAFETY: all-zero bytes are a valid mmsghdr (null pointers, no control data).
    let mut hdr: libc::mmsghdr = unsafe { zeroed() };
    hdr.msg_hdr.msg_name = (addr as *mut libc::sockaddr_in).cast();
    hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    hdr.msg_hdr.msg_iov = iov;
    hdr.msg_hdr.msg_iovlen = 1;
    hdr
}
