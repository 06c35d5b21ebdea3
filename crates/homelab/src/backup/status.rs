//! `homelab backup status`: the newest good snapshot of each source and the last successful sync,
//! each against its recovery point objective. Takes no lock: it must answer while a run is busy.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde::Serialize;

use super::config::BackupConfig;
use super::state::State;
use super::{ConfigArg, Session, last_good};
use crate::exit::ExitStatus;
use crate::kopia::age;

#[derive(Debug, Args)]
pub struct StatusCmd {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the status as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Status {
    ok: bool,
    sources: Vec<SourceStatus>,
    sync: Option<SyncStatus>,
}

#[derive(Debug, Serialize)]
struct SourceStatus {
    name: String,
    path: String,
    last_good_snapshot: Option<String>,
    last_good_time: Option<String>,
    age_seconds: Option<u64>,
    rpo_seconds: u64,
    stale: bool,
}

#[derive(Debug, Serialize)]
struct SyncStatus {
    last_success_time: Option<String>,
    age_seconds: Option<u64>,
    rpo_seconds: u64,
    stale: bool,
}

pub fn run(config: &BackupConfig, cmd: &StatusCmd) -> anyhow::Result<ExitStatus> {
    let session = Session::open(config, None)?;
    let snapshots = session.kopia.all_snapshots()?;
    let mut sources = Vec::new();
    for source in &config.sources {
        let good = last_good(&snapshots, source.path());
        let time = good.and_then(|m| m.end().or(m.start()));
        let age = time.map(age);
        sources.push(SourceStatus {
            name: source.name().to_owned(),
            path: source.path().display().to_string(),
            last_good_snapshot: good.map(|m| m.id.clone()),
            last_good_time: time.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            age_seconds: age.map(|a| a.as_secs()),
            rpo_seconds: config.rpo.as_secs(),
            stale: age.is_none_or(|a| a > config.rpo),
        });
    }
    let sync = config.offsite.as_ref().map(|offsite| {
        let state = State::load(config.state_dir.get_ref());
        let time = state.last_sync.map(|t| UNIX_EPOCH + Duration::from_secs(t));
        let age = time.map(age);
        SyncStatus {
            last_success_time: time
                .map(|t: SystemTime| humantime::format_rfc3339_seconds(t).to_string()),
            age_seconds: age.map(|a| a.as_secs()),
            rpo_seconds: offsite.rpo.as_secs(),
            stale: age.is_none_or(|a| a > offsite.rpo),
        }
    });
    let status = Status {
        ok: sources.iter().all(|s| !s.stale) && sync.as_ref().is_none_or(|s| !s.stale),
        sources,
        sync,
    };
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print(&status);
    }
    Ok(if status.ok {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

fn print(status: &Status) {
    let verdict = |stale: bool| if stale { "STALE" } else { "ok" };
    let ago = |age: Option<u64>| {
        age.map_or("never".to_owned(), |s| {
            format!("{} ago", humantime::format_duration(Duration::from_secs(s)))
        })
    };
    for s in &status.sources {
        println!(
            "  {:<6} {:<12} last good {:<24} {}",
            verdict(s.stale),
            s.name,
            s.last_good_time.as_deref().unwrap_or("never"),
            ago(s.age_seconds)
        );
    }
    if let Some(sync) = &status.sync {
        println!(
            "  {:<6} {:<12} last sync {:<24} {}",
            verdict(sync.stale),
            "r2",
            sync.last_success_time.as_deref().unwrap_or("never"),
            ago(sync.age_seconds)
        );
    }
}
