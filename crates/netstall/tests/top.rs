//! `netstall top`, for real, in a real terminal: tmux at 80x24 and 200x50
//! while `lab spin` stalls CPU 0 and probes cross the lab (their RX steered
//! to CPU 0); `tmux capture-pane` is what a person would see.

mod common;

use common::*;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netstall_testkit::{privileged, unique_prefix, MachineLock};

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            socket: format!("netstall-{}", unique_prefix()),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env("TERM", "xterm-256color")
            .output()
            .expect("tmux (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `script` (sh) in a detached window of `width` x `height`.
    fn start(&self, width: u16, height: u16, script: &str) {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "sh",
            "-c",
            script,
        ]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "top", keys]);
    }

    /// Waits until the screen satisfies `ok`; the last screen either way.
    fn wait_for(&self, timeout: Duration, ok: impl Fn(&str) -> bool) -> (bool, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return (true, screen);
            }
            if Instant::now() >= deadline {
                return (false, screen);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

/// `lab spin` in the background, killed (by its pid) when dropped.
struct Spin(Child);

impl Spin {
    fn start(duration: &str) -> Spin {
        Spin(
            Command::new(NETSTALL)
                .args([
                    "lab", "spin", "--cpu", "0", "--ms", "50", "--every", "500ms", "-w", duration,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start lab spin"),
        )
    }
}

impl Drop for Spin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shell line that runs `netstall top` and then shows how it ended:
/// its exit code, and whether the terminal's settings are as before.
fn run_and_report(dir: &Path, top: &str) -> String {
    let d = dir.display();
    format!(
        "stty -g > {d}/before; {top}; code=$?; stty -g > {d}/after; \
         echo \"top exited $code\"; cmp -s {d}/before {d}/after && echo 'terminal restored'; \
         echo 'end of report'; sleep 600"
    )
}

/// The lane line of `cpu` on a captured screen.
fn lane(screen: &str, cpu: u32) -> Option<&str> {
    let label = format!("cpu{cpu} ");
    screen.lines().find(|l| l.contains(&label))
}

fn has_stall_block(lane: &str) -> bool {
    // Outside the label and the stats, a lane has only cell glyphs: a
    // detector's letter is a stall block.
    lane.split_once("cpu")
        .map(|(_, rest)| rest.chars().any(|c| "SIBKR".contains(c)))
        .unwrap_or(false)
}

#[test]
fn top_shows_the_spinners_stall_and_its_frame_in_tmux_and_q_restores_the_terminal() {
    if !privileged("top_shows_the_spinners_stall_and_its_frame_in_tmux") {
        return;
    }
    let _lock = MachineLock::acquire();
    let lab = Lab::up("0");
    let dir = TempDir::new();
    for (width, height) in [(80u16, 24u16), (200, 50)] {
        let tmux = Tmux::new();
        let top = format!(
            "{NETSTALL} top --target 192.168.50.1:30080 --netns {} --probe-cpu 1 --refresh 250ms",
            lab.netns("cli")
        );
        tmux.start(width, height, &run_and_report(&dir.0, &top));
        let (up, screen) = tmux.wait_for(Duration::from_secs(60), |s| {
            s.contains("netstall top") && s.contains("culprits")
        });
        assert!(up, "top did not draw its screen:\n{screen}");

        // The spinner's BPF program is loaded after top's tracer (how a
        // symbol table read before such a load still names it is tested in
        // netstall-kernel's symbols tests).
        let spin = Spin::start("20s");
        let started = Instant::now();
        let (seen, screen) = tmux.wait_for(Duration::from_secs(5), |s| {
            lane(s, 0).is_some_and(has_stall_block) && s.contains("spin_in_softirq")
        });
        let took = started.elapsed();
        eprintln!("{width}x{height}: stall block and frame after {took:?}:\n{screen}");
        assert!(seen, "{width}x{height}: no stall block on cpu0's lane or no spin_in_softirq within 5 s:\n{screen}");
        assert_eq!(
            screen.lines().count(),
            height as usize,
            "the screen fits {width}x{height}"
        );
        assert!(
            screen.lines().all(|l| l.chars().count() <= width as usize),
            "{screen}"
        );
        drop(spin);

        // Enter opens the worst stall: its stack and packets.
        tmux.keys("Enter");
        let (detail, screen) = tmux.wait_for(Duration::from_secs(3), |s| {
            s.contains("kernel stack") && s.contains("packets that waited")
        });
        assert!(detail, "{screen}");

        tmux.keys("q");
        let (ended, screen) =
            tmux.wait_for(Duration::from_secs(10), |s| s.contains("end of report"));
        assert!(ended, "q did not end top:\n{screen}");
        assert!(screen.contains("top exited 0"), "{screen}");
        assert!(screen.contains("terminal restored"), "{screen}");
        assert!(
            !screen.contains("culprits"),
            "the alternate screen is left: {screen}"
        );
    }
}

#[test]
fn top_without_privileges_says_which_capability_in_one_line_and_leaves_the_terminal_alone() {
    if !privileged("top_without_privileges") {
        return;
    }
    let dir = TempDir::new();
    let tmux = Tmux::new();
    let err = dir.0.join("stderr");
    let top = format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all \
         {NETSTALL} top 2> {}",
        err.display()
    );
    tmux.start(80, 24, &run_and_report(&dir.0, &top));
    let (ended, screen) = tmux.wait_for(Duration::from_secs(20), |s| s.contains("end of report"));
    assert!(ended, "{screen}");
    assert!(screen.contains("top exited 2"), "{screen}");
    assert!(screen.contains("terminal restored"), "{screen}");
    // Nothing but the shell's two lines: top drew nothing.
    let shown: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        shown,
        ["top exited 2", "terminal restored", "end of report"],
        "{screen}"
    );
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("needs CAP_BPF"), "{stderr}");
}

