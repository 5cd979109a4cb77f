//! Remediation, the I/O part: reads the node, its pods and the fleet's
//! Lease through the Kubernetes API (kube-rs), asks
//! [`remediation::next_step`] what to do, and does it: the `NetworkStall`
//! condition (nodes/status, strategic merge by type, as
//! node-problem-detector does), Events on the Node, the Lease, cordon,
//! evictions (policy/v1 Eviction subresource), the reboot sentinel, and
//! the proof.
//!
//! One tick at a time, on one thread, with nothing retried blindly: any API
//! error ends the tick, and the next tick starts again from reading the
//! node and renewing the Lease; only an eviction refused by a
//! PodDisruptionBudget (HTTP 429) is retried within a tick, with backoff,
//! up to `--drain-timeout`. If the API stays away, the Lease is not renewed
//! and expires: it never leaks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference, Pod};
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use netstall_core::clock::realtime_ns;
use netstall_core::shutdown::Shutdown;
use netstall_events::agent::{RemediationQuickFix, RemediationStep};
use serde_json::json;

use crate::remediation::{
    self, camel_case, judge, lease_call, next_step, skip_reason, LeaseCall, LeaseView, Mode,
    PodInfo, Proof, Record, RemediationConfig, Situation, Snapshot, Step, Verdict, ANNOTATION,
    CONDITION,
};
use crate::State;

/// Events go where node-problem-detector's go: cluster-scoped objects'
/// Events live in `default`.
const EVENT_NAMESPACE: &str = "default";
/// The Events' and the Lease's `source.component`.
const COMPONENT: &str = "netstall-agent";

/// The remediation loop's state between ticks.
pub struct Remediator {
    runtime: tokio::runtime::Runtime,
    client: Client,
    config: RemediationConfig,
    node: String,
    dying_limit: u64,
    start_ns: u64,
    quick_fix_ns: Option<u64>,
    /// The snapshot when the node was flagged (the condition-only path's
    /// "before"; destructive paths keep it in the Node's annotation).
    flagged: Option<(u64, Snapshot, String)>,
    /// When the Lease was last renewed by us.
    lease_renewed: Option<Instant>,
    /// The last reason given for waiting, so it is told once.
    waiting: Option<String>,
    error_told: bool,
    /// The node's `spec.unschedulable` at the last look.
    node_unschedulable: bool,
    /// The last look found the node healthy, unflagged and not under
    /// remediation: nothing to read until it goes bad.
    clean: bool,
    /// Dry run: the record and condition as they would be.
    dry_record: Option<Record>,
    dry_condition: Option<bool>,
}

impl Remediator {
    /// Reads the in-cluster config (service account) or `KUBECONFIG`.
    pub fn connect(config: RemediationConfig, node: &str, dying_limit: u64) -> Result<Self> {
        Self::connect_with(config, node, dying_limit, None)
    }

