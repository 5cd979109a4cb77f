//! `lab throttle`: CPU throttling of the pod (CFS quota). The pod's HTTP
//! server is moved into a CPU cgroup with a small quota (20 ms per 100 ms)
//! that it shares with a busy process: the busy process spends the quota
//! early in each period, and the server's answers wait for the next one
//! (measured here: HTTP 45–72 ms while SYN and ICMP stay at 0.1 ms).
//!
//! Bounded and reversible: the busy process ends by itself after the
//! injection's length (bash's `$SECONDS`, no fork per turn) and is killed
//! by its pid at the end or on Ctrl-C; the server goes back to its cgroup
//! and the cgroup is removed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netstall_core::output::Output;
use netstall_core::shutdown::Shutdown;
pub use netstall_events::lab::LabThrottle;
use netstall_events::lab::Role;

use netstall_kernel::throttle::cpu_cgroup_of;

use crate::topology;

/// The lab's quota: 20 ms of CPU per 100 ms period.
pub const QUOTA: Duration = Duration::from_millis(20);
pub const PERIOD: Duration = Duration::from_millis(100);
/// An injection longer than this is a mistake, not an experiment.
pub const MAX_THROTTLE_FOR: Duration = Duration::from_secs(3600);

/// The cpu controller's hierarchy: its mount and cgroup version.
fn hierarchy() -> Result<(PathBuf, u8)> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    netstall_kernel::throttle::cpu_hierarchy(&mountinfo)
        .context("no cgroup hierarchy with the cpu controller is mounted")
}

/// A CPU cgroup with a CFS quota, processes moved into it, and a busy
/// process sharing it. Dropping it kills the busy process, moves the
/// processes back where they were and removes the cgroup.
pub struct ThrottledCgroup {
    mount: PathBuf,
    version: u8,
    /// The cgroup's path from the hierarchy's root.
    path: String,
    /// Moved processes and the cgroup each came from.
    moved: Vec<(u32, String)>,
    busy: Option<Child>,
}

impl ThrottledCgroup {
    /// Creates cgroup `name` under the cpu hierarchy's root with `quota` per `period`.
    pub fn create(name: &str, quota: Duration, period: Duration) -> Result<Self> {
        let (mount, version) = hierarchy()?;
        let path = format!("/{name}");
        let dir = mount.join(name);
        // One left by an injection that was killed (empty once its
        // processes are gone) is replaced.
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir)
            .with_context(|| format!("create the cgroup {}", dir.display()))?;
        let cgroup = Self {
            mount,
            version,
            path,
            moved: Vec::new(),
            busy: None,
        };
        let (quota_us, period_us) = (quota.as_micros(), period.as_micros());
        let set = if version == 2 {
            write(&dir.join("cpu.max"), &format!("{quota_us} {period_us}"))
        } else {
            write(&dir.join("cpu.cfs_period_us"), &period_us.to_string())
                .and_then(|()| write(&dir.join("cpu.cfs_quota_us"), &quota_us.to_string()))
        };
        set.context("set the cgroup's CPU quota")?;
        Ok(cgroup)
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    fn dir(&self) -> PathBuf {
        self.mount.join(self.path.trim_start_matches('/'))
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&mut self, pid: u32) -> Result<()> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .with_context(|| format!("process {pid} is gone"))?;
        let from = cpu_cgroup_of(&text, self.version)
            .with_context(|| format!("process {pid} has no cpu cgroup"))?;
        write(&self.dir().join("cgroup.procs"), &pid.to_string())
            .with_context(|| format!("move process {pid} into {}", self.path))?;
        self.moved.push((pid, from));
        Ok(())
    }

    /// Starts a busy process in the cgroup that ends by itself after `for_`.
    pub fn spin(&mut self, for_: Duration) -> Result<u32> {
        let script = format!("while [ $SECONDS -lt {} ]; do :; done", for_.as_secs() + 1);
        let child = Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("start the busy process (bash)")?;
        let pid = child.id();
        self.busy = Some(child);
        write(&self.dir().join("cgroup.procs"), &pid.to_string())
            .context("move the busy process into the cgroup")?;
        Ok(pid)
    }
}

impl Drop for ThrottledCgroup {
    fn drop(&mut self) {
        if let Some(mut child) = self.busy.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (pid, from) in &self.moved {
            let back = self.mount.join(from.trim_start_matches('/'));
            let _ = write(&back.join("cgroup.procs"), &pid.to_string());
        }
        // The kernel lets a cgroup go once its last task has left.
        let dir = self.dir();
        for _ in 0..50 {
            if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("write {value} to {}", path.display()))
}

/// The cgroup `lab throttle` uses for a lab.
pub fn cgroup_name(prefix: &str) -> String {
    format!("netstall-{prefix}-throttle")
}

/// `netstall lab throttle`'s arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Name prefix of the lab.
    #[arg(long, default_value = "nst")]
    pub prefix: String,
    /// How long to throttle.
    #[arg(short = 'w', long = "duration", value_parser = netstall_core::duration::parse_nonzero)]
    pub duration: Duration,
}

/// `lab throttle`: the pod's HTTP server shares a CPU cgroup of [`QUOTA`]
/// per [`PERIOD`] with a busy process for `duration` (or until Ctrl-C);
/// then everything is put back.
pub fn throttle_printed(args: &Args, out: Output) -> Result<LabThrottle> {
    let (prefix, duration) = (args.prefix.as_str(), args.duration);
    if duration > MAX_THROTTLE_FOR {
        bail!("-w must be at most {}s", MAX_THROTTLE_FOR.as_secs());
    }
    netstall_core::privilege::require_root("lab throttle")?;
    let status = topology::status(prefix)?;
    let server = status
        .responders
        .iter()
        .find(|r| r.role == Role::Pod)
        .map(|r| r.pid)
        .with_context(|| format!("lab '{prefix}' has no pod responder"))?;
    let shutdown = Shutdown::on_signals()?;
    let mut cgroup = ThrottledCgroup::create(&cgroup_name(prefix), QUOTA, PERIOD)?;
    cgroup.add(server)?;
    let busy = cgroup.spin(duration)?;
    let start_ns = netstall_core::clock::realtime_ns();
    out.progress(format!(
        "lab '{prefix}': the pod's HTTP server (pid {server}) shares cgroup {} (quota {QUOTA:?} per {PERIOD:?}) with a busy process (pid {busy}) for {duration:?}; Ctrl-C ends early",
        cgroup.path()
    ));
    let deadline = Instant::now() + duration;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if shutdown.wait(left.min(Duration::from_millis(200))) {
            break;
        }
    }
    let report = LabThrottle {
        prefix: prefix.to_owned(),
        cgroup: cgroup.path().to_owned(),
        quota_ms: QUOTA.as_secs_f64() * 1e3,
        period_ms: PERIOD.as_secs_f64() * 1e3,
        server_pid: server,
        start_ns,
        end_ns: netstall_core::clock::realtime_ns(),
    };
    drop(cgroup);
    out.emit(report.clone());
    Ok(report)
}
