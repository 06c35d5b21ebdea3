//! What the jobs remember between runs (per-source results, last sync), kept as JSON in the
//! state directory and replaced atomically, always under the job lock.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::BackupConfig;
use crate::files::write_atomically;

const FILE: &str = "state.json";
/// Prefix of the markers left by jobs whose outcome could not be saved.
const UNRECORDED: &str = "unrecorded-";

/// The jobs whose last outcome could not be saved (see [`State::publish`]).
pub fn unrecorded(state_dir: &Path) -> Vec<String> {
    let mut jobs: Vec<String> = std::fs::read_dir(state_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix(UNRECORDED))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    jobs.sort();
    jobs
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct State {
    #[serde(default)]
    pub sources: BTreeMap<String, SourceState>,
    /// Unix time of the last sync that finished.
    pub last_sync: Option<u64>,
    pub last_sync_ok: Option<bool>,
    /// Mirror blobs whose bytes differ from the local copy (found by `verify --offsite`), until
    /// a sync has replaced them.
    #[serde(default)]
    pub mirror_damaged: Vec<String>,
    /// Blobs the mirror still lacks, or holds with another size, after the last sync's repair.
    #[serde(default)]
    pub mirror_differs: Vec<String>,
    /// Unix time each share of the packs was last read back from the mirror (index = share).
    #[serde(default)]
    pub mirror_share_read: Vec<Option<u64>>,
    /// The share the next `verify --offsite` reads.
    #[serde(default)]
    pub mirror_next_share: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SourceState {
    /// Unix time of the last run in which this source was captured and snapshotted.
    pub last_success: Option<u64>,
    pub last_attempt_ok: bool,
    pub bytes: u64,
    pub files: u64,
    pub duration_seconds: f64,
    /// Unix time and outcome of the last drill of this source.
    #[serde(default)]
    pub last_drill: Option<u64>,
    #[serde(default)]
    pub last_drill_ok: Option<bool>,
}

impl State {
    /// The saved state; an unreadable file is reported and treated as empty, which can only make
    /// `status` more alarmed, never less.
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                tracing::warn!("ignoring unreadable {}: {err}", path.display());
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }

    fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        write_atomically(&state_dir.join(FILE), &json)
    }

    /// Saves the state. When it cannot be saved (a full disk), an empty `unrecorded-<job>`
    /// marker is left instead (an empty file needs no data blocks), so that `status` fails
    /// rather than showing an old outcome as the last one; the job's next good save removes it.
    pub fn save_for(&self, config: &BackupConfig, job: &str) -> anyhow::Result<()> {
        let state_dir = config.state_dir.get_ref();
        let marker = state_dir.join(format!("{UNRECORDED}{job}"));
        let saved = self.save(state_dir);
        match &saved {
            Ok(()) => {
                let _ = std::fs::remove_file(&marker);
            }
            Err(_) => {
                if let Err(err) = std::fs::File::create(&marker) {
                    tracing::error!("cannot leave the marker {}: {err}", marker.display());
                }
            }
        }
        saved
    }
}
