//! `netstall copy-binary DEST`: this binary, copied. The image has no shell
//! or `cp`, and another container (node-problem-detector's, which runs
//! `netstall check` as its plugin) gets netstall through an init container
//! running this into a shared volume.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
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
    let source = netstall_core::sys::copy_this_binary(&args.dest)?;
    out.progress(format!(
        "copied {} to {}",
        source.display(),
        args.dest.display()
    ));
    Ok(ExitCode::SUCCESS)
}
