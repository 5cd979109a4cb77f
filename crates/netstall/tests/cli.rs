//! The command line: help everywhere, and bad input gives one line and exit 2.

mod common;

use common::*;

use std::process::{Command, Output};

use netstall_testkit::privileged;

/// Asserts exit code 2 and a one-line reason containing `needle`.
fn assert_usage_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains(needle), "expected '{needle}' in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The commands a help text lists (its "Commands:" section), but `help`.
fn listed_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// `netstall ARGS --help` of every command and subcommand, walked from
/// the top-level help down: (the arguments, the help text).
fn every_help() -> Vec<(Vec<String>, String)> {
    let mut helps = Vec::new();
    let mut pending: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = netstall(&args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for sub in listed_commands(&text) {
            let mut sub_path = path.clone();
            sub_path.push(sub);
            pending.push(sub_path);
        }
        helps.push((path, text));
    }
    helps
}

#[test]
fn every_command_has_help_with_examples() {
    let helps = every_help();
    let commands: Vec<String> = helps
        .iter()
        .filter(|(path, _)| path.len() == 1)
        .map(|(path, _)| path[0].clone())
        .collect();
    for expected in [
        "demo",
        "doctor",
        "probe",
        "trace",
        "xray",
        "collapse",
        "flame",
        "cgroups",
        "bisect",
        "agent",
        "check",
        "lab",
        "responder",
        "top",
        "kubectl",
        "copy-binary",
        "completions",
        "man",
    ] {
        assert!(
            commands.iter().any(|c| c == expected),
            "`netstall --help` does not list {expected}: {commands:?}"
        );
    }
    for sub in [
        "up", "down", "status", "rps", "zombies", "poller", "spin", "clean",
    ] {
        assert!(
            helps.iter().any(|(path, _)| path == &["lab", sub]),
            "lab {sub} was not reached"
        );
    }
    for (path, text) in &helps {
        assert!(text.contains("Usage: netstall"), "{path:?}");
        assert!(text.contains("--json"), "{path:?} lacks --json");
        // An "Examples:" section with at least one command line in it.
        let examples: Vec<&str> = text
            .lines()
            .skip_while(|l| l.trim_end() != "Examples:")
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .collect();
        assert!(
            examples.iter().any(|l| l.contains("netstall ")),
            "`netstall {} --help` has no examples:\n{text}",
            path.join(" ")
        );
    }
    // The long help is not hidden by a one-line summary: `--help` says
    // more than `-h` for the commands that have a long description.
    for command in ["agent", "probe", "top", "collapse", "doctor"] {
        let short = netstall(&[command, "-h"]);
        let long = netstall(&[command, "--help"]);
        assert!(
            long.stdout.len() > short.stdout.len() + 100,
            "`netstall {command} --help` is no longer than -h"
        );
    }
}

