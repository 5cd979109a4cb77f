//! The whole report built from recorded hosts (tests/data, see its README):
//! v1 counts on the hybrid CI VM, cgroup.stat on pure v2 (with and without
//! nr_dying_subsys_*), and the environment errors.

use std::path::{Path, PathBuf};

use netstall_cgroups::report::{self, Hierarchy};
use netstall_cgroups::Host;

fn recorded(name: &str) -> Host {
    Host::at(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
}

fn row<'a>(rows: &'a [Hierarchy], controller: &str, version: u8) -> &'a Hierarchy {
    rows.iter()
        .find(|r| r.controller == controller && r.version == version)
        .unwrap_or_else(|| panic!("no v{version} {controller} row in {rows:#?}"))
}

#[test]
fn hybrid_counts_v1_as_num_cgroups_minus_live_dirs_and_v2_from_cgroup_stat() {
    let report = report::report(&recorded("hybrid")).unwrap();
    assert!(report.kernel.starts_with("6.18"));

    let memory = row(&report.hierarchies, "memory", 1);
    // /proc/cgroups said 825; 8 directories were live (root, process_api and
    // its 5 children, the lab's parent).
    assert_eq!(memory.total, Some(825));
    assert_eq!(memory.live, Some(8));
    assert_eq!(memory.dying, Some(817));
    assert_eq!(
        memory.mount.as_deref(),
        Some(Path::new("/sys/fs/cgroup/memory"))
    );
    assert_eq!(report.memory.version, 1);
    assert_eq!(report.memory.dying, 817);

    let cpu = row(&report.hierarchies, "cpu", 1);
    assert_eq!(
        (cpu.total, cpu.live, cpu.dying),
        (Some(1), Some(1), Some(0))
    );

    // The v2 side of the hybrid: only hugetlb and (implicit) perf_event.
    let hugetlb = row(&report.hierarchies, "hugetlb", 2);
    assert_eq!(
        hugetlb.mount.as_deref(),
        Some(Path::new("/sys/fs/cgroup/unified"))
    );
    assert_eq!((hugetlb.live, hugetlb.dying), (Some(1), Some(0)));
    row(&report.hierarchies, "perf_event", 2);
    let cgroups = row(&report.hierarchies, "cgroup", 2);
    assert_eq!((cgroups.live, cgroups.dying), (Some(1), Some(0)));
    // v1-only controllers bound to the default hierarchy have no v2 state.
    assert!(!report.hierarchies.iter().any(|r| r.controller == "net_cls"));

    assert_eq!(report.worst_stall_ms, Some(1.634));
    assert!(report.advice[0].contains("too few"), "{:?}", report.advice);
}

