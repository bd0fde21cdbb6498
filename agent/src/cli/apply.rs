//! `nodewall apply`: install a config's policy once, with the anti-lockout guards: the SSH
//! session check (`--force` skips it), the node lock shared with `nodewall run`, and
//! `--confirm SECS` (roll back unless `nodewall confirm` runs in time).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use nodewall::apply::confirm;
use nodewall::apply::lock::{Role, StateLock};
use nodewall::apply::lockout;
use nodewall::apply::source;
use nodewall::apply::state::{self, Pending, Snapshot, StateDir};
use nodewall::backend::{interfaces, ApplyReport, Backend};
use nodewall::config::BackendKind;
use nodewall::policy::Mode;

use super::select::{self, BackendArg};
use super::{output, ConfigArg, EXIT_INVALID};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Override the config's backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Print the apply report as JSON.
    #[arg(long)]
    json: bool,
    /// Roll back to the previous policy unless `nodewall confirm` runs within SECS seconds.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    confirm: Option<u64>,
    /// Apply even if the policy would cut the SSH session it is applied from
    /// (SSH_CONNECTION).
    #[arg(long)]
    force: bool,
    /// Lock and rollback state, shared with `nodewall run` and `nodewall confirm`.
    #[arg(long, value_name = "DIR", default_value = state::DEFAULT_DIR)]
    state_dir: PathBuf,
    /// Internal: run as the rollback watchdog of `--confirm`, holding the lock on this fd.
    #[arg(long, hide = true, value_name = "FD")]
    rollback_watchdog: Option<i32>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(fd) = args.rollback_watchdog {
        return watchdog(fd, &args.state_dir);
    }
    keep_freed_memory();
    let path = &args.config.config;
    let desired = match source::read_config(path).and_then(|d| from_state(d, &args.state_dir)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let mut policy = desired.policy;
    if !args.force {
        if let Ok(session) = std::env::var("SSH_CONNECTION") {
            if let Err(lockout) = lockout::check_ssh(&policy, &session) {
                eprintln!("nodewall: refused: {lockout}");
                return Ok(ExitCode::from(EXIT_INVALID));
            }
        }
        if let (Ok(host), Ok(port)) = (
            std::env::var("KUBERNETES_SERVICE_HOST"),
            std::env::var("KUBERNETES_SERVICE_PORT"),
        ) {
            if let Err(lockout) = lockout::check_api_server(&policy, &host, &port) {
                eprintln!("nodewall: refused: {lockout}");
                return Ok(ExitCode::from(EXIT_INVALID));
            }
        }
    }
    let state = StateDir::new(&args.state_dir);
    let lock = match super::lock::take(&state, StateDir::lock_for_apply) {
        Ok(l) => l,
        Err(code) => return Ok(code),
    };
    let mut backend = select::for_apply(args.backend, desired.backend, Some(&args.state_dir))?;
    let configured = std::mem::take(&mut policy.interfaces);
    policy.interfaces = match interfaces::resolve(&configured, backend.matches_by_name()) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{}: {e:#} (backend {})", path.display(), backend.name());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let previous = match args.confirm {
        Some(_) => rollback_target(&state, backend.as_ref())?,
        None => None,
    };
    let snapshot = Snapshot {
        backend: backend.name().to_string(),
        config_path: std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.clone())
            .display()
            .to_string(),
        config: desired.text,
    };
    // The snapshot of an unconfirmed apply is written on the other core while the kernel takes
    // the policy, and put in force only once the policy is.
    let (report, staged) = std::thread::scope(|scope| {
        let staged = args
            .confirm
            .is_none()
            .then(|| scope.spawn(|| state.stage_applied(&snapshot)));
        let report = backend.apply(&policy);
        let staged = staged.map(|s| s.join().expect("writing the snapshot does not panic"));
        (report, staged)
    });
    let report = report?;
    let deadline = match args.confirm {
        Some(secs) => Some(arm_rollback(&state, &lock, previous, snapshot, secs)?),
        None => {
            if let Err(e) = staged
                .expect("staged without --confirm")
                .and_then(|s| s.commit())
            {
                eprintln!("nodewall: warning: {e:#} (a later apply --confirm cannot roll back to this policy)");
            }
            None
        }
    };
    let done = Applied {
        report,
        backend: backend.name(),
        mode: policy.mode,
        unmatched: interfaces::unmatched(&policy.interfaces, &interfaces::links()?)
            .into_iter()
            .map(String::from)
            .collect(),
        interfaces: policy.interfaces.clone(),
    };
    if args.json {
        output::print_json(&done)?;
    } else {
        let mut out = output::stdout();
        let rules = match policy.egress.rules.len() {
            0 => format!("{} rules", policy.rules.len()),
            n => format!("{} rules, {n} egress rules", policy.rules.len()),
        };
        print_applied(&mut out, &done, &rules)?;
        out.flush()?;
    }
    if let Some(secs) = deadline {
        eprintln!("nodewall: rolls back in {secs} s unless `nodewall confirm` is run");
    }
    Ok(ExitCode::SUCCESS)
}

/// What `apply` reports (`--json`: this object).
#[derive(serde::Serialize)]
struct Applied {
    #[serde(flatten)]
    report: ApplyReport,
    backend: &'static str,
    mode: Mode,
    /// What the backend was given: names and `eth*` patterns (nft), or interfaces (XDP).
    interfaces: Vec<String>,
    /// Of `interfaces`, those that select no interface now: nothing is filtered there until
    /// an interface of a matching name appears.
    unmatched: Vec<String>,
}