#[test]
fn completions_name_every_command() {
    let commands = listed_commands(&String::from_utf8_lossy(&netstall(&["--help"]).stdout));
    assert!(commands.len() >= 15, "{commands:?}");
    for shell in ["bash", "zsh", "fish"] {
        let out = netstall(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        for command in &commands {
            assert!(script.contains(command.as_str()), "{shell}: no {command}");
        }
        // Flags of subcommands, nested subcommands and value sets too.
        for word in ["dying-memcg-limit", "zombies", "ksoftirqd"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    // bash sources the script and completes with it: a command from its
    // prefix, and a flag's values.
    let script = String::from_utf8(netstall(&["completions", "bash"]).stdout).unwrap();
    let complete = |words: &[&str]| -> String {
        let program = format!(
            "{script}\nCOMP_WORDS=({words}); COMP_CWORD={cword}; \
             _netstall netstall \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             echo \"${{COMPREPLY[*]}}\"",
            words = words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            cword = words.len() - 1,
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &program])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(complete(&["netstall", "pro"]), "probe");
    assert_eq!(
        complete(&["netstall", "xray", "--before", ""]),
        "stall ksoftirqd"
    );
    let out = netstall(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'tcsh'"));
}

#[test]
fn the_man_page_documents_every_command() {
    let out = netstall(&["man"]);
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH netstall 1"),
        "{page}"
    );
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for command in ["probe", "doctor", "agent", "completions"] {
        assert!(
            page.contains(&format!("netstall\\-{command}")),
            "no {command}:\n{page}"
        );
    }
    let tmp = TempDir::new();
    let out = netstall(&["man", "--dir", tmp.0.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    for name in [
        "netstall.1",
        "netstall-probe.1",
        "netstall-lab-up.1",
        "netstall-kubectl-status.1",
    ] {
        let page =
            std::fs::read_to_string(tmp.0.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(page.contains(".SH NAME"), "{name}");
    }
    // The examples made it into each command's page.
    let probe = std::fs::read_to_string(tmp.0.join("netstall-probe.1")).unwrap();
    assert!(probe.contains("Examples:"), "{probe}");
    // And man renders it, when man is installed.
    if std::path::Path::new("/usr/bin/man").exists() {
        let out = std::process::Command::new("man")
            .arg("-l")
            .arg(tmp.0.join("netstall-probe.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("netstall-probe"));
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = netstall(&["lab", "explode"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand 'explode'"));
}

#[test]
fn with_json_a_failure_ends_stdout_with_an_error_record() {
    // A usage error, and an error while running: both end in the record
    // (and the same one line on stderr).
    for (args, needle) in [
        (
            &["--json", "lab", "explode"][..],
            "unrecognized subcommand 'explode'",
        ),
        (
            &["doctor", "--replay", "/nonexistent/run.jsonl", "--json"][..],
            "/nonexistent/run.jsonl",
        ),
    ] {
        let out = netstall(args);
        assert_usage_error(&out, needle);
        let lines = json_lines(&out);
        let last = lines.last().expect("an error record");
        assert_eq!(last["type"], "error", "{args:?}: {lines:?}");
        assert_eq!(last["exit_code"], 2);
        assert!(last["message"].as_str().unwrap().contains(needle), "{last}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr
                .trim_end()
                .ends_with(last["message"].as_str().unwrap()),
            "{stderr} vs {last}"
        );
    }
    // Without --json, stdout stays empty.
    let out = netstall(&["doctor", "--replay", "/nonexistent/run.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn the_printed_config_is_a_config_file_that_reads_back_the_same() {
    let dir = std::env::temp_dir().join(format!("netstall-print-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let flags = [
        "agent",
        "--listen",
        "127.0.0.1:19977",
        "--node-name",
        "node \"a\"",
        "--peers",
        "b=10.0.0.2,10.0.0.3",
        "--peers-dns",
        "agents.netstall.svc",
        "--stall-threshold",
        "15ms",
        "--problem-window",
        "1h 30m",
        "--tracer",
        "false",
        "--event-log",
        "/var/log/netstall.jsonl",
        "--remediate",
        "drain",
        "--reboot-command",
        "systemctl reboot",
        "--min-healthy",
        "3",
        "--print-config",
    ];
    let printed = netstall(&flags);
    assert!(printed.status.success(), "{printed:?}");
    let file = dir.join("agent.toml");
    std::fs::write(&file, &printed.stdout).unwrap();
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(text.contains("stall-threshold = \"15ms\""), "{text}");
    assert!(text.contains("problem-window = \"1h 30m\""), "{text}");

    let mut as_json = flags.to_vec();
    as_json.push("--json");
    let from_flags = netstall(&as_json);
    let from_file = netstall(&[
        "agent",
        "--config",
        file.to_str().unwrap(),
        "--print-config",
        "--json",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(from_file.status.success(), "{from_file:?}");
    assert_eq!(json_lines(&from_file), json_lines(&from_flags));
    assert_eq!(json_lines(&from_file)[0]["remediate"], "drain");
}

#[test]
fn durations_need_units() {
    let out = netstall(&["lab", "spin", "--cpu", "0", "--ms", "5", "-w", "10"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a unit"));
}

#[test]
fn a_cpu_that_does_not_exist_is_named() {
    if !privileged("a_cpu_that_does_not_exist_is_named") {
        return;
    }
    assert_usage_error(
        &netstall(&["lab", "up", "--prefix", "nocpu", "--rx-cpu", "999"]),
        "CPU 999 does not exist",
    );
    assert_usage_error(
        &netstall(&["lab", "spin", "--cpu", "999", "--ms", "5", "-w", "1s"]),
        "CPU 999 does not exist",
    );
    assert_usage_error(
        &netstall(&["lab", "poller", "--cpu", "999", "-w", "1s"]),
        "CPU 999 does not exist",
    );
    assert!(
        !netstall_lab::netns::exists("nocpu-cli"),
        "a refused lab leaves nothing behind"
    );
}

#[test]
fn bad_prefix_is_refused() {
    assert_usage_error(
        &netstall(&["lab", "status", "--prefix", "Bad-Name"]),
        "invalid lab prefix",
    );
}

/// Runs netstall as `nobody` with no capabilities.
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            NETSTALL,
        ])
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

#[test]
fn missing_root_is_named() {
    if !privileged("missing_root_is_named") {
        return;
    }
    assert_usage_error(
        &as_nobody(&["lab", "up", "--prefix", "noroot"]),
        "needs root",
    );
    assert_usage_error(
        &as_nobody(&["lab", "zombies", "--count", "1"]),
        "needs root",
    );
    assert_usage_error(
        &as_nobody(&["lab", "spin", "--cpu", "0", "--ms", "5", "-w", "1s"]),
        "needs CAP_BPF",
    );
}

#[test]
fn missing_cgroup_v1_memory_hierarchy_is_named() {
    if !privileged("missing_cgroup_v1_memory_hierarchy_is_named") {
        return;
    }
    // A private mount namespace without the memory hierarchy: the host's stays as it is.
    let mount =
        netstall_cgroups::mounts::memory_v1_mount().expect("this host has cgroup v1 memory");
    let script = format!("umount -l {} && exec \"$@\"", mount.display());
    let out = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
            NETSTALL,
            "lab",
            "zombies",
            "--count",
            "1",
        ])
        .output()
        .expect("unshare (util-linux)");
    // lab zombies takes v1 where it is mounted, else v2: with neither visible, it says so.
    assert_usage_error(&out, "memory hierarchy is not mounted");
}

/// The values issue 21 found to panic, hang or pass silently: each is now
/// refused at once, in one line, with exit 2 (none needs privileges: all
/// are refused before anything is opened).
#[test]
fn hostile_values_are_one_line_errors() {
    let huge = "18446744073709551615s";
    let cases: &[(&[&str], &str)] = &[
        (&["xray", "-w", huge], "too long: at most 365 days"),
        (&["cgroups", "--watch", huge], "too long: at most 365 days"),
        (
            &["agent", "--cgroup-interval", huge],
            "too long: at most 365 days",
        ),
        (
            &["probe", "127.0.0.1", "-w", huge],
            "too long: at most 365 days",
        ),
        (
            &["probe", "127.0.0.1", "-i", "1ns", "-c", "1"],
            "too short: at least 1µs",
        ),
        (&["probe", "127.0.0.1", "-c", "0"], "'0'"),
        (&["probe", "127.0.0.1", "--syn", "-p", "0"], "'0'"),
        (&["collapse", "-j", "65535"], "65535"),
        (&["xray", "--cpu", "0-4294967295"], "largest CPU number"),
        (&["agent", "--config", "/dev/zero"], "larger than 1024 KiB"),
        (
            &[
                "probe",
                "--http",
                "http://127.0.0.1/a\r\nX-Injected: 1",
                "-c",
                "1",
            ],
            "is not allowed in a URL",
        ),
    ];
    for (args, needle) in cases {
        let started = std::time::Instant::now();
        let out = netstall(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {needle:?} not in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
}

/// docs/errors.md lists bad inputs and the one line each gets: every row is
/// run here, and what the command prints must be what the table says.
#[test]
fn docs_errors_md_is_what_the_commands_print() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let mut rows = 0;
    for line in doc.lines().filter(|l| l.starts_with("| `netstall ")) {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().trim_matches('`'))
            .collect();
        let args: Vec<&str> = cells[0].split_whitespace().skip(1).collect();
        let out = netstall(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end(), cells[1], "{args:?}");
        rows += 1;
    }
    assert!(rows >= 10, "only {rows} rows in docs/errors.md");
}