#[test]
fn pure_v2_reads_dying_memcgs_and_the_subtrees_holding_them() {
    let report = report::report(&recorded("v2")).unwrap();
    let memory = row(&report.hierarchies, "memory", 2);
    assert_eq!(memory.mount.as_deref(), Some(Path::new("/sys/fs/cgroup")));
    assert_eq!(
        (memory.total, memory.live, memory.dying),
        (Some(186), Some(42), Some(144))
    );
    assert_eq!(memory.note, None);
    let top: Vec<(PathBuf, u64)> = memory
        .subtrees
        .iter()
        .map(|s| (s.path.clone(), s.dying))
        .collect();
    assert_eq!(
        top,
        vec![
            ("/sys/fs/cgroup/kubepods.slice".into(), 139),
            (
                "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice".into(),
                137
            ),
            ("/sys/fs/cgroup/system.slice".into(), 5),
            (
                "/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice".into(),
                2
            ),
        ]
    );
    let cgroups = row(&report.hierarchies, "cgroup", 2);
    assert_eq!((cgroups.live, cgroups.dying), (Some(42), Some(145)));
    assert_eq!(
        cgroups.total,
        Some(187),
        "matches /proc/cgroups num_cgroups"
    );
    // Implicit perf_event (not in cgroup.controllers) comes from cgroup.stat.
    row(&report.hierarchies, "perf_event", 2);
    assert!(!report.hierarchies.iter().any(|r| r.version == 1));

    assert_eq!(report.memory.version, 2);
    assert_eq!(report.memory.dying, 144);
    let canary = report::memory_stat_path(&recorded("v2"), &report).unwrap();
    assert_eq!(canary, Path::new("/sys/fs/cgroup/memory.stat"));

    let json = serde_json::to_value(netstall_events::Record::from(report.clone())).unwrap();
    assert_eq!(json["type"], "cgroups");
    let memory_json = json["hierarchies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["controller"] == "memory")
        .unwrap();
    for key in ["controller", "version", "mount", "total", "live", "dying"] {
        assert!(
            memory_json.get(key).is_some(),
            "{key} missing: {memory_json}"
        );
    }
    assert!(json["advice"].as_array().unwrap().len() >= 2);
}

#[test]
fn older_v2_kernels_bound_dying_memcgs_by_dying_cgroups() {
    let report = report::report(&recorded("v2-5.15")).unwrap();
    let memory = row(&report.hierarchies, "memory", 2);
    assert_eq!(memory.dying, Some(3000));
    assert!(memory.note.as_deref().unwrap().contains("upper bound"));
    assert_eq!(
        memory.subtrees[0].path,
        Path::new("/sys/fs/cgroup/system.slice")
    );
    assert_eq!(report.memory.dying, 3000);
    assert_eq!(report.worst_stall_ms, Some(6.0), "5.15 is in the rstat era");
    assert_eq!(report.worst_stall_ms_high, Some(15.0));
    assert!(report.advice[0].contains("3000 dying memory cgroups against 120 live"));
}

/// A scratch host: `files` are (path, content) under a fresh directory.
fn scratch(name: &str, files: &[(&str, &str)]) -> (Host, PathBuf) {
    let root = std::env::temp_dir().join(format!("netstall-cg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (path, content) in files {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    (Host::at(&root), root)
}

fn error_of(host: &Host) -> String {
    let err = report::report(host).unwrap_err();
    let line = format!("{err:#}");
    assert!(!line.contains('\n'), "one line: {line}");
    line
}

const KERNEL: (&str, &str) = ("proc/sys/kernel/osrelease", "6.18.44\n");
const TABLE: (&str, &str) = (
    "proc/cgroups",
    "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t4\t100\t1\n",
);

#[test]
fn environment_errors_are_one_line_reasons() {
    let (host, root) = scratch(
        "nomount",
        &[
            KERNEL,
            TABLE,
            (
                "proc/self/mountinfo",
                "22 1 259:1 / / rw - ext4 /dev/root rw\n",
            ),
        ],
    );
    assert!(error_of(&host).contains("no cgroup filesystem is mounted"));
    std::fs::remove_dir_all(root).unwrap();

    let (host, root) = scratch("noproc", &[KERNEL]);
    assert!(error_of(&host).contains("cannot read /proc/cgroups"));
    std::fs::remove_dir_all(root).unwrap();

    let (host, root) = scratch(
        "garbled",
        &[
            KERNEL,
            ("proc/cgroups", "memory four 100 1\n"),
            ("proc/self/mountinfo", ""),
        ],
    );
    assert!(error_of(&host).contains("/proc/cgroups line 1"));
    std::fs::remove_dir_all(root).unwrap();

    // A container's view: only its own sub-tree of the memory hierarchy.
    let (host, root) = scratch(
        "container",
        &[
            KERNEL,
            TABLE,
            (
                "proc/self/mountinfo",
                "35 31 0:32 /kubepods/pod1/c1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
            ),
        ],
    );
    let line = error_of(&host);
    assert!(
        line.contains("only the sub-tree /kubepods/pod1/c1"),
        "{line}"
    );
    std::fs::remove_dir_all(root).unwrap();

    // Listed in mountinfo, but the directory is not there (or unreadable).
    let (host, root) = scratch(
        "vanished",
        &[
            KERNEL,
            TABLE,
            (
                "proc/self/mountinfo",
                "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
            ),
        ],
    );
    let line = error_of(&host);
    assert!(
        line.contains("cannot count the cgroups under /sys/fs/cgroup/memory"),
        "{line}"
    );
    std::fs::remove_dir_all(root).unwrap();

    // No memory controller anywhere.
    let (host, root) = scratch(
        "nomemory",
        &[
            KERNEL,
            (
                "proc/cgroups",
                "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\n",
            ),
            (
                "proc/self/mountinfo",
                "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
            ),
            ("sys/fs/cgroup/cpu/cgroup.procs", ""),
        ],
    );
    assert!(error_of(&host).contains("memory controller is not enabled"));
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn watching_a_recording_falls_back_to_polling_and_says_why() {
    let host = recorded("hybrid");
    let watch =
        netstall_cgroups::watch::watch(&host, std::time::Duration::from_millis(200)).unwrap();
    assert_eq!(watch.source, netstall_cgroups::watch::ChurnSource::Polling);
    assert!(watch
        .note
        .as_deref()
        .unwrap()
        .contains("tracepoints unavailable"));
    assert!(watch.top_parents.is_empty());
    assert_eq!(
        (watch.memory_dying_start, watch.memory_dying_end),
        (817, 817)
    );
    let memory = watch
        .hierarchies
        .iter()
        .find(|h| h.controllers == "memory")
        .expect("memory hierarchy");
    assert_eq!(
        (memory.hierarchy_id, memory.churn.net_dying_per_s),
        (4, 0.0)
    );
    assert!(watch.seconds >= 0.2 && watch.end_ns > watch.start_ns);
}
