//! One lock for every job that writes to or reads the whole repository (run, sync, verify,
//! drill). An advisory lock on a file: the kernel releases it when the holder dies, so a lock
//! left by a killed run is recovered by the next one without guessing. kopia processes started
//! by a killed run get SIGTERM through their parent-death signal.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::process::Cancel;

#[derive(Debug)]
pub struct JobLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open the lock file {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "another backup job holds {path} ({holder}); gave up after waiting {}",
        humantime::format_duration(*.waited)
    )]
    Busy {
        path: String,
        holder: String,
        waited: Duration,
    },
    #[error("gave up waiting for the lock {path}: {reason}")]
    Cancelled { path: String, reason: String },
}

/// Takes the lock, waiting at most `timeout` for another job to finish.
pub fn acquire(
    state_dir: &Path,
    job: &str,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<JobLock, LockError> {
    let path = state_dir.join("lock");
    let shown = path.display().to_string();
    let open_err = |source| LockError::Open {
        path: shown.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(open_err)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(open_err)?;
    let started = Instant::now();
    let mut announced = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let holder = holder(&mut file);
                if started.elapsed() >= timeout {
                    return Err(LockError::Busy {
                        path: shown,
                        holder,
                        waited: started.elapsed(),
                    });
                }
                if !announced {
                    tracing::info!("waiting for the backup lock held by {holder}");
                    announced = true;
                }
                if !cancel.sleep(Duration::from_millis(250).min(timeout)) {
                    return Err(LockError::Cancelled {
                        path: shown,
                        reason: cancel.reason(),
                    });
                }
            }
            Err(TryLockError::Error(err)) => return Err(open_err(err)),
        }
    }
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now());
    let note = format!("{job}, pid {}, since {stamp}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(note.as_bytes()))
        .map_err(open_err)?;
    Ok(JobLock { _file: file })
}

fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    match text.trim() {
        "" => "unknown holder".to_owned(),
        held => held.to_owned(),
    }
}
