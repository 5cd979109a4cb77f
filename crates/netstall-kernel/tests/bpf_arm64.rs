//! The BPF programs build for arm64 too: every `src/bpf/*.bpf.c` is compiled
//! with arm64's kernel types (`src/bpf/arm64/vmlinux.h`) and
//! `-D__TARGET_ARCH_arm64`, and its libbpf-rs skeleton is generated, exactly
//! as build.rs does for an aarch64 target. No arm64 Rust standard library can
//! be installed here, so this is as far as the arm64 build goes (docs/kernels.md).

use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;

const BPF_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/bpf");

fn programs() -> Vec<(String, PathBuf)> {
    let mut programs: Vec<(String, PathBuf)> = std::fs::read_dir(BPF_DIR)
        .expect("read src/bpf")
        .filter_map(|e| {
            let path = e.expect("dir entry").path();
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".bpf.c")?
                .to_owned();
            Some((name, path))
        })
        .collect();
    programs.sort();
    programs
}

/// Builds one program for `arch` into `dir`; returns (object bytes, skeleton text).
fn build(arch: &str, name: &str, source: &Path, dir: &Path) -> (Vec<u8>, String) {
    let obj = dir.join(format!("{name}.{arch}.bpf.o"));
    let skel = dir.join(format!("{name}.{arch}.skel.rs"));
    SkeletonBuilder::new()
        .source(source)
        .obj(&obj)
        .clang_args([
            format!("-D__TARGET_ARCH_{arch}"),
            format!("-I{BPF_DIR}/{arch}"),
            format!("-I{BPF_DIR}"),
            "-Wall".to_owned(),
            "-Werror".to_owned(),
        ])
        .build_and_generate(&skel)
        .unwrap_or_else(|e| panic!("building {name} for {arch}: {e:#}"));
    (
        std::fs::read(&obj).expect("read object"),
        std::fs::read_to_string(&skel).expect("read skeleton"),
    )
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn every_bpf_program_builds_for_arm64_with_its_skeleton() {
    let dir = std::env::temp_dir().join(format!(
        "netstall-bpf-arm64-{}",
        netstall_testkit::unique_prefix()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let programs = programs();
    assert!(
        programs.iter().any(|(n, _)| n == "trace"),
        "src/bpf has trace.bpf.c"
    );
    let result = std::panic::catch_unwind(|| {
        for (name, source) in &programs {
            let (obj, skel) = build("arm64", name, source, &dir);
            // A skeleton for the object: its programs are there to open and load.
            assert!(skel.contains("pub struct"), "{name}: skeleton has no types");
            assert!(obj.starts_with(b"\x7fELF"), "{name}: not an ELF object");
            if name == "trace" {
                // The syscall registers are read through arm64's pt_regs
                // (orig_x0 for the first argument, syscallno for the number),
                // never x86's orig_ax/di.
                assert!(
                    contains(&obj, "orig_x0"),
                    "trace: no arm64 syscall argument read"
                );
                assert!(
                    contains(&obj, "syscallno"),
                    "trace: no arm64 syscall number read"
                );
                assert!(
                    !contains(&obj, "orig_ax"),
                    "trace: x86 register in the arm64 object"
                );
                assert!(
                    skel.contains("on_sys_enter"),
                    "trace: skeleton lacks on_sys_enter"
                );
            }
        }
        // The same source built for x86 reads x86's registers: the
        // architecture really comes from the flags, not from the host.
        let (source_name, source) = programs.iter().find(|(n, _)| n == "trace").expect("trace");
        let (obj, _) = build("x86", source_name, source, &dir);
        assert!(
            contains(&obj, "orig_ax"),
            "trace: no x86 syscall number read"
        );
        assert!(
            !contains(&obj, "syscallno"),
            "trace: arm64 register in the x86 object"
        );
    });
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn no_register_names_in_the_bpf_c() {
    // Syscall registers come through libbpf's CO-RE readers
    // (PT_REGS_PARM*_CORE_SYSCALL) and one per-architecture macro for the
    // number: no `regs->` field access that would tie the C to one arch.
    for entry in std::fs::read_dir(BPF_DIR).expect("read src/bpf") {
        let path = entry.expect("dir entry").path();
        let is_c = path.extension().is_some_and(|e| e == "c" || e == "h") && path.is_file();
        if !is_c {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        for (i, line) in text.lines().enumerate() {
            assert!(
                !line.contains("regs->"),
                "{}:{}: {line}",
                path.display(),
                i + 1
            );
        }
    }
}
