//! The doctor's pod, built without I/O: pinned to one node, host network and
//! PID, privileged, the same host mounts as the agent's DaemonSet, and a
//! deadline of its own so that it ends even if the plugin never deletes it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

/// The label every doctor pod carries (and `kubectl get pods -l` finds).
pub const DOCTOR_LABEL: (&str, &str) = ("app.kubernetes.io/name", "netstall-doctor");

/// What the doctor pod is asked to do.
#[derive(Debug, Clone)]
pub struct DoctorPod {
    pub node: String,
    pub namespace: String,
    pub image: String,
    /// How long the doctor watches (`netstall doctor -w`).
    pub duration: Duration,
    /// Whether the doctor writes its HTML report after its verdict, on
    /// standard output (the plugin cuts it out of the logs: the image has no
    /// shell or tar for `kubectl cp`).
    pub report: bool,
    /// The doctor's output as JSON lines.
    pub json: bool,
}

/// Seconds the pod may live beyond the doctor's own duration: image pull,
/// start, the tracer's set-up and the report. After that the kubelet kills
/// it (`activeDeadlineSeconds`), plugin or no plugin.
const DEADLINE_MARGIN_S: u64 = 300;

impl DoctorPod {
    /// `netstall doctor`'s arguments inside the pod.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "doctor".to_string(),
            "--duration".to_string(),
            format!("{}ms", self.duration.as_millis()),
        ];
        if self.report {
            args.extend(["--report".to_string(), "/dev/stdout".to_string()]);
        }
        if self.json {
            args.push("--json".to_string());
        }
        args
    }

    /// The pod object to create.
    pub fn build(&self) -> Pod {
        let host_path = |name: &str, path: &str| serde_json::json!({"name": name, "hostPath": {"path": path, "type": "Directory"}});
        let mount = |name: &str, path: &str| serde_json::json!({"name": name, "mountPath": path, "readOnly": true});
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": "netstall-doctor-",
                "namespace": self.namespace,
                "labels": {
                    DOCTOR_LABEL.0: DOCTOR_LABEL.1,
                    "app.kubernetes.io/managed-by": "kubectl-netstall",
                },
            },
            "spec": {
                "restartPolicy": "Never",
                "activeDeadlineSeconds": self.duration.as_secs() + DEADLINE_MARGIN_S,
                "terminationGracePeriodSeconds": 5,
                "automountServiceAccountToken": false,
                "hostNetwork": true,
                "hostPID": true,
                "dnsPolicy": "ClusterFirstWithHostNet",
                // Pinned the way the DaemonSet controller pins its pods: by
                // node name through the scheduler, so that a node that cannot
                // take the pod says why in the pod's conditions.
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": [
                        {"key": "metadata.name", "operator": "In", "values": [self.node]},
                    ]}],
                }}},
                // A node under suspicion is often tainted (cordoned, NoSchedule).
                "tolerations": [{"operator": "Exists"}],
                "containers": [{
                    "name": "doctor",
                    "image": self.image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": self.args(),
                    "securityContext": {"privileged": true, "runAsUser": 0},
                    "volumeMounts": [
                        mount("cgroup", "/sys/fs/cgroup"),
                        mount("tracefs", "/sys/kernel/tracing"),
                        mount("btf", "/sys/kernel/btf"),
                    ],
                }],
                "volumes": [
                    host_path("cgroup", "/sys/fs/cgroup"),
                    host_path("tracefs", "/sys/kernel/tracing"),
                    host_path("btf", "/sys/kernel/btf"),
                ],
            },
        });
        serde_json::from_value(pod).expect("the doctor pod is a valid Pod")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> DoctorPod {
        DoctorPod {
            node: "node-7".into(),
            namespace: "netstall".into(),
            image: "localhost/netstall:0.1.0".into(),
            duration: Duration::from_secs(20),
            report: true,
            json: false,
        }
    }

    #[test]
    fn the_pod_is_pinned_privileged_and_ends_on_its_own() {
        let pod = serde_json::to_value(pod().build()).unwrap();
        let spec = &pod["spec"];
        assert_eq!(
            spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchFields"][0]["values"],
            serde_json::json!(["node-7"])
        );
        assert_eq!(
            (spec["hostNetwork"].clone(), spec["hostPID"].clone()),
            (true.into(), true.into())
        );
        assert_eq!(spec["containers"][0]["securityContext"]["privileged"], true);
        assert_eq!(spec["activeDeadlineSeconds"], 320);
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(
            spec["containers"][0]["args"],
            serde_json::json!(["doctor", "--duration", "20000ms", "--report", "/dev/stdout"])
        );
        assert_eq!(pod["metadata"]["generateName"], "netstall-doctor-");
    }
}
