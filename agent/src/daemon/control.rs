//! The control loop: keeps the kernel equal to the config file.
//!
//! One task owns all decisions, so applies never overlap: config changes (inotify, a periodic
//! re-read as a safety net), SIGHUP, the drift check and apply retries are all handled here in
//! turn. Every apply is atomic in the backend; when one fails, the previous policy stays.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::diff::{Names, PolicyDiff};
use super::health::Health;
use super::watch::ConfigWatcher;
use super::worker::Worker;
use crate::apply::source::{self, Desired, Parser};
use crate::apply::state::{Snapshot, StateDir};
use crate::backend::interfaces;
use crate::config::ApiItem;
use crate::discovery::status::{self, NetworkSize};
use crate::discovery::{self, Change, Discovered, Discovery, NodeStatus};
use crate::metrics::Metrics;
use crate::policy::Policy;

/// Requests from outside the loop (signals, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGHUP: re-read the config and re-apply even if it did not change.
    Reload,
    /// SIGTERM/SIGINT.
    Shutdown,
}

/// Why an apply happened, logged with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Start,
    FileChange,
    Sighup,
    Retry,
    Drift,
    InterfacesChanged,
    Discovery,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::FileChange => "config-change",
            Trigger::Sighup => "sighup",
            Trigger::Retry => "retry",
            Trigger::Drift => "drift-repair",
            Trigger::InterfacesChanged => "interfaces-changed",
            Trigger::Discovery => "discovery",
        }
    }
}

/// Re-read the file this often even without inotify events (lost events, exotic filesystems).
const POLL_EVERY: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Repairs in a row after which the drift check slows down: something keeps undoing the
/// policy (or the backend's verify is wrong), and applying every second would only add load.
const REPAIR_STREAK_SLOWDOWN: u32 = 5;

/// What the loop works with, fixed for its lifetime.
pub(super) struct Context {
    pub hub: Arc<super::hub::Hub>,
    pub config: PathBuf,
    pub parser: Parser,
    pub worker: Worker,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub state: StateDir,
    pub check_interval: Duration,
}

pub(super) struct Control {
    cx: Context,
    desired: Desired,
    /// The policy the kernel holds (interfaces resolved), once an apply succeeded.
    applied: Option<Policy>,
    /// Whether `applied` corresponds to `desired`.
    in_sync: bool,
    failures: u32,
    /// No apply or drift check before this instant (retry and repair backoff).
    next_attempt: Instant,
    repair_streak: u32,
    /// The text of the last config that was rejected, so the same bad file is reported once.
    rejected: Option<String>,
    last_poll: Instant,
    /// The backend's [`crate::backend::Backend::matches_by_name`], asked at start.
    by_name: bool,
    /// The last apply failed because no interface matched the config's yet.
    waiting_for_interfaces: bool,
    api: ApiState,
}

/// What the loop keeps about the Kubernetes API (see `crate::discovery`).
#[derive(Default)]
struct ApiState {
    /// Running when the config uses the API.
    discovery: Option<Discovery>,
    /// The discovered sets `desired` was resolved with (at start: the persisted ones).
    sets: Arc<Discovered>,
    /// The sets last saved in the state directory.
    saved: Option<Arc<Discovered>>,
    /// Why the next apply happens: (why, what changed), for discovery changes.
    cause: Option<(String, String)>,
    /// The API entries last reported missing or empty, so each state is logged once.
    logged: (Vec<String>, Vec<String>),
    generation: u64,
}

impl Control {
    pub fn new(cx: Context, desired: Desired) -> Self {
        Self {
            cx,
            desired,
            applied: None,
            in_sync: false,
            failures: 0,
            next_attempt: Instant::now(),
            repair_streak: 0,
            rejected: None,
            last_poll: Instant::now(),
            by_name: false,
            waiting_for_interfaces: false,
            api: ApiState::default(),
        }
    }

