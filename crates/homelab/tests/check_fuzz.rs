//! The loaders never panic, whatever is in the files: arbitrary text, YAML-shaped token soup and
//! damaged copies of the real manifests, put where the check reads them (a listed manifest, a
//! kustomization, .sops.yaml, a SOPS file, homelab.toml), and arbitrary bytes there. Each case
//! must end in findings, or an error only for an unreadable homelab.toml; bytes that are not
//! UTF-8 must be a finding at their file. `PROPTEST_CASES=N` runs longer (docs/check.md has how long it ran).

use std::path::PathBuf;

use proptest::prelude::*;

mod common;

use common::{copy_repo, repo};

const TARGETS: [&str; 5] = [
    "flux/clusters/azalab-0/manifests/apps/vaultwarden/deployment.yaml",
    "flux/clusters/azalab-0/manifests/apps/vaultwarden/kustomization.yaml",
    "flux/clusters/azalab-0/manifests/apps/vaultwarden/secret.sops.yaml",
    ".sops.yaml",
    "homelab.toml",
];

/// 128 per property in CI; `PROPTEST_CASES=N` for a longer run.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

fn yaml_soup() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "apiVersion: v1\n",
        "kind: Secret\n",
        "kind: Deployment\n",
        "metadata:\n",
        "  name: x\n",
        "spec:\n",
        "  template:\n",
        "    spec:\n",
        "      containers:\n",
        "- ",
        "  - ",
        "key: ",
        "value\n",
        "{",
        "}",
        "[",
        "]",
        ", ",
        ": ",
        "&a ",
        "*a\n",
        "*b\n",
        "!!str ",
        "!!int ",
        "---\n",
        "...\n",
        "\t",
        "  ",
        "\n",
        "'",
        "\"",
        "|\n",
        ">-\n",
        "? ",
        "#c\n",
        "0x1F\n",
        "1e999\n",
        "-.inf\n",
        "~\n",
        "ENC[AES256_GCM,data:x,type:str]\n",
        "sops:\n",
        "resources:\n",
        "  - ../../\n",
        "  - /etc/passwd\n",
        "  - missing.yaml\n",
        "namespace: ",
        "labels:\n",
        "  - pairs: {a: b}\n",
        "    includeSelectors: true\n",
        "dependsOn:\n",
        "hostPath: {path: /}\n",
        "claimName: \n",
        "port: 99999999999999999999\n",
        "\u{feff}",
        "\u{0}",
        "é",
        "%YAML 1.2\n",
        "%TAG ! tag:x:\n",
    ]);
    prop::collection::vec(token, 0..60).prop_map(|t| t.concat())
}

fn damaged(original: String) -> impl Strategy<Value = String> {
    let len = original.len();
    (0..=len, 0..=len.min(64), ".{0,8}").prop_map(move |(at, cut, insert)| {
        let mut text = original.clone();
        let at = (0..=at)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        let end = (at + cut..=text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text.replace_range(at..end, &insert);
        text
    })
}

/// Puts the original file back even when the check panics, so that shrinking and later cases
/// run on a tree with one damaged file, not two.
struct Restore {
    path: PathBuf,
    original: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.original);
    }
}

thread_local! {
    /// One copy per test thread; each case writes its file and puts the original back.
    static COPY: tempfile::TempDir = copy_repo();
}

fn run_case(target: &str, text: &str) {
    run_bytes(target, text.as_bytes());
}

/// Writes `bytes` at `target` in the copy and checks it. The answer must be findings (the run
/// goes on), or an error only where the input itself cannot be read: homelab.toml, without
/// which there is no tree. A file that is not UTF-8 is a finding at that file.
fn run_bytes(target: &str, bytes: &[u8]) {
    COPY.with(|copy| {
        let root = copy.path();
        let _restore = Restore {
            path: root.join(target),
            original: std::fs::read_to_string(repo().join(target)).expect("original"),
        };
        std::fs::write(root.join(target), bytes).expect("write case");
        match homelab::check::check(root) {
            Ok(checked) => {
                if std::str::from_utf8(bytes).is_err() {
                    assert!(
                        checked
                            .findings
                            .iter()
                            .any(|f| f.rule.id == "structure/encoding" && f.at.file == target),
                        "{target}: bytes that are not UTF-8 give no structure/encoding finding"
                    );
                }
            }
            Err(err) => assert_eq!(
                target, "homelab.toml",
                "only homelab.toml may stop the check; {target} did: {err:#}"
            ),
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_text_anywhere(target in prop::sample::select(TARGETS.to_vec()), text in "\\PC{0,400}") {
        run_case(target, &text);
    }

    #[test]
    fn arbitrary_bytes_anywhere(
        target in prop::sample::select(TARGETS.to_vec()),
        bytes in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        run_bytes(target, &bytes);
    }

    #[test]
    fn yaml_shaped_soup_anywhere(target in prop::sample::select(TARGETS.to_vec()), text in yaml_soup()) {
        run_case(target, &text);
    }

    #[test]
    fn damaged_real_files(
        (target, text) in prop::sample::select(TARGETS.to_vec()).prop_flat_map(|target| {
            let original = std::fs::read_to_string(repo().join(target)).expect("original");
            (Just(target), damaged(original))
        })
    ) {
        run_case(target, &text);
    }
}
