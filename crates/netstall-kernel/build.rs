//! Builds every `src/bpf/*.bpf.c` into a libbpf-rs skeleton `$OUT_DIR/<name>.skel.rs`.
//!
//! `vmlinux.h` is generated once per architecture (`scripts/gen-vmlinux.sh`,
//! `src/bpf/<arch>/vmlinux.h`) and committed: CO-RE relocates field offsets at
//! load time, so it need not match the kernel the tool runs on, and builds never
//! depend on the build host's BTF. The architecture is the build target's
//! (`CARGO_CFG_TARGET_ARCH`), not the host's: it picks the header and
//! `__TARGET_ARCH_*`, which libbpf's `PT_REGS_*` readers need.

use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bpf_dir = Path::new("src/bpf");
    let target = std::env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let arch = match target.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => panic!("netstall's BPF has kernel types for x86_64 and aarch64, not {other}"),
    };
    println!("cargo:rerun-if-changed={}", bpf_dir.display());

    let mut sources: Vec<PathBuf> = std::fs::read_dir(bpf_dir)
        .expect("read src/bpf")
        .map(|e| e.expect("dir entry").path())
        .collect();
    sources.sort();
    for path in &sources {
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        println!("cargo:rerun-if-changed={}", path.display());
        let Some(name) = file.strip_suffix(".bpf.c") else {
            continue;
        };
        SkeletonBuilder::new()
            .source(path)
            .obj(out_dir.join(format!("{name}.bpf.o")))
            .clang_args([
                format!("-D__TARGET_ARCH_{arch}"),
                format!("-Isrc/bpf/{arch}"),
                "-Isrc/bpf".to_owned(),
                "-Wall".to_owned(),
                "-Werror".to_owned(),
            ])
            .build_and_generate(out_dir.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building BPF program {}: {e:#}", path.display()));
    }
}