    /// As [`Remediator::connect`], or through the kubeconfig file given.
    pub fn connect_with(
        config: RemediationConfig,
        node: &str,
        dying_limit: u64,
        kubeconfig: Option<&std::path::Path>,
    ) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the Kubernetes client's runtime")?;
        let connect = async {
            match kubeconfig {
                None => Client::try_default().await,
                Some(path) => {
                    let file = kube::config::Kubeconfig::read_from(path)
                        .map_err(kube::Error::InferKubeconfig)?;
                    let options = kube::config::KubeConfigOptions::default();
                    let config = kube::Config::from_custom_kubeconfig(file, &options)
                        .await
                        .map_err(kube::Error::InferKubeconfig)?;
                    Client::try_from(config)
                }
            }
        };
        let client = runtime
            .block_on(connect)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| {
                format!(
                    "--remediate {}: no Kubernetes API config (in-cluster service account or KUBECONFIG)",
                    config.mode
                )
            })?;
        Ok(Self {
            runtime,
            client,
            config,
            node: node.to_string(),
            dying_limit,
            start_ns: realtime_ns(),
            quick_fix_ns: None,
            flagged: None,
            lease_renewed: None,
            waiting: None,
            error_told: false,
            clean: false,
            node_unschedulable: false,
            dry_record: None,
            dry_condition: None,
        })
    }

    /// How often the loop looks: often enough for the probation and the
    /// Lease's renewal, never more than every 100 ms.
    pub fn tick_interval(&self) -> Duration {
        (self.config.probation / 10)
            .min(self.config.lease_duration / 6)
            .clamp(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// Ticks until `stop`. API errors end a tick and are told once per streak.
    pub fn run(mut self, state: &State, stop: &Shutdown) {
        let interval = self.tick_interval();
        loop {
            match self.tick(state) {
                Ok(()) => self.error_told = false,
                Err(e) => {
                    if !self.error_told {
                        self.error_told = true;
                        let message = format!("{e:#}").replace('\n', " ");
                        eprintln!("netstall agent: remediation: {message}");
                        self.line(state, "error", "ApiError", &message);
                    }
                }
            }
            if stop.wait(interval) {
                return;
            }
        }
    }

    fn line(&self, state: &State, step: &str, reason: &str, message: &str) {
        state.event(RemediationStep {
            node: self.node.clone(),
            mode: self.config.mode,
            step: step.to_owned(),
            dry_run: self.config.dry_run,
            reason: reason.to_owned(),
            message: message.to_owned(),
            ts_ns: realtime_ns(),
        });
    }

    /// A step: a JSON line, and an Event on the Node (only told, in a dry run).
    fn step(&self, state: &State, step: &str, warning: bool, reason: &str, message: &str) {
        self.line(state, step, reason, message);
        if self.config.dry_run {
            return;
        }
        // Events are best effort: a lost Event must not undo or block a step.
        if let Err(e) = self
            .runtime
            .block_on(self.create_event(warning, reason, message))
        {
            eprintln!("netstall agent: remediation: cannot create the {reason} Event: {e}");
        }
    }

    fn wait(&mut self, state: &State, reason: &str, message: String) {
        if self.waiting.as_deref() != Some(&message) {
            self.line(state, "wait", reason, &message);
            self.waiting = Some(message);
        }
    }

    fn snapshot(state: &State, report: &crate::health::HealthReport) -> Snapshot {
        let text = state.metrics.encode_prometheus();
        Snapshot::of(
            report,
            remediation::p99_from_text(&text, "netstall_probe_rtt_seconds"),
        )
    }

    /// One look and at most one step.
    pub fn tick(&mut self, state: &State) -> Result<()> {
        if self.config.mode == Mode::Off {
            return Ok(());
        }
        let now = realtime_ns();
        let report = state.health.lock().expect("health lock").report(now);
        let verdict = judge(&report);
        // A healthy node with nothing under way asks the API nothing: with
        // every node running the agent, the API server hears from bad nodes only.
        if self.clean && !verdict.bad {
            return Ok(());
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = self
            .runtime
            .block_on(nodes.get(&self.node))
            .with_context(|| format!("read node {}", self.node))?;
        self.node_unschedulable = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        let (condition_true, record) = if self.config.dry_run {
            (
                self.dry_condition.unwrap_or_else(|| has_condition(&node)),
                self.dry_record.clone(),
            )
        } else {
            (has_condition(&node), record_of(&node)?)
        };
        self.clean =
            !verdict.bad && !condition_true && record.is_none() && self.quick_fix_ns.is_none();
        let rebooted = record.as_ref().is_some_and(|r| self.rebooted(r));
        let situation = Situation {
            mode: self.config.mode,
            verdict: &verdict,
            condition_true,
            record: record.as_ref(),
            quick_fix_ns: self.quick_fix_ns,
            memcg_quick_fix: self.config.memcg_quick_fix,
            last_problem_ns: report.last_problem_ns,
            agent_start_ns: self.start_ns,
            now_ns: now,
            probation: self.config.probation,
            rebooted,
        };
        let step = next_step(&situation);
        // A destructive remediation under way holds the Lease: renew it.
        if record.is_some() && !matches!(step, Step::Finish) {
            self.lease(state, now, false)?;
        }
        match step {
            Step::Nothing | Step::AwaitReboot | Step::AwaitHealthy => Ok(()),
            Step::Flag => self.flag(state, &report, &verdict, now),
            Step::Clear => self.clear(state, &report, &verdict, now),
            Step::QuickFix => self.quick_fix(state, &report, now),
            Step::Cordon => self.cordon(state, &report, &verdict, now),
            Step::Drain => self.drain(state, record.expect("drain has a record"), now),
            Step::Reboot => self.reboot(state, record.expect("reboot has a record"), now),
            Step::Probation => {
                let record = record.expect("probation has a record");
                self.set_phase(record, remediation::Phase::Probation, now)?;
                let message = format!(
                    "node stays cordoned until it has been healthy for {}s",
                    self.config.probation.as_secs()
                );
                self.step(state, "probation", false, "NetworkStallProbation", &message);
                Ok(())
            }
            Step::Finish => self.finish(
                state,
                &report,
                &verdict,
                record.expect("finish has a record"),
                now,
            ),
        }
    }

    fn rebooted(&self, record: &Record) -> bool {
        let boot_changed = match (&record.boot_id, boot_id()) {
            (Some(then), Some(now)) => *then != now,
            _ => false,
        };
        // /var/run is a tmpfs: a restarted host has no sentinel left.
        let sentinel_gone =
            self.config.reboot_command.is_none() && !self.config.reboot_sentinel.exists();
        boot_changed || sentinel_gone
    }

    fn flag(
        &mut self,
        state: &State,
        report: &crate::health::HealthReport,
        verdict: &Verdict,
        now: u64,
    ) -> Result<()> {
        // The Lease first (when this node will need it and may take it), so
        // that two nodes flagged at once do not both start.
        let quick_fix_first =
            self.config.memcg_quick_fix && verdict.cause == remediation::DYING_MEMCG_CAUSE;
        if self.config.mode >= Mode::Cordon && !quick_fix_first && self.may_take_out(state)? {
            self.lease(state, now, true)?;
        }
        self.set_condition(true, &camel_case(&verdict.cause), &verdict.message)?;
        self.flagged = Some((now, Self::snapshot(state, report), verdict.cause.clone()));
        self.step(
            state,
            "condition",
            true,
            &camel_case(&verdict.cause),
            &verdict.message,
        );
        Ok(())
    }

    fn clear(
        &mut self,
        state: &State,
        report: &crate::health::HealthReport,
        verdict: &Verdict,
        now: u64,
    ) -> Result<()> {
        self.set_condition(false, "NoNetworkStall", "no RX stalls")?;
        self.step(state, "condition", false, "NoNetworkStall", "no RX stalls");
        let (started, before, cause) = self
            .flagged
            .take()
            .unwrap_or_else(|| (now, Snapshot::default(), verdict.cause.clone()));
        self.quick_fix_ns = None;
        // Taken when flagged, never used: free it for the fleet now.
        if self.lease_renewed.is_some() {
            self.release_lease(state)?;
        }
        self.prove(state, report, verdict, cause, before, started, now);
        Ok(())
    }

    fn quick_fix(
        &mut self,
        state: &State,
        report: &crate::health::HealthReport,
        now: u64,
    ) -> Result<()> {
        self.quick_fix_ns = Some(now);
        let level = netstall_cgroups::remediate::Level::PageCache;
        let host = netstall_cgroups::Host::live();
        // Counted now, not the last periodic count: the proof compares like with like.
        let dying_before = netstall_cgroups::report::memory_count(&host)
            .map(|m| m.dying)
            .ok()
            .or(report.dying_memcgs)
            .unwrap_or(0);
        let result = if self.config.dry_run {
            Ok(netstall_cgroups::remediate::plan(level, dying_before, None))
        } else {
            netstall_cgroups::remediate::apply(&host, level, dying_before, None)
        };
        match result {
            Ok(done) => {
                let message = format!(
                    "{}; stalls before: {} in {}s, worst {}",
                    done.verdict,
                    report.stalls,
                    report.window_s,
                    report
                        .worst_stall_ms
                        .map_or("-".into(), |ms| format!("{ms:.0} ms"))
                );
                state.event(RemediationQuickFix {
                    node: self.node.clone(),
                    remediation: done.clone(),
                });
                self.step(state, "quick-fix", false, "DropCaches", &message);
            }
            Err(e) => {
                let message = format!("drop_caches failed: {e:#}");
                self.step(state, "quick-fix", true, "DropCachesFailed", &message);
            }
        }
        Ok(())
    }

    /// Whether this node may be taken out: no other node is under
    /// remediation, and enough nodes are free of the condition.
    fn may_take_out(&mut self, state: &State) -> Result<bool> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = self
            .runtime
            .block_on(nodes.list(&ListParams::default()))
            .context("list nodes (--min-healthy)")?;
        let total = list.items.len();
        let healthy = list
            .items
            .iter()
            .filter(|n| n.metadata.name.as_deref() != Some(&self.node) && !has_condition(n))
            .count();
        // A node still under remediation (its Lease may have expired while
        // it rebooted) counts as taken out: wait for it to finish.
        if let Some(other) = list.items.iter().find(|n| {
            n.metadata.name.as_deref() != Some(&self.node) && record_of(n).ok().flatten().is_some()
        }) {
            let other = other.metadata.name.clone().unwrap_or_default();
            self.wait(
                state,
                "NodeInRemediation",
                format!("node {other} is still being remediated ({ANNOTATION}): waiting"),
            );
            return Ok(false);
        }
        let met = self.config.min_healthy.met(healthy, total);
        if !met {
            self.wait(
                state,
                "MinHealthyNotMet",
                format!(
                    "{healthy} of {total} nodes free of {CONDITION}, --min-healthy {}: no destructive step",
                    self.config.min_healthy
                ),
            );
        }
        Ok(met)
    }

    /// Takes (when `take`) or renews the Lease; `Ok(false)` when another node holds it.
    fn lease(&mut self, state: &State, now: u64, take: bool) -> Result<bool> {
        let renew_every = self.config.lease_duration / 3;
        if !take
            && self
                .lease_renewed
                .is_some_and(|t| t.elapsed() < renew_every)
        {
            return Ok(true);
        }
        let target = &self.config.lease;
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &target.namespace);
        let current = self
            .runtime
            .block_on(api.get_opt(&target.name))
            .with_context(|| format!("read the Lease {target}"))?;
        let view = current.as_ref().map_or(
            LeaseView {
                holder: None,
                renew_ns: None,
                duration_s: None,
            },
            lease_view,
        );
        let call = lease_call(&view, &self.node, now);
        if let LeaseCall::HeldBy(holder) = &call {
            self.lease_renewed = None;
            self.wait(
                state,
                "LeaseHeld",
                format!("the Lease {target} is held by {holder}: waiting"),
            );
            return Ok(false);
        }
        if self.config.dry_run {
            if call == LeaseCall::Take {
                self.line(
                    state,
                    "lease",
                    "LeaseAcquired",
                    &format!("would take the Lease {target}"),
                );
            }
            self.lease_renewed = Some(Instant::now());
            return Ok(true);
        }
        let stamp = MicroTime(timestamp(now));
        let duration_s = self.config.lease_duration.as_secs().max(1) as i32;
        let taking = call == LeaseCall::Take;
        let spec = match (&current, taking) {
            (Some(lease), false) => LeaseSpec {
                renew_time: Some(stamp),
                lease_duration_seconds: Some(duration_s),
                ..lease.spec.clone().unwrap_or_default()
            },
            (current, _) => {
                let transitions = current
                    .as_ref()
                    .and_then(|l| l.spec.as_ref())
                    .and_then(|s| s.lease_transitions)
                    .unwrap_or(0);
                LeaseSpec {
                    holder_identity: Some(self.node.clone()),
                    acquire_time: Some(stamp.clone()),
                    renew_time: Some(stamp),
                    lease_duration_seconds: Some(duration_s),
                    lease_transitions: Some(transitions + i32::from(current.is_some())),
                    ..Default::default()
                }
            }
        };
        let result = match current {
            Some(lease) => {
                let updated = Lease {
                    metadata: ObjectMeta {
                        name: lease.metadata.name.clone(),
                        namespace: lease.metadata.namespace.clone(),
                        // Optimistic concurrency: a Lease changed meanwhile
                        // (another node took it) fails with 409.
                        resource_version: lease.metadata.resource_version.clone(),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.runtime
                    .block_on(api.replace(&target.name, &PostParams::default(), &updated))
            }
            None => {
                let created = Lease {
                    metadata: ObjectMeta {
                        name: Some(target.name.clone()),
                        namespace: Some(target.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.runtime
                    .block_on(api.create(&PostParams::default(), &created))
            }
        };
        match result {
            // Another node wrote it between our read and our write: it won.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.lease_renewed = None;
                self.wait(
                    state,
                    "LeaseHeld",
                    format!("the Lease {target} was taken by another node first: waiting"),
                );
                return Ok(false);
            }
            other => other.with_context(|| format!("write the Lease {target}"))?,
        };
        self.lease_renewed = Some(Instant::now());
        if taking {
            self.waiting = None;
            let message =
                format!("took the Lease {target} for {duration_s}s, renewed while remediating");
            self.line(state, "lease", "LeaseAcquired", &message);
        }
        Ok(true)
    }

    fn release_lease(&mut self, state: &State) -> Result<()> {
        let target = &self.config.lease;
        self.lease_renewed = None;
        if self.config.dry_run {
            self.line(
                state,
                "lease",
                "LeaseReleased",
                &format!("would release the Lease {target}"),
            );
            return Ok(());
        }
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &target.namespace);
        let Some(lease) = self.runtime.block_on(api.get_opt(&target.name))? else {
            return Ok(());
        };
        if lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            != Some(&self.node)
        {
            return Ok(());
        }
        let released = Lease {
            metadata: ObjectMeta {
                name: lease.metadata.name.clone(),
                namespace: lease.metadata.namespace.clone(),
                resource_version: lease.metadata.resource_version.clone(),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: None,
                acquire_time: None,
                renew_time: None,
                ..lease.spec.clone().unwrap_or_default()
            }),
        };
        self.runtime
            .block_on(api.replace(&target.name, &PostParams::default(), &released))
            .with_context(|| format!("release the Lease {target}"))?;
        self.line(
            state,
            "lease",
            "LeaseReleased",
            &format!("released the Lease {target}"),
        );
        Ok(())
    }

    fn cordon(
        &mut self,
        state: &State,
        report: &crate::health::HealthReport,
        verdict: &Verdict,
        now: u64,
    ) -> Result<()> {
        if !self.may_take_out(state)? || !self.lease(state, now, true)? {
            return Ok(());
        }
        let before = match &self.flagged {
            Some((_, before, _)) => before.clone(),
            None => Self::snapshot(state, report),
        };
        let record = Record {
            phase: remediation::Phase::Cordoned,
            cause: verdict.cause.clone(),
            started_ns: self.flagged.as_ref().map_or(now, |f| f.0),
            phase_ns: now,
            before,
            boot_id: None,
            was_cordoned: self.node_unschedulable,
        };
        self.patch_node(json!({
            "metadata": {"annotations": {ANNOTATION: serde_json::to_string(&record)?}},
            "spec": {"unschedulable": true},
        }))?;
        if self.config.dry_run {
            self.dry_record = Some(record);
        }
        let message = format!("cordoned: {}", verdict.message);
        self.step(state, "cordon", true, "NetworkStallCordon", &message);
        Ok(())
    }

    fn set_phase(&mut self, mut record: Record, phase: remediation::Phase, now: u64) -> Result<()> {
        record.phase = phase;
        record.phase_ns = now;
        if phase == remediation::Phase::Rebooting {
            record.boot_id = boot_id();
        }
        self.patch_node(json!({
            "metadata": {"annotations": {ANNOTATION: serde_json::to_string(&record)?}},
        }))?;
        if self.config.dry_run {
            self.dry_record = Some(record);
        }
        Ok(())
    }

    fn drain(&mut self, state: &State, record: Record, now: u64) -> Result<()> {
        if !self.lease(state, now, false)? {
            return Ok(());
        }
        let deadline_ns = record.phase_ns + self.config.drain_timeout.as_nanos() as u64;
        let pods: Api<Pod> = Api::all(self.client.clone());
        let list = self
            .runtime
            .block_on(
                pods.list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node))),
            )
            .context("list the node's pods")?;
        let mut remaining = 0;
        for pod in &list.items {
            let info = pod_info(pod);
            if let Some(why) = skip_reason(&info) {
                self.line(
                    state,
                    "skip",
                    "EvictionSkipped",
                    &format!("{}/{}: {why}", info.namespace, info.name),
                );
                continue;
            }
            remaining += 1;
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if !self.evict(state, &info, deadline_ns)? {
                let message = format!(
                    "drain gave up after {}s: {}/{} is still protected by a PodDisruptionBudget; the node stays cordoned",
                    self.config.drain_timeout.as_secs(),
                    info.namespace,
                    info.name
                );
                self.set_phase(record, remediation::Phase::Probation, realtime_ns())?;
                self.step(state, "drain", true, "NetworkStallDrainTimeout", &message);
                return Ok(());
            }
        }
        if remaining > 0 && !self.config.dry_run && realtime_ns() > deadline_ns {
            let message = format!(
                "drain gave up after {}s: {remaining} pods still terminating; the node stays cordoned",
                self.config.drain_timeout.as_secs()
            );
            self.set_phase(record, remediation::Phase::Probation, realtime_ns())?;
            self.step(state, "drain", true, "NetworkStallDrainTimeout", &message);
            return Ok(());
        }
        if self.config.dry_run || remaining == 0 {
            self.set_phase(record, remediation::Phase::Drained, realtime_ns())?;
            self.step(
                state,
                "drain",
                true,
                "NetworkStallDrained",
                "drained: every evictable pod evicted",
            );
        }
        // Otherwise evicted pods are still terminating: the next tick looks again.
        Ok(())
    }

    /// Evicts one pod, retrying refusals by a PodDisruptionBudget (429)
    /// with backoff until `deadline_ns`; `Ok(false)` when it gave up. Any
    /// other error ends the tick.
    fn evict(&mut self, state: &State, pod: &PodInfo, deadline_ns: u64) -> Result<bool> {
        let who = format!("{}/{}", pod.namespace, pod.name);
        if self.config.dry_run {
            self.line(state, "evict", "Evict", &format!("would evict {who}"));
            return Ok(true);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let eviction = Eviction {
            metadata: ObjectMeta {
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                ..Default::default()
            },
            delete_options: None,
        };
        let mut backoff = Duration::from_millis(200);
        loop {
            let result: kube::Result<serde_json::Value> = self.runtime.block_on(
                api.create_subresource("eviction", &pod.name, &PostParams::default(), &eviction),
            );
            match result {
                Ok(_) => {
                    self.line(state, "evict", "Evicted", &format!("evicted {who}"));
                    return Ok(true);
                }
                Err(kube::Error::Api(status)) if status.code == 429 => {
                    self.line(
                        state,
                        "evict",
                        "EvictionRefused",
                        &format!("{who}: {} (retrying)", status.message),
                    );
                    if realtime_ns() + backoff.as_nanos() as u64 > deadline_ns {
                        return Ok(false);
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    // Still ours? Nothing destructive without the Lease.
                    if !self.lease(state, realtime_ns(), false)? {
                        return Err(anyhow!("lost the Lease while draining"));
                    }
                }
                // Gone already: nothing to move.
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(true),
                Err(e) => return Err(e).with_context(|| format!("evict {who}")),
            }
        }
    }

    fn reboot(&mut self, state: &State, record: Record, now: u64) -> Result<()> {
        if !self.lease(state, now, false)? {
            return Ok(());
        }
        if self.config.dry_run {
            let how = self.reboot_how();
            self.set_phase(record, remediation::Phase::Probation, now)?;
            self.step(
                state,
                "reboot",
                true,
                "NetworkStallReboot",
                &format!("would {how}"),
            );
            return Ok(());
        }
        // The annotation first: a host that restarts before it was written
        // would otherwise ask for a reboot again after the restart.
        self.set_phase(record.clone(), remediation::Phase::Rebooting, now)?;
        let how = self.reboot_how();
        let asked = match &self.config.reboot_command {
            Some(command) => std::process::Command::new("/bin/sh")
                .args(["-c", command])
                .status()
                .map_err(anyhow::Error::from)
                .and_then(|s| {
                    if s.success() {
                        Ok(())
                    } else {
                        Err(anyhow!("{s}"))
                    }
                }),
            None => std::fs::write(
                &self.config.reboot_sentinel,
                format!(
                    "netstall: {CONDITION} on {} ({})\n",
                    self.node, record.cause
                ),
            )
            .map_err(anyhow::Error::from),
        };
        match asked {
            Ok(()) => self.step(
                state,
                "reboot",
                true,
                "NetworkStallReboot",
                &format!("asked the host to reboot: {how}"),
            ),
            Err(e) => {
                let mut record = record;
                record.phase = remediation::Phase::Rebooting;
                self.set_phase(record, remediation::Phase::Probation, realtime_ns())?;
                self.step(
                    state,
                    "reboot",
                    true,
                    "NetworkStallRebootFailed",
                    &format!("cannot {how}: {e:#}"),
                );
            }
        }
        Ok(())
    }

    fn reboot_how(&self) -> String {
        match &self.config.reboot_command {
            Some(command) => format!("run `{command}`"),
            None => format!("write {}", self.config.reboot_sentinel.display()),
        }
    }

    fn finish(
        &mut self,
        state: &State,
        report: &crate::health::HealthReport,
        verdict: &Verdict,
        record: Record,
        now: u64,
    ) -> Result<()> {
        if record.was_cordoned {
            // Cordoned by someone else before: theirs to undo.
            self.patch_node(json!({"metadata": {"annotations": {ANNOTATION: null}}}))?;
            self.step(
                state,
                "uncordon",
                false,
                "NetworkStallUncordon",
                "healthy for the probation; left cordoned, as it was before",
            );
        } else {
            self.patch_node(json!({
                "metadata": {"annotations": {ANNOTATION: null}},
                "spec": {"unschedulable": null},
            }))?;
            self.step(
                state,
                "uncordon",
                false,
                "NetworkStallUncordon",
                "healthy for the probation: uncordoned",
            );
        }
        self.dry_record = None;
        self.set_condition(false, "NoNetworkStall", "no RX stalls")?;
        self.step(state, "condition", false, "NoNetworkStall", "no RX stalls");
        self.release_lease(state)?;
        self.flagged = None;
        self.quick_fix_ns = None;
        self.prove(
            state,
            report,
            verdict,
            record.cause,
            record.before,
            record.started_ns,
            now,
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn prove(
        &self,
        state: &State,
        report: &crate::health::HealthReport,
        verdict: &Verdict,
        cause: String,
        before: Snapshot,
        started_ns: u64,
        now: u64,
    ) {
        let after = Self::snapshot(state, report);
        let proof = Proof {
            node: self.node.clone(),
            mode: self.config.mode,
            cause_gone: remediation::cause_gone(
                &Verdict {
                    cause: cause.clone(),
                    ..verdict.clone()
                },
                &after,
                self.dying_limit,
            ),
            cause,
            before,
            after,
            duration_s: now.saturating_sub(started_ns) as f64 / 1e9,
            ts_ns: now,
        };
        state.event(proof.clone());
        let message = proof.message();
        if !self.config.dry_run {
            if let Err(e) =
                self.runtime
                    .block_on(self.create_event(false, "NetworkStallRemediated", &message))
            {
                eprintln!("netstall agent: remediation: cannot create the proof Event: {e}");
            }
        }
    }

    fn patch_node(&self, patch: serde_json::Value) -> Result<()> {
        if self.config.dry_run {
            return Ok(());
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        self.runtime
            .block_on(nodes.patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch)))
            .with_context(|| format!("patch node {}", self.node))?;
        Ok(())
    }

    /// The condition through nodes/status, a strategic merge by `type` (the
    /// kubelet's own conditions are untouched), as node-problem-detector does.
    fn set_condition(&mut self, status: bool, reason: &str, message: &str) -> Result<()> {
        if self.config.dry_run {
            self.dry_condition = Some(status);
            return Ok(());
        }
        let now = Time(Timestamp::now());
        let condition = json!({
            "type": CONDITION,
            "status": if status { "True" } else { "False" },
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        });
        let patch = json!({"status": {"conditions": [condition]}});
        let nodes: Api<Node> = Api::all(self.client.clone());
        self.runtime
            .block_on(nodes.patch_status(
                &self.node,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            ))
            .with_context(|| format!("set the {CONDITION} condition of node {}", self.node))?;
        Ok(())
    }

    /// An Event on the Node, shaped as node-problem-detector's.
    async fn create_event(
        &self,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> kube::Result<Event> {
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", self.node, now.as_nanosecond())),
                namespace: Some(EVENT_NAMESPACE.to_string()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("Node".into()),
                name: Some(self.node.clone()),
                uid: Some(self.node.clone()),
                ..Default::default()
            },
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
            source: Some(EventSource {
                component: Some(COMPONENT.to_string()),
                host: Some(self.node.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), EVENT_NAMESPACE);
        api.create(&PostParams::default(), &event).await
    }
}

fn timestamp(ns: u64) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(ns)).unwrap_or_else(|_| Timestamp::now())
}

fn has_condition(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == CONDITION && c.status == "True"))
}

fn record_of(node: &Node) -> Result<Option<Record>> {
    let annotations: Option<&BTreeMap<String, String>> = node.metadata.annotations.as_ref();
    match annotations.and_then(|a| a.get(ANNOTATION)) {
        None => Ok(None),
        Some(text) => serde_json::from_str(text)
            .map(Some)
            .with_context(|| format!("the node's {ANNOTATION} annotation is not netstall's")),
    }
}

fn lease_view(lease: &Lease) -> LeaseView {
    let spec = lease.spec.as_ref();
    LeaseView {
        holder: spec.and_then(|s| s.holder_identity.clone()),
        renew_ns: spec
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.as_nanosecond().max(0) as u64),
        duration_s: spec.and_then(|s| s.lease_duration_seconds),
    }
}

fn pod_info(pod: &Pod) -> PodInfo {
    let meta = &pod.metadata;
    PodInfo {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        owner_kinds: meta
            .owner_references
            .iter()
            .flatten()
            .map(|o| o.kind.clone())
            .collect(),
        mirror: meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror")),
        app: meta
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/name").cloned()),
        finished: pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed"),
    }
}

/// This boot's id: changes when the host restarts.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}
