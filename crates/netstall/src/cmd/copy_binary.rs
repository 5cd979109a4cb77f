//! `netstall copy-binary DEST`: this binary, copied. The image has no shell
//! or `cp`, and another container (node-problem-detector's, which runs
//! `netstall check` as its plugin) gets netstall through an init container
//! running this into a shared volume.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use netstall_core::output::Output;

#[derive(clap::Args)]
#[command(
    about = "Copy this binary to a path (the image has no shell; node-problem-detector's pod gets its plugin so)",
    long_about = "Copies the running netstall binary to DEST (mode 0755). The container image has no \
        shell; node-problem-detector's pod (deploy/overlays/node-problem-detector) gets its plugin this \
        way, from an init container into a shared volume.",
    after_help = "Examples:\n  \
        netstall copy-binary /plugins/netstall\n  \
        podman run --rm -v /opt/bin:/out localhost/netstall copy-binary /out/netstall"
)]
pub struct Args {
    /// Where to write the copy (a file path; its directory must exist).
    dest: PathBuf,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let source = std::fs::read_link("/proc/self/exe").context("cannot find this binary")?;
    let partial = args.dest.with_extension("partial");
    std::fs::copy(&source, &partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::set_permissions(
        &partial,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .with_context(|| format!("cannot make {} executable", partial.display()))?;
    // Whole or not at all: a plugin run never sees half a binary.
    std::fs::rename(&partial, &args.dest)
        .with_context(|| format!("cannot write {}", args.dest.display()))?;
    out.progress(format!(
        "copied {} to {}",
        source.display(),
        args.dest.display()
    ));
    Ok(ExitCode::SUCCESS)
}
