//! Embeds the git revision the agent is built from, for
//! `netstall_build_info{version,revision}`: `$NETSTALL_REVISION` when set
//! (scripts/build-image.sh sets it, with `-dirty` for uncommitted changes),
//! else `git rev-parse --short HEAD`, else `unknown` (a source tarball).

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=NETSTALL_REVISION");
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let from_env = std::env::var("NETSTALL_REVISION")
        .ok()
        .filter(|r| !r.is_empty());
    let revision = from_env.or_else(|| {
        // Build again when HEAD moves: HEAD itself (a checkout) and the
        // branch it names (a commit), loose or packed. Only files that
        // exist: cargo reruns on every build for a missing one.
        let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
        watched.extend(git(&dir, &["symbolic-ref", "-q", "HEAD"]));
        for name in watched {
            if let Some(path) = git(&dir, &["rev-parse", "--git-path", &name]) {
                let path = dir.join(path);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
        git(&dir, &["rev-parse", "--short", "HEAD"])
    });
    println!(
        "cargo:rustc-env=NETSTALL_REVISION={}",
        revision.as_deref().unwrap_or("unknown")
    );
}
