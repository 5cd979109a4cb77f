//! Running iproute2 and nftables, with their stderr in the error.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Runs `program args…`, failing with its stderr as the reason.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    run_with_input(program, args, None)
}

/// Runs `program args…` with `input` on stdin.
pub fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| match program {
            "ip" => "cannot run `ip` (install iproute2)".to_owned(),
            "nft" => "cannot run `nft` (install nftables)".to_owned(),
            _ => format!("cannot run `{program}`"),
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            stderr.trim().lines().next().unwrap_or("no message")
        );
    }
    Ok(())
}
