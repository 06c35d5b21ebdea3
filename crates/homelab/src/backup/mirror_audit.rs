//! The R2 mirror heals or shouts. `kopia repository sync-to` skips every blob whose name the
//! bucket already holds, whatever its size or bytes, so a truncated or rotten copy would stay
//! forever behind a sync that says "ok". After each sync the two listings are compared by blob
//! ID and size (nothing downloaded); a blob of the wrong size, or one `verify --offsite` found
//! with other bytes, is deleted from the bucket and uploaded again by a second `sync-to`; what
//! still differs after that fails the sync, by name.
//!
//! Bytes that rot without changing the size are found by `verify --offsite`, which reads one of
//! `verify.offsite-pack-shares` shares of the packs back from the mirror each run and compares
//! them with the local copies, so every pack is read once per cycle without downloading the
//! whole mirror in one night. The local repository is the reference: `backup verify` and the
//! drills check it every week.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::kopia::{Blob, Kopia, KopiaError};

/// The bucket is no repository without these: never deleted by a repair, only reported.
const NEVER_DELETED: [&str; 2] = ["kopia.repository", "kopia.blobcfg"];

/// How the mirror differs from the local repository, by blob ID.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Difference {
    pub missing: Vec<String>,
    /// (id, local size, mirror size)
    pub wrong_size: Vec<(String, u64, u64)>,
}

impl Difference {
    pub fn describe(&self) -> Vec<String> {
        self.missing
            .iter()
            .map(|id| format!("{id} (missing)"))
            .chain(
                self.wrong_size
                    .iter()
                    .map(|(id, local, mirror)| format!("{id} ({mirror} bytes, local {local})")),
            )
            .collect()
    }
}

/// Compares the blobs of `local` with the mirror's listing; blobs only the mirror has are fine
/// (nothing remote is ever deleted because the local side lost it).
pub fn compare(local: &[Blob], mirror: &[Blob]) -> Difference {
    let remote: BTreeMap<&str, u64> = mirror.iter().map(|b| (b.id.as_str(), b.length)).collect();
    let mut difference = Difference::default();
    for blob in local {
        match remote.get(blob.id.as_str()) {
            None => difference.missing.push(blob.id.clone()),
            Some(&size) if size != blob.length => {
                difference
                    .wrong_size
                    .push((blob.id.clone(), blob.length, size));
            }
            Some(_) => {}
        }
    }
    difference
}

/// The mirror copies to delete so that `sync-to` uploads them again: wrong sizes and known
/// damage, but never the blobs that make the bucket a repository (those are refused).
pub fn to_replace(
    difference: &Difference,
    damaged: &[String],
    mirror: &[Blob],
) -> (Vec<String>, Vec<String>) {
    let mut replace: Vec<String> = difference
        .wrong_size
        .iter()
        .map(|(id, _, _)| id.clone())
        .chain(
            damaged
                .iter()
                .filter(|id| mirror.iter().any(|b| &b.id == *id))
                .cloned(),
        )
        .collect();
    replace.sort();
    replace.dedup();
    let (refused, replace): (Vec<String>, Vec<String>) = replace
        .into_iter()
        .partition(|id| NEVER_DELETED.contains(&id.as_str()));
    (replace, refused)
}

/// The share (0..shares) a blob belongs to: stable, and even over random blob IDs.
pub fn share_of(id: &str, shares: u32) -> usize {
    let digest = Sha256::digest(id.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(head) % u64::from(shares.max(1))) as usize
}

/// Packs (`p`: data, `q`: metadata) whose bytes are compared between the two copies.
pub fn is_pack(id: &str) -> bool {
    id.starts_with('p') || id.starts_with('q')
}

/// Reads `ids` from both copies; returns those whose mirror bytes differ (or cannot be read).
pub fn damaged(local: &Kopia, mirror: &Kopia, ids: &[String]) -> Result<Vec<String>, KopiaError> {
    let mut damaged = Vec::new();
    for id in ids {
        let reference = Sha256::digest(local.blob_bytes(id)?);
        match mirror.blob_bytes(id) {
            Ok(bytes) if Sha256::digest(&bytes) == reference => {}
            Ok(_) => damaged.push(id.clone()),
            Err(err @ KopiaError::Process(_)) => return Err(err),
            Err(err) => {
                tracing::warn!(blob = %id, "cannot read the mirror's copy: {err}");
                damaged.push(id.clone());
            }
        }
    }
    Ok(damaged)
}

#[cfg(test)]
mod tests {
    use super::{Difference, compare, share_of, to_replace};
    use crate::kopia::Blob;

    fn blob(id: &str, length: u64) -> Blob {
        Blob {
            id: id.to_owned(),
            length,
        }
    }

    #[test]
    fn sizes_and_absences_differ_extra_mirror_blobs_do_not() {
        let local = [blob("p1", 10), blob("p2", 20), blob("kopia.repository", 5)];
        let mirror = [
            blob("p1", 10),
            blob("p2", 7),
            blob("p9", 1),
            blob("kopia.repository", 6),
        ];
        let difference = compare(&local, &mirror);
        assert_eq!(
            difference,
            Difference {
                missing: vec![],
                wrong_size: vec![("p2".into(), 20, 7), ("kopia.repository".into(), 5, 6)],
            }
        );
        let (replace, refused) = to_replace(&difference, &["p1".into(), "p404".into()], &mirror);
        assert_eq!(replace, ["p1", "p2"]);
        assert_eq!(refused, ["kopia.repository"]);
        assert_eq!(compare(&[blob("p3", 1)], &mirror).missing, ["p3"]);
    }

    #[test]
    fn shares_cover_every_blob_once() {
        let ids: Vec<String> = (0..400).map(|i| format!("p{i:032x}")).collect();
        let mut counts = [0usize; 4];
        for id in &ids {
            counts[share_of(id, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 60), "{counts:?}");
        assert_eq!(share_of("p1", 1), 0);
    }
}