#[test]
fn top_prints_plain_lines_when_stdout_is_not_a_terminal() {
    if !privileged("top_prints_plain_lines_when_stdout_is_not_a_terminal") {
        return;
    }
    // Loopback traffic runs NET_RX softirqs: their time must show.
    let traffic = std::thread::spawn(|| {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        rx.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(7) {
            for _ in 0..100 {
                let _ = tx.send(b"netstall top test");
            }
            while rx.recv(&mut buf).is_ok() {}
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    let out = netstall(&["top", "-w", "6s", "--no-sample", "--json"]);
    traffic.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out);
    let status = of_type(&lines, "top-status");
    assert!(!status.is_empty(), "a status line every 5 s: {lines:?}");
    let cpus = status[0]["cpus"].as_array().unwrap();
    assert_eq!(cpus.len(), netstall_core::cpu::online().unwrap().len());
    assert!(
        status[0]["bpf_ms_per_s"].as_f64().is_some(),
        "the tracer's cost is measured: {}",
        status[0]
    );
    assert!(status[0]["own_cpu_pct"].as_f64().is_some());
    let net_rx: f64 = cpus.iter().filter_map(|c| c["net_rx_pct"].as_f64()).sum();
    assert!(net_rx > 0.0, "NET_RX time is counted: {}", status[0]);
    // No escape sequence reached the pipe.
    assert!(!out.stdout.contains(&0x1b));
}

#[test]
fn top_rejects_a_refresh_faster_than_the_eye_needs() {
    let out = netstall(&["top", "--refresh", "50ms"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--refresh must be at least 200 ms"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
}

/// The pid of the pane's shell's child (the running `netstall top`).
fn top_pid(tmux: &Tmux) -> u32 {
    let shell = tmux.run(&["list-panes", "-t", "top", "-F", "#{pane_pid}"]);
    let shell = shell.trim();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
    children
        .split_whitespace()
        .next()
        .expect("top runs under the pane's shell")
        .parse()
        .unwrap()
}

#[test]
fn top_sigterm_ends_it_and_restores_the_terminal() {
    if !privileged("top_sigterm_ends_it_and_restores_the_terminal") {
        return;
    }
    let dir = TempDir::new();
    let tmux = Tmux::new();
    let top = format!("{NETSTALL} top --no-sample");
    tmux.start(80, 24, &run_and_report(&dir.0, &top));
    let (up, screen) = tmux.wait_for(Duration::from_secs(60), |s| s.contains("culprits"));
    assert!(up, "top did not draw its screen:\n{screen}");
    let pid = top_pid(&tmux);
    // SAFETY: kill(2) on the pid of the process this test started (in its tmux).
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let (ended, screen) = tmux.wait_for(Duration::from_secs(10), |s| s.contains("end of report"));
    assert!(ended, "SIGTERM did not end top:\n{screen}");
    assert!(screen.contains("top exited 0"), "{screen}");
    assert!(screen.contains("terminal restored"), "{screen}");
    assert!(!screen.contains("culprits"), "{screen}");
}

#[test]
fn top_ctrl_c_quits_and_restores_the_terminal() {
    if !privileged("top_ctrl_c_quits_and_restores_the_terminal") {
        return;
    }
    let dir = TempDir::new();
    let tmux = Tmux::new();
    let top = format!("{NETSTALL} top --no-sample");
    tmux.start(80, 24, &run_and_report(&dir.0, &top));
    let (up, screen) = tmux.wait_for(Duration::from_secs(60), |s| s.contains("culprits"));
    assert!(up, "top did not draw its screen:\n{screen}");
    // A resized terminal is redrawn to its new size.
    tmux.run(&["resize-window", "-t", "top", "-x", "120", "-y", "30"]);
    let (resized, screen) = tmux.wait_for(Duration::from_secs(5), |s| {
        s.lines().count() == 30
            && s.lines()
                .last()
                .is_some_and(|l| l.chars().count() == 120 && l.ends_with("q quit"))
    });
    assert!(resized, "not redrawn at 120x30:\n{screen}");
    // Raw mode: Ctrl-C arrives as a key, not as SIGINT.
    tmux.keys("C-c");
    let (ended, screen) = tmux.wait_for(Duration::from_secs(10), |s| s.contains("end of report"));
    assert!(ended, "Ctrl-C did not end top:\n{screen}");
    assert!(screen.contains("top exited 0"), "{screen}");
    assert!(screen.contains("terminal restored"), "{screen}");
    assert!(!screen.contains("culprits"), "{screen}");
}

#[test]
fn top_help_has_the_keys_and_examples() {
    let out = netstall(&["top", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Examples:",
        "netstall top --target",
        "q or Ctrl-C quit",
        "CAP_BPF",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}
