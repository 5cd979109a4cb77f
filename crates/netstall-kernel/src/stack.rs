//! The kernel-stack rules ([`netstall_events::stack`]: frame order,
//! plumbing frames, unknown frames, netstall's own BPF frames) live with
//! the records that carry stacks; what only this crate can check is that
//! the list of netstall's own BPF functions matches the BPF objects it
//! builds.

pub use netstall_events::stack::*;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every program in the observers' BPF objects is in
    /// [`OWN_BPF_FUNCTIONS`], and the injector's are not.
    #[test]
    fn own_functions_match_the_bpf_objects() {
        use libbpf_rs::skel::SkelBuilder;
        use std::mem::MaybeUninit;

        let mut names = Vec::new();
        let mut storage = MaybeUninit::uninit();
        let open = crate::skel::trace::TraceSkelBuilder::default()
            .open(&mut storage)
            .expect("open trace.bpf.o");
        names.extend(
            libbpf_rs::skel::OpenSkel::open_object(&open)
                .progs()
                .map(|p| p.name().to_string_lossy().into_owned()),
        );
        let mut storage = MaybeUninit::uninit();
        let open = crate::skel::cgwatch::CgwatchSkelBuilder::default()
            .open(&mut storage)
            .expect("open cgwatch.bpf.o");
        names.extend(
            libbpf_rs::skel::OpenSkel::open_object(&open)
                .progs()
                .map(|p| p.name().to_string_lossy().into_owned()),
        );
        for name in &names {
            assert!(
                OWN_BPF_FUNCTIONS.contains(&name.as_str()),
                "{name} is missing"
            );
        }
        // Every listed program exists (path_step is a bpf_loop callback, not a program).
        for own in OWN_BPF_FUNCTIONS.iter().filter(|f| **f != "path_step") {
            assert!(names.iter().any(|n| n == own), "{own} is not a program");
        }
        let mut storage = MaybeUninit::uninit();
        let spin = crate::skel::spin::SpinSkelBuilder::default()
            .open(&mut storage)
            .expect("open spin.bpf.o");
        for prog in libbpf_rs::skel::OpenSkel::open_object(&spin).progs() {
            let name = prog.name().to_string_lossy().into_owned();
            assert!(!OWN_BPF_FUNCTIONS.contains(&name.as_str()), "{name}");
        }
    }
}