    /// Connects to the Kubernetes API if the config uses it, starting from the sets persisted
    /// by the last run. Err (the config cannot be used) when it has no way to reach the API and
    /// nothing persisted to start from.
    pub async fn connect(&mut self) -> Result<(), String> {
        if self.desired.api.is_some() {
            match self.cx.state.discovered() {
                Ok(sets) => self.api.sets = Arc::new(sets.unwrap_or_default()),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "ignoring the persisted discovered sets")
                }
            }
        }
        let mut desired = self.desired.clone();
        self.follow_api(&mut desired).await?;
        self.desired = desired;
        Ok(())
    }

    /// Starts or stops discovery as `desired` needs it, tells it the API entries to follow, and
    /// resolves `desired` against the sets at hand. Err: why `desired` cannot be used.
    async fn follow_api(&mut self, desired: &mut Desired) -> Result<(), String> {
        let Some(api) = desired.api.as_ref() else {
            self.api.discovery = None;
            return Ok(());
        };
        let (config, file) = (api.config.clone(), api.file.clone());
        let entries: Vec<&ApiItem> = config.discovered.values().flatten().collect();
        match &self.api.discovery {
            Some(d) if d.settings() != config.kubernetes.as_ref() => {
                return Err(format!(
                    "{file}: kubernetes: changed; it is read at start, restart nodewall to apply it"
                ));
            }
            Some(_) => {}
            None => {
                let started = Discovery::start(
                    config.kubernetes.as_ref(),
                    config.writes_status(),
                    (*self.api.sets).clone(),
                    self.cx.metrics.clone(),
                )
                .await;
                match started {
                    Ok(d) => self.api.discovery = Some(d),
                    Err(e) => {
                        desired.resolve(&self.api.sets)?;
                        let Some(first) = entries.first().filter(|_| !desired.missing().is_empty())
                        else {
                            if entries.is_empty() {
                                return Err(format!("{file}: kubernetes: {e}"));
                            }
                            tracing::warn!(error = %e, "applying the discovered networks persisted by the last run; they will not follow the cluster");
                            return Ok(());
                        };
                        return Err(discovery::sets::located(&file, first, &e));
                    }
                }
            }
        }
        if let Some(d) = &self.api.discovery {
            d.set_sources(entries.iter().map(|i| i.source.clone()).collect());
        }
        desired.resolve(&self.api.sets)
    }

    /// New discovered sets: re-applies if the policy they make differs from the applied one.
    async fn rediscovered(&mut self, change: Change) {
        self.api.sets = change.sets;
        let mut desired = self.desired.clone();
        if let Err(e) = desired.resolve(&self.api.sets) {
            tracing::error!(error = %e, "discovered networks");
            return;
        }
        let same = self.in_sync
            && desired.missing().is_empty()
            && self
                .applied
                .as_ref()
                .is_some_and(|a| a.rules == desired.policy.rules);
        self.desired = desired;
        if same {
            tracing::debug!(why = %change.why, what = %change.what, "discovered sets changed, the policy did not");
            self.save_sets();
            return;
        }
        self.api.cause = Some((change.why, change.what));
        self.in_sync = false;
        self.apply(Trigger::Discovery).await;
    }

    fn save_sets(&mut self) {
        if self.desired.api.is_none()
            || self
                .api
                .saved
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &self.api.sets))
        {
            return;
        }
        match self.cx.state.save_discovered(&self.api.sets) {
            Ok(()) => self.api.saved = Some(self.api.sets.clone()),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not persist the discovered sets")
            }
        }
    }

    /// Logs the API entries that are missing or empty, each time that list changes.
    fn log_entries(&mut self) {
        let Some(api) = &self.desired.api else { return };
        let now = (api.missing.clone(), api.empty.clone());
        if now == self.api.logged {
            return;
        }
        if !now.0.is_empty() {
            tracing::warn!(entries = %now.0.join(" | "), "not applying: waiting for the first sync of networks discovered from the Kubernetes API");
        }
        if !now.1.is_empty() {
            tracing::warn!(entries = %now.1.join(" | "), "networks discovered from the Kubernetes API: entries with no address");
        }
        self.api.logged = now;
    }

    /// Tells the status writer (if any) how the last apply went.
    fn report(&self, result: &str, message: String) {
        let Some(d) = &self.api.discovery else { return };
        let policy = self.applied.as_ref().unwrap_or(&self.desired.policy);
        let api = self.desired.api.as_ref();
        let mut networks: BTreeMap<&str, u64> = BTreeMap::new();
        for ((name, _), n) in api.map(|a| &a.counts).into_iter().flatten() {
            *networks.entry(name).or_default() += *n as u64;
        }
        d.report(NodeStatus {
            backend: self.cx.worker.backend_name().to_string(),
            mode: match policy.mode {
                crate::config::Mode::Enforce => "enforce".into(),
                crate::config::Mode::Audit => "audit".into(),
            },
            generation: self.api.generation,
            digest: policy.digest(),
            last_apply_time: status::rfc3339(crate::apply::confirm::now_unix()),
            result: result.into(),
            message,
            networks: networks
                .into_iter()
                .map(|(name, addresses)| NetworkSize {
                    name: name.to_string(),
                    addresses,
                })
                .collect(),
            sets_synced_time: api
                .and_then(|a| a.synced_at)
                .map(status::rfc3339)
                .unwrap_or_default(),
            ..NodeStatus::default()
        });
    }

    /// First apply: replaces whatever a previous run left, atomically (no flush, no gap).
    pub async fn start(&mut self) {
        self.by_name = self
            .cx
            .worker
            .call(|b| b.matches_by_name())
            .await
            .unwrap_or(false);
        let adopted = self
            .cx
            .worker
            .call(|b| b.status().map(|s| (s.installed, s.generation)))
            .await;
        if let Ok(Ok((true, generation))) = adopted {
            tracing::info!(
                generation,
                "adopting the policy a previous run left installed"
            );
        }
        self.apply(Trigger::Start).await;
    }

    /// Runs until [`Event::Shutdown`] (or every event sender is gone).
    pub async fn run(
        &mut self,
        watcher: ConfigWatcher,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        let mut watcher = Some(watcher);
        let mut tick = tokio::time::interval(self.cx.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(Event::Reload) => self.reload(Trigger::Sighup).await,
                    Some(Event::Shutdown) | None => return,
                },
                res = changed(&mut watcher) => match res {
                    Ok(()) => self.reload(Trigger::FileChange).await,
                    Err(e) => {
                        tracing::error!(error = %e, "config watch failed; relying on periodic re-reads");
                        watcher = None;
                    }
                },
                _ = tick.tick() => self.on_tick().await,
                change = next_change(&mut self.api.discovery) => self.rediscovered(change).await,
            }
        }
    }

    async fn on_tick(&mut self) {
        self.cx.health.beat();
        if !self.in_sync {
            if Instant::now() >= self.next_attempt {
                self.apply(Trigger::Retry).await;
            } else if self.waiting_for_interfaces
                && interfaces::resolve(&self.desired.policy.interfaces, self.by_name).is_ok()
            {
                // An interface the config selects appeared: no need to wait for the backoff.
                self.apply(Trigger::InterfacesChanged).await;
            }
            return;
        }
        if self.last_poll.elapsed() >= POLL_EVERY {
            self.last_poll = Instant::now();
            if let Ok(text) = source::read(&self.cx.config) {
                if text != self.desired.text && Some(&text) != self.rejected.as_ref() {
                    self.reload(Trigger::FileChange).await;
                    return;
                }
            }
        }
        if Instant::now() < self.next_attempt {
            return;
        }
        if self.interfaces_changed() {
            self.apply(Trigger::InterfacesChanged).await;
            return;
        }
        self.check_drift().await;
    }

    /// Follows the interfaces a policy is enforced on: the default-route ones when the config
    /// names none (routing changes), and, for a backend that attaches to interfaces (XDP),
    /// the existing ones that the config's names and `eth*` patterns select (interfaces come
    /// and go). A backend that matches names in the kernel (nft) needs nothing of this.
    fn interfaces_changed(&self) -> bool {
        let Some(applied) = &self.applied else {
            return false;
        };
        let configured = &self.desired.policy.interfaces;
        if !configured.is_empty() && self.by_name {
            return false;
        }
        match interfaces::resolve(configured, self.by_name) {
            Ok(now) => now != applied.interfaces,
            Err(_) => false,
        }
    }

    async fn check_drift(&mut self) {
        let Some(policy) = self.applied.clone() else {
            return;
        };
        let metrics = self.cx.metrics.clone();
        let verified = self.cx.worker.call(move |b| {
            // Reading counters here too bounds what a deleted table takes with it to one
            // check interval of counts.
            super::observe_counters(b, &metrics);
            b.verify(&policy)
        });
        match verified.await {
            Ok(Ok(true)) => self.repair_streak = 0,
            Ok(Ok(false)) => {
                tracing::warn!("drift: the installed policy was altered or removed; restoring it");
                if self.apply(Trigger::Drift).await {
                    self.cx.metrics.drift_repaired();
                    self.repair_streak += 1;
                    if self.repair_streak >= REPAIR_STREAK_SLOWDOWN {
                        let wait = backoff(self.repair_streak - REPAIR_STREAK_SLOWDOWN + 1);
                        tracing::error!(
                            repairs_in_a_row = self.repair_streak,
                            next_check_s = wait.as_secs(),
                            "the policy keeps drifting right after each repair; is another tool managing it?"
                        );
                        self.next_attempt = Instant::now() + wait;
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "drift check failed"),
            Err(e) => tracing::error!(error = %e, "drift check failed"),
        }
    }

    async fn reload(&mut self, trigger: Trigger) {
        let forced = trigger == Trigger::Sighup;
        let text = match source::read(&self.cx.config) {
            Ok(t) => t,
            Err(e) => {
                self.reject(trigger, e, None);
                return;
            }
        };
        if !forced && text == self.desired.text {
            tracing::debug!("config file touched but unchanged");
            return;
        }
        if !forced && Some(&text) == self.rejected.as_ref() {
            return;
        }
        let desired = match (self.cx.parser)(&text, &self.cx.config) {
            Ok(d) => d,
            Err(e) => return self.reject(trigger, e, Some(text)),
        };
        let mut desired = desired;
        if desired.backend != self.desired.backend {
            let msg = format!(
                "{}: backend: changed from {:?} to {:?}; the backend is chosen at start, restart nodewall to switch",
                self.cx.config.display(),
                self.desired.backend,
                desired.backend
            )
            .to_lowercase();
            return self.reject(trigger, msg, Some(text));
        }
        if let Err(e) = self.follow_api(&mut desired).await {
            return self.reject(trigger, e, Some(text));
        }
        self.rejected = None;
        self.desired = desired;
        self.in_sync = false;
        self.failures = 0;
        self.apply(trigger).await;
    }

    fn reject(&mut self, trigger: Trigger, error: String, text: Option<String>) {
        tracing::error!(
            trigger = trigger.as_str(),
            error = %error,
            "config rejected; the running policy stays installed"
        );
        self.cx.metrics.config_reload_failed();
        self.rejected = text;
    }

    /// Installs `desired`; returns whether it succeeded. On failure, schedules a retry.
    async fn apply(&mut self, trigger: Trigger) -> bool {
        self.log_entries();
        if !self.desired.missing().is_empty() {
            self.report("Waiting", self.desired.missing().join("; "));
            self.in_sync = false;
            self.next_attempt = Instant::now() + self.cx.check_interval;
            return false;
        }
        let started = Instant::now();
        let mut policy = self.desired.policy.clone();
        let resolved = interfaces::resolve(&policy.interfaces, self.by_name);
        self.waiting_for_interfaces = resolved.is_err();
        let result = match resolved {
            Ok(ifaces) => {
                policy.interfaces = ifaces;
                let metrics = self.cx.metrics.clone();
                let p = policy.clone();
                self.cx
                    .worker
                    .call(move |b| {
                        // Read counters on both sides of the apply: a reset by the apply is
                        // then seen as one (see `Metrics::observe_counters`).
                        super::observe_counters(b, &metrics);
                        let report = b.apply(&p);
                        super::observe_counters(b, &metrics);
                        report
                    })
                    .await
                    .and_then(|r| r)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(report) => {
                let diff = PolicyDiff::between(self.applied.as_ref(), &policy);
                let (why, what) = self.api.cause.take().unzip();
                let audit = policy.mode == crate::policy::Mode::Audit;
                tracing::info!(
                    trigger = trigger.as_str(),
                    backend = self.cx.worker.backend_name(),
                    generation = report.generation,
                    rules = policy.rules.len(),
                    interfaces = %policy.interfaces.join(","),
                    duration_ms = report.duration.as_micros() as f64 / 1e3,
                    changed = report.changed,
                    entries_added = report.added,
                    entries_removed = report.removed,
                    mode = match policy.mode {
                        crate::policy::Mode::Enforce => "enforce",
                        crate::policy::Mode::Audit => "audit",
                    },
                    rules_added = diff.added.len(),
                    rules_removed = diff.removed.len(),
                    rules_changed = diff.changed.len(),
                    added_rules = %Names(&diff.added),
                    removed_rules = %Names(&diff.removed),
                    changed_rules = %Names(&diff.changed),
                    why = why.as_deref(),
                    sets_changed = what.as_deref(),
                    "{}",
                    if audit {
                        "policy applied in audit mode: nothing is dropped; packets it denies are passed, counted and sampled as would-drop"
                    } else {
                        "policy applied"
                    }
                );
                let renewed = diff.added.iter().chain(&diff.changed).cloned().collect();
                self.cx.metrics.usage.installed(&policy, &renewed);
                self.cx.hub.applied(&policy, self.desired.flow_log.as_ref());
                self.cx
                    .metrics
                    .apply_succeeded(report.generation, report.duration);
                self.cx.metrics.policy_enforced(&policy.digest());
                self.cx
                    .metrics
                    .set_audit(policy.mode == crate::policy::Mode::Audit);
                self.cx.health.set_ready();
                self.save_snapshot();
                self.applied = Some(policy);
                self.in_sync = true;
                self.failures = 0;
                self.next_attempt = Instant::now();
                if let Some(api) = &self.desired.api {
                    self.cx.metrics.discovery.addresses(&api.counts);
                }
                self.save_sets();
                self.api.generation = report.generation;
                self.report("Applied", String::new());
                true
            }
            Err(e) => {
                self.failures += 1;
                let wait = backoff(self.failures);
                tracing::error!(
                    trigger = trigger.as_str(),
                    error = %format!("{e:#}"),
                    retry_in_s = wait.as_secs_f64(),
                    "apply failed; the previous policy stays installed"
                );
                self.cx.metrics.apply_failed(started.elapsed());
                self.in_sync = false;
                self.next_attempt = Instant::now() + wait;
                self.api.cause = None;
                self.report("Failed", format!("{e:#}"));
                false
            }
        }
    }

    fn save_snapshot(&self) {
        let snapshot = Snapshot {
            backend: self.cx.worker.backend_name().to_string(),
            config_path: self.cx.config.display().to_string(),
            config: self.desired.text.clone(),
        };
        if let Err(e) = self.cx.state.save_applied(&snapshot) {
            tracing::warn!(error = %e, "could not save the applied config snapshot");
        }
    }

    pub async fn shutdown(&mut self, flush: bool) {
        if !flush {
            tracing::info!(
                "exiting; the policy stays installed (use --flush-on-exit to remove it)"
            );
            return;
        }
        match self.cx.worker.call(|b| b.flush()).await.and_then(|r| r) {
            Ok(()) => tracing::info!("exiting; policy flushed (--flush-on-exit)"),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "flush on exit failed"),
        }
    }
}

/// The watcher's next change, or never once it has failed.
async fn changed(watcher: &mut Option<ConfigWatcher>) -> std::io::Result<()> {
    match watcher {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// The next change of the discovered sets, or never without discovery.
async fn next_change(discovery: &mut Option<Discovery>) -> Change {
    match discovery {
        Some(d) => match d.next_change().await {
            Some(c) => c,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// 1 s, 2 s, 4 s ... capped at [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(5);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}
