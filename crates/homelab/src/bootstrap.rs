//! `homelab bootstrap`: install Flux on the local k3s and point it at this repository. Run by
//! systemd at every boot, so every step is idempotent, and offline: the Flux controllers come
//! from the install manifests the flake carries for the pinned release (nixos/flux/install.yaml),
//! never from GitHub. The `sops-age` Secret that lets Flux decrypt the cluster's secrets is made
//! from Flux's own age key (a host secret; never the host's key, which opens every backup) and
//! handed to kubectl on stdin: it never passes through argv, a file, or the Nix store.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;

use crate::exit::ExitStatus;
use crate::process::{self, Cancel};

const FIELD_MANAGER: &str = "--field-manager=homelab";
const API_RETRY: Duration = Duration::from_secs(5);
const STEP_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Args)]
pub struct BootstrapCmd {
    /// kubeconfig of the local cluster.
    #[arg(
        long,
        env = "KUBECONFIG",
        default_value = "/etc/rancher/k3s/k3s.yaml",
        value_name = "FILE"
    )]
    pub kubeconfig: PathBuf,
    /// Flux's own age key (the host secret flux/age-key, which sops-nix decrypts): what the
    /// cluster's *.sops.yaml are encrypted to. Never the host's key.
    #[arg(long, value_name = "FILE")]
    pub age_key: PathBuf,
    /// The GitRepository and root Kustomization to apply (flux/clusters/<host>/flux-system-sync.yaml).
    #[arg(long, value_name = "FILE")]
    pub sync: PathBuf,
    /// The Flux controllers' install manifests (nixos/flux/install.yaml: `flux install
    /// --export` of homelab.toml's flux-version).
    #[arg(long, value_name = "FILE")]
    pub flux_manifests: PathBuf,
    /// How long to wait for the Kubernetes API after boot.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub api_timeout: Duration,
}

pub fn run(cmd: &BootstrapCmd) -> ExitStatus {
    for (flag, file) in [
        ("--sync", &cmd.sync),
        ("--flux-manifests", &cmd.flux_manifests),
    ] {
        if !file.is_file() {
            eprintln!("error: {flag} {}: no such file", file.display());
            return ExitStatus::Error;
        }
    }
    match bootstrap(cmd) {
        Ok(()) => {
            println!("flux bootstrapped from {}", cmd.sync.display());
            ExitStatus::Success
        }
        Err(err) => {
            tracing::error!("bootstrap failed: {err:#}");
            ExitStatus::Failure
        }
    }
}

fn bootstrap(cmd: &BootstrapCmd) -> anyhow::Result<()> {
    let key = std::fs::read_to_string(&cmd.age_key).with_context(|| {
        format!(
            "cannot read Flux's age key {} (sops-nix decrypts it from the host secret \
             flux/age-key at activation)",
            cmd.age_key.display()
        )
    })?;
    anyhow::ensure!(
        key.lines().any(|l| l.starts_with("AGE-SECRET-KEY-1")),
        "{} holds no age secret key (still the placeholder? put Flux's key in the host \
         secret flux/age-key: README, \"Flux's own key\")",
        cmd.age_key.display()
    );
    let cancel = Cancel::install().context("cannot install signal handlers")?;
    wait_for_api(cmd, &cancel)?;
    apply(
        cmd,
        "install the Flux controllers",
        &cmd.flux_manifests.to_string_lossy(),
        None,
        &cancel,
    )?;
    // The sync's GitRepository and Kustomization need Flux's CRDs served first.
    step(
        "wait for Flux's CRDs",
        &mut kubectl(
            &cmd.kubeconfig,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=5m",
                "crd",
                "--selector=app.kubernetes.io/part-of=flux",
            ],
        ),
        None,
        &cancel,
    )?;
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": "sops-age", "namespace": "flux-system" },
        "type": "Opaque",
        "stringData": { "age.agekey": key },
    });
    apply(
        cmd,
        "create the sops-age Secret",
        "-",
        Some(serde_json::to_vec(&secret)?),
        &cancel,
    )?;
    apply(
        cmd,
        "apply the Flux sync",
        &cmd.sync.to_string_lossy(),
        None,
        &cancel,
    )
}

/// Server-side apply: a client-side apply would copy the Secret's key into an annotation.
fn apply(
    cmd: &BootstrapCmd,
    what: &str,
    file: &str,
    input: Option<Vec<u8>>,
    cancel: &Cancel,
) -> anyhow::Result<()> {
    let args = [
        "apply",
        "--server-side",
        "--force-conflicts",
        FIELD_MANAGER,
        "-f",
        file,
    ];
    step(what, &mut kubectl(&cmd.kubeconfig, &args), input, cancel)
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("kubectl");
    command.arg("--kubeconfig").arg(kubeconfig).args(args);
    command
}

/// k3s starts before its API answers; wait for `/readyz`.
fn wait_for_api(cmd: &BootstrapCmd, cancel: &Cancel) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let done = process::run(
            &mut kubectl(&cmd.kubeconfig, &["get", "--raw=/readyz"]),
            cancel,
            Some(Duration::from_secs(30)),
            true,
        )?;
        if done.status.success() {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < cmd.api_timeout,
            "the Kubernetes API did not become ready within {}: {}",
            humantime::format_duration(cmd.api_timeout),
            done.stderr_tail()
        );
        tracing::info!("waiting for the Kubernetes API");
        anyhow::ensure!(cancel.sleep(API_RETRY), "interrupted by a signal");
    }
}

fn step(
    what: &str,
    command: &mut Command,
    input: Option<Vec<u8>>,
    cancel: &Cancel,
) -> anyhow::Result<()> {
    tracing::info!("{what}");
    let done = process::run_with_input(command, input, cancel, Some(STEP_TIMEOUT), true)?;
    anyhow::ensure!(
        done.status.success(),
        "cannot {what} ({}):\n{}",
        done.status,
        done.stderr_tail()
    );
    Ok(())
}