fn print_applied(out: &mut impl Write, a: &Applied, rules: &str) -> std::io::Result<()> {
    let r = &a.report;
    let mode = match a.mode {
        Mode::Enforce => "enforce mode",
        Mode::Audit => "audit mode (nothing is dropped: would-be drops are counted and accepted)",
    };
    let verb = if a.unmatched.len() == a.interfaces.len() {
        "installed (filtering nothing yet)"
    } else {
        "applied"
    };
    writeln!(
        out,
        "{verb} generation {} with backend {} in {mode} on {} ({rules}, +{} -{}, {:.1} ms{})",
        r.generation,
        a.backend,
        a.interfaces.join(","),
        r.added,
        r.removed,
        r.duration.as_secs_f64() * 1e3,
        if r.changed { "" } else { ", unchanged" }
    )?;
    if !a.unmatched.is_empty() {
        writeln!(
            out,
            "note: no interface matches {} yet: nothing is filtered there until an interface of that name appears, which the {} backend then filters at once",
            a.unmatched.join(", "),
            a.backend
        )?;
    }
    Ok(())
}

/// Resolves the config's networks discovered from the Kubernetes API from what the agent
/// persisted in `state_dir`: a one-shot `apply` does not talk to the API. An entry with nothing
/// persisted is an error, never an empty set.
fn from_state(mut desired: source::Desired, state_dir: &Path) -> Result<source::Desired, String> {
    if desired.api.is_none() {
        return Ok(desired);
    }
    let sets = StateDir::new(state_dir)
        .discovered()
        .map_err(|e| format!("{e:#}"))?
        .unwrap_or_default();
    desired.resolve(&sets)?;
    match desired.missing() {
        [] => Ok(desired),
        missing => Err(format!(
            "{}\nnodewall: these networks come from the Kubernetes API and {} holds no sets an agent discovered: run `nodewall run`, or write them as CIDRs",
            missing.join("\n"),
            StateDir::new(state_dir).file(state::DISCOVERED).display()
        )),
    }
}

/// Lets this one-shot process reuse the memory it frees instead of handing it back to the
/// kernel. With glibc's defaults every large buffer is a fresh `mmap` whose pages fault in one
/// at a time and go back at `free`; an apply of a 10k-CIDR config frees its parse tree and
/// then builds a netlink batch of the same size, and those page faults cost about as much as
/// reading the YAML. The process exits moments later, so holding on costs nothing.
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: only sets allocator parameters, before this process allocates much or starts
    // a thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// What a confirmed apply rolls back to: the last confirmed config when a policy is installed,
/// nothing (flush) when none is.
fn rollback_target(state: &StateDir, backend: &dyn Backend) -> anyhow::Result<Option<Snapshot>> {
    let installed = backend.status().map(|s| s.installed).unwrap_or(false);
    if !installed {
        return Ok(None);
    }
    match state.applied()? {
        Some(s) => Ok(Some(s)),
        None => anyhow::bail!(
            "--confirm: a policy is installed but {} holds no snapshot of it to roll back to; apply once without --confirm",
            state.applied_file().display()
        ),
    }
}

/// Records the pending apply and leaves a watchdog that holds the lock until confirmation or
/// rollback. Returns the number of seconds granted.
fn arm_rollback(
    state: &StateDir,
    lock: &StateLock,
    previous: Option<Snapshot>,
    new: Snapshot,
    secs: u64,
) -> anyhow::Result<u64> {
    let pending = Pending {
        deadline_unix: confirm::now_unix() + secs,
        previous,
        new,
    };
    state.save_pending(&pending)?;
    if let Err(e) = spawn_watchdog(state, lock) {
        // Nobody would roll back: do it now rather than leave an unguarded policy.
        let _ = state.claim_pending("rolling-back.json");
        let undone = confirm::rollback(
            &pending,
            &open_by_name,
            &source::config_parser_from(state.clone()),
        );
        anyhow::bail!(
            "--confirm: could not start the rollback watchdog ({e}); rolled back: {undone:?}"
        );
    }
    Ok(secs)
}

/// Re-runs this binary detached (own session: the SSH session ending does not signal it),
/// inheriting the lock's file descriptor so that the lock is never free in between.
fn spawn_watchdog(state: &StateDir, lock: &StateLock) -> anyhow::Result<()> {
    let fd = lock.inheritable_fd()?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.file("rollback.log"))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("apply")
        .arg("--state-dir")
        .arg(state.root())
        .arg("--rollback-watchdog")
        .arg(fd.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()?;
    Ok(())
}

fn watchdog(fd: i32, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let state = StateDir::new(state_dir);
    // SAFETY: the parent passed us this descriptor of its lock file and nothing else uses it.
    let _lock = unsafe { StateLock::from_inherited_fd(fd, state_dir, Role::RollbackWatchdog) }?;
    tracing::info!(state = %state_dir.display(), "rollback watchdog: waiting for `nodewall confirm`");
    let Some(pending) = confirm::wait(&state)? else {
        tracing::info!("rollback watchdog: confirmed, exiting");
        return Ok(ExitCode::SUCCESS);
    };
    match confirm::rollback(
        &pending,
        &open_by_name,
        &source::config_parser_from(state.clone()),
    ) {
        Ok(done) => {
            tracing::warn!("not confirmed in time: {done}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "not confirmed in time, and the rollback failed");
            Ok(ExitCode::from(1))
        }
    }
}

fn open_by_name(name: &str) -> anyhow::Result<Box<dyn Backend>> {
    let arg = if name == "xdp" {
        BackendArg::Xdp
    } else {
        BackendArg::Nft
    };
    select::for_apply(arg, BackendKind::Auto, None)
}
