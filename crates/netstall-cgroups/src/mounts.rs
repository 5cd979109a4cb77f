//! Which cgroup hierarchies are mounted where, from `/proc/self/mountinfo`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub path: PathBuf,
    /// Which directory of the hierarchy is mounted there: `/` for the whole
    /// hierarchy; a sub-tree in containers and bind mounts, where the cgroups
    /// outside it cannot be seen (nor counted).
    pub root: String,
    /// 1 or 2.
    pub version: u8,
    /// v1: the controllers bound to this hierarchy (`memory`, `cpu,cpuacct`, `name=systemd`).
    pub controllers: Vec<String>,
}

impl CgroupMount {
    /// Whether the whole hierarchy is visible here (not a sub-tree mount).
    ///
    /// Inside a cgroup namespace (a container's, the default for pods on
    /// cgroup-v2 nodes), the host's hierarchy bind-mounted in (the
    /// DaemonSet's hostPath) shows its root relative to the namespace's:
    /// `/..` once per level up to the real root, e.g. `/../../..`. That is
    /// the whole hierarchy too. (A bind mount of an ancestor part-way up
    /// would look the same; runtimes and hostPath mounts make none.)
    pub fn is_whole_hierarchy(&self) -> bool {
        self.root == "/"
            || (self.root.starts_with("/..") && self.root.split('/').skip(1).all(|c| c == ".."))
    }

    /// Whether this v1 hierarchy carries `controller`.
    pub fn has_controller(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// Parses mountinfo text (see proc(5)), keeping the cgroup and cgroup2 mounts.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut left = left.split(' ').skip(3);
            let root = left.next()?;
            let mount_point = left.next()?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let super_options = right.next().unwrap_or("");
            let version = match fstype {
                "cgroup" => 1,
                "cgroup2" => 2,
                _ => return None,
            };
            let controllers = if version == 1 {
                super_options
                    .split(',')
                    .filter(|o| {
                        !matches!(*o, "rw" | "ro")
                            && !o.contains("relatime")
                            && !o.starts_with("release_agent")
                    })
                    .filter(|o| {
                        !matches!(
                            *o,
                            "noprefix"
                                | "clone_children"
                                | "xattr"
                                | "cpuset_v2_mode"
                                | "favordynmods"
                        )
                    })
                    .map(str::to_owned)
                    .collect()
            } else {
                Vec::new()
            };
            Some(CgroupMount {
                path: PathBuf::from(unescape(mount_point)),
                root: unescape(root),
                version,
                controllers,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // `\ooo`, three octal digits of one byte (the kernel escapes space,
        // tab, newline and backslash); `\4xx` and above is not a byte and
        // stays as it is.
        let octal = (bytes[i] == b'\\' && i + 3 < bytes.len())
            .then(|| &bytes[i + 1..i + 4])
            .filter(|digits| digits.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|digits| {
                let value = digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
                u8::try_from(value).ok()
            });
        if let Some(value) = octal {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads this process's mountinfo.
pub fn read() -> Result<Vec<CgroupMount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// Where the cgroup-v1 memory hierarchy is mounted, or a one-line reason it is not.
pub fn memory_v1_mount() -> Result<PathBuf> {
    let mounts = read()?;
    let mut memory = mounts
        .iter()
        .filter(|m| m.version == 1 && m.has_controller("memory"))
        .collect::<Vec<_>>();
    memory.sort_by_key(|m| !m.is_whole_hierarchy());
    if let Some(m) = memory.first() {
        return Ok(m.path.clone());
    }
    if mounts.iter().any(|m| m.version == 2) {
        bail!(
            "the cgroup v1 memory hierarchy is not mounted (this host uses cgroup v2 for memory)"
        );
    }
    bail!(
        "the cgroup v1 memory hierarchy is not mounted (no cgroup mount in /proc/self/mountinfo)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
42 23 0:39 / /mnt/with\\040space rw - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_mounts_are_found() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 5);
        assert_eq!(mounts[0].path, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(mounts[0].controllers, vec!["memory"]);
        assert_eq!(mounts[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(mounts[2].controllers, vec!["name=systemd"]);
        assert_eq!(mounts[3].version, 2);
        assert!(mounts.iter().all(|m| m.root == "/"));
        assert_eq!(mounts[4].path, PathBuf::from("/mnt/with space"));
    }

    /// Found by the mountinfo fuzz target: `\777` overflowed a byte.
    #[test]
    fn octal_escapes_beyond_a_byte_stay_as_written() {
        assert_eq!(unescape("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape("x\\777y\\400"), "x\\777y\\400");
        assert_eq!(unescape("\\377"), "\u{FFFD}");
        assert_eq!(unescape("\\04"), "\\04");
        let crash = "22 27 0:21 / /p\\777x rw - cgroup cgroup rw,pids\n";
        assert_eq!(parse_mountinfo(crash)[0].path, PathBuf::from("/p\\777x"));
    }

    #[test]
    fn the_hosts_hierarchy_seen_from_a_cgroup_namespace_is_whole() {
        let mount = |root: &str| CgroupMount {
            path: PathBuf::from("/sys/fs/cgroup/memory"),
            root: root.into(),
            version: 1,
            controllers: vec!["memory".into()],
        };
        for whole in ["/", "/..", "/../../.."] {
            assert!(mount(whole).is_whole_hierarchy(), "{whole}");
        }
        for part in ["/kubepods", "/../kubepods", "/..x", "/../..a/.."] {
            assert!(!mount(part).is_whole_hierarchy(), "{part}");
        }
    }
}
