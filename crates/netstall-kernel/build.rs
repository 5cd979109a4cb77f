//! Builds every `src/bpf/*.bpf.c` into a libbpf-rs skeleton `$OUT_DIR/<name>.skel.rs`.
//!
//! `vmlinux.h` is generated once (`scripts/gen-vmlinux.sh`) and committed:
//! CO-RE relocates field offsets at load time, so it need not match the
//! kernel the tool runs on, and builds never depend on the build host's BTF.

use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bpf_dir = Path::new("src/bpf");
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
            .clang_args(["-I", "src/bpf", "-Wall", "-Werror"])
            .build_and_generate(out_dir.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building BPF program {}: {e:#}", path.display()));
    }
}
