//! A stop request that every waiting thread wakes up for at once.
//!
//! Long-running work (the agent's threads, the tracer) waits on a
//! [`Shutdown`] instead of sleeping in short steps and looking at a flag in
//! between: an idle thread then costs no wake-ups at all (on a VM, each one
//! costs tens of microseconds of CPU), and stopping is immediate.
//!
//! The request is a socket pair whose reading end stays readable once a
//! byte was written, so it can sit in a `ppoll(2)` set beside other
//! descriptors (a BPF ring buffer's epoll fd, see [`Shutdown::wait_readable`]).
//! SIGINT and SIGTERM make the request through `signal-hook`
//! ([`Shutdown::on_signals`]): it sets the flag and writes the byte from
//! inside the handler.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A stop request, shared by the threads that should end on it.
#[derive(Debug)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
    /// Readable once a stop is requested (never drained).
    readable: UnixStream,
    /// Where a request writes its byte (non-blocking).
    writer: UnixStream,
}

/// The one [`Shutdown`] that SIGINT and SIGTERM request.
static ON_SIGNALS: OnceLock<Arc<Shutdown>> = OnceLock::new();

impl Shutdown {
    /// A shutdown nobody has requested yet.
    pub fn new() -> io::Result<Self> {
        let (readable, writer) = UnixStream::pair()?;
        writer.set_nonblocking(true)?;
        Ok(Self {
            requested: Arc::new(AtomicBool::new(false)),
            readable,
            writer,
        })
    }

    /// The process-wide shutdown that SIGINT and SIGTERM request: the
    /// command then finishes cleanly (summary printed, programs detached)
    /// instead of dying mid-way.
    pub fn on_signals() -> anyhow::Result<Arc<Self>> {
        use anyhow::Context;
        Self::register_on_signals().context("cannot set up the SIGINT/SIGTERM handling")
    }

    fn register_on_signals() -> io::Result<Arc<Self>> {
        if let Some(shutdown) = ON_SIGNALS.get() {
            return Ok(Arc::clone(shutdown));
        }
        let shutdown = Arc::new(Self::new()?);
        if ON_SIGNALS.set(Arc::clone(&shutdown)).is_err() {
            // Two first callers at once: the other one registers its own.
            return Ok(Arc::clone(
                ON_SIGNALS.get().expect("set by the other caller"),
            ));
        }
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&shutdown.requested))?;
            signal_hook::low_level::pipe::register(signal, shutdown.writer.try_clone()?)?;
        }
        Ok(shutdown)
    }

    /// Asks every waiter to stop.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        // It can only fail when the socket's buffer is full of earlier
        // requests, and then it is readable anyway.
        let _ = (&self.writer).write_all(&[1]);
    }

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Sleeps for `timeout` or until a stop is requested; true when it was.
    /// `Duration::MAX` waits without a limit.
    pub fn wait(&self, timeout: Duration) -> bool {
        let _ = self.wait_for(None, timeout);
        self.is_requested()
    }

    /// Waits until `fd` is readable, a stop is requested, or `timeout` has
    /// passed; true when `fd` is readable.
    pub fn wait_readable(&self, fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
        self.wait_for(Some(fd), timeout)
    }

    /// A descriptor that is readable once a stop is requested.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.readable.as_fd()
    }

    fn wait_for(&self, fd: Option<BorrowedFd<'_>>, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if self.is_requested() {
                return Ok(false);
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.readable.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: fd.map_or(-1, |fd| fd.as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ts = left.map(|left| libc::timespec {
                tv_sec: left.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            });
            let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |ts| ts as *const _);
            // SAFETY: `fds` and `ts` are live for the call; a negative fd is ignored.
            let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, ts_ptr, std::ptr::null()) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    // A signal: maybe the one that requests the stop.
                    if left.is_some_and(|l| l.is_zero()) {
                        return Ok(false);
                    }
                    continue;
                }
                return Err(err);
            }
            return Ok(fds[1].revents != 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_lasts_its_timeout_when_nobody_asks_to_stop() {
        let shutdown = Shutdown::new().unwrap();
        let started = Instant::now();
        assert!(!shutdown.wait(Duration::from_millis(50)));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(!shutdown.is_requested());
    }

    #[test]
    fn a_request_wakes_every_waiter_at_once() {
        let shutdown = Arc::new(Shutdown::new().unwrap());
        let started = Instant::now();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let shutdown = Arc::clone(&shutdown);
                std::thread::spawn(move || shutdown.wait(Duration::MAX))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        shutdown.request();
        for waiter in waiters {
            assert!(waiter.join().unwrap(), "every waiter sees the request");
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "woken by the request, not by a timeout: {:?}",
            started.elapsed()
        );
        // Stays requested: later waits return at once.
        let again = Instant::now();
        assert!(shutdown.wait(Duration::from_secs(60)));
        assert!(again.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn wait_readable_tells_a_readable_descriptor_from_a_stop() {
        let shutdown = Shutdown::new().unwrap();
        let other = Shutdown::new().unwrap();
        assert!(!shutdown
            .wait_readable(other.fd(), Duration::from_millis(10))
            .unwrap());
        other.request(); // its descriptor is now readable
        assert!(shutdown
            .wait_readable(other.fd(), Duration::from_secs(60))
            .unwrap());
        shutdown.request();
        let fresh = Shutdown::new().unwrap();
        assert!(!shutdown
            .wait_readable(fresh.fd(), Duration::from_secs(60))
            .unwrap());
    }

    #[test]
    fn sigterm_requests_the_process_wide_shutdown() {
        let shutdown = Shutdown::on_signals().unwrap();
        assert!(Arc::ptr_eq(&shutdown, &Shutdown::on_signals().unwrap()));
        signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
        assert!(
            shutdown.wait(Duration::from_secs(10)),
            "the handler requested the stop"
        );
        assert!(shutdown
            .wait_readable(Shutdown::new().unwrap().fd(), Duration::from_secs(10))
            .is_ok());
    }
}
