//! `netstall kubectl …`, which is also `kubectl netstall …` when this binary
//! is installed as `kubectl-netstall` (kubectl's plugin convention).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use netstall_core::duration;
use netstall_core::output::Output;
use netstall_kubectl::pod::DoctorPod;
use netstall_kubectl::{Cluster, DoctorRequest};

/// The image `kubectl netstall doctor` runs by default: what
/// scripts/build-image.sh makes for this version.
const DEFAULT_IMAGE: &str = concat!("localhost/netstall:", env!("CARGO_PKG_VERSION"));

#[derive(clap::Args)]
#[command(
    about = "kubectl netstall: the doctor on one node of a cluster, and every node's stall status",
    long_about = "Runs netstall against a Kubernetes cluster through the API server (your kubeconfig). \
        Install this binary as `kubectl-netstall` on your PATH (a copy or a symlink) and kubectl \
        runs it as `kubectl netstall`.",
    after_help = "Examples:\n  \
        kubectl netstall doctor node-7 -w 30s --report node-7.html\n  \
        kubectl netstall status\n  \
        netstall kubectl doctor node-7 --namespace netstall --image registry.example/netstall:0.1.0"
)]
pub struct Args {
    /// The kubeconfig context (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace for the doctor pod, and where the agents run. It must
    /// admit privileged pods (deploy/kubernetes/namespace.yaml).
    #[arg(short = 'n', long, global = true, default_value = "netstall")]
    namespace: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run `netstall doctor` on NODE in a short-lived privileged pod; stream its output, copy its report, delete the pod.
    #[command(
        long_about = "Creates a privileged pod pinned to NODE (host network and PID, the host's \
        cgroup, tracefs and BTF mounts, the netstall image), streams the doctor's output, writes its \
        HTML report with --report, and deletes the pod, also on Ctrl-C, on an error and on timeout. \
        The pod also ends by itself (activeDeadlineSeconds) if this command is killed.\n\n\
        Needs: get nodes; create, get, delete pods and get pods/log in the namespace.\n\
        Exit codes: 0 healthy, 1 findings, 2 error (no such node, no permission, the image cannot be \
        pulled, the pod not started in time).",
        after_help = "Examples:\n  \
        kubectl netstall doctor node-7 -w 30s --report node-7.html\n  \
        kubectl netstall doctor node-7 --context prod --json | jq 'select(.type==\"verdict\")'"
    )]
    Doctor(DoctorArgs),
    /// Every node's NetworkStall condition and its agent's latest verdict.
    #[command(
        long_about = "Lists the nodes with their NetworkStall condition (node-problem-detector's \
        netstall plugin, or the agent's remediation) and the verdict of the netstall agent on each \
        (its /healthz, through the API server's pod proxy). Exit 0 when no node has a problem, 1 when \
        one does, 2 on error.\n\nNeeds: list nodes; list pods and get pods/proxy in the namespace.",
        after_help = "Examples:\n  \
        kubectl netstall status\n  \
        kubectl netstall status --json | jq 'select(.type==\"node-status\")'"
    )]
    Status,
}

#[derive(clap::Args)]
struct DoctorArgs {
    /// The node to diagnose (a name from `kubectl get nodes`).
    node: String,
    /// How long the doctor watches.
    #[arg(short = 'w', long = "duration", default_value = "20s", value_parser = duration::parse_nonzero)]
    duration: Duration,
    /// Write the doctor's self-contained HTML report here.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// The netstall image the pod runs.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// How long the pod may take to be scheduled, pull its image and start.
    #[arg(long, default_value = "2m", value_parser = duration::parse_nonzero)]
    start_timeout: Duration,
}

pub fn run(args: Args, out: Output) -> Result<ExitCode> {
    let cluster = Cluster {
        context: args.context,
    };
    match args.command {
        Command::Doctor(doctor) => {
            let request = DoctorRequest {
                pod: DoctorPod {
                    node: doctor.node,
                    namespace: args.namespace,
                    image: doctor.image,
                    duration: doctor.duration,
                    report: doctor.report.is_some(),
                    json: out.is_json(),
                },
                start_timeout: doctor.start_timeout,
                report: doctor.report.clone(),
                poll: Duration::from_millis(500),
            };
            let code = netstall_kubectl::doctor(&cluster, &request, |line| println!("{line}"))?;
            if let Some(path) = &doctor.report {
                out.progress(format!("report written to {}", path.display()));
            }
            Ok(ExitCode::from(code))
        }
        Command::Status => {
            let rows = netstall_kubectl::status(&cluster, &args.namespace)?;
            netstall_kubectl::status::print(&rows, out);
            Ok(ExitCode::from(u8::from(rows.iter().any(|r| r.problem))))
        }
    }
}
