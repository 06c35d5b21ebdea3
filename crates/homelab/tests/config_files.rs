//! Every configuration fixture, and every example configuration in the repository, through
//! `homelab backup check-config`; a missing or unusable configuration is a usage error (exit 2). Each invalid fixture names in its first line
//! (`# expect: …`) the text its error must contain: file, line, dotted key and what was expected.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Lab, stderr, stdout};

fn check_config(file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_homelab"))
        .args(["backup", "check-config"])
        .arg(file)
        .env("NO_COLOR", "1")
        .output()
        .expect("homelab runs")
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/backup-config")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

#[test]
fn valid_configurations_pass() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = fixtures("valid");
    files.push(repo.join("docs/backup.example.toml"));
    for file in files {
        let out = check_config(&file);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{} must be valid: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn invalid_configurations_fail_with_located_errors() {
    let mut failures = Vec::new();
    for file in fixtures("invalid") {
        let text = std::fs::read_to_string(&file).expect("fixture");
        let expected = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks an `# expect:` first line", file.display()));
        let out = check_config(&file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The first line of the report is the one a log keeps: `file:line: key: message`.
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let located = format!("{}{expected}", file.display());
        let ok = out.status.code() == Some(2)
            && (first.contains(&located)
                || (expected.starts_with(|c: char| c != ':') && first.contains(expected)));
        if !ok {
            failures.push(format!(
                "{}: exit {:?}, wanted {expected:?} in the first line:\n{stderr}",
                file.display(),
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn client_status(config: &Path, home: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_homelab"))
        .args(["client", "status", "--config"])
        .arg(config)
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .output()
        .expect("homelab runs")
}

#[test]
fn the_example_client_configuration_loads_and_client_errors_say_what_to_do() {
    let home = tempfile::tempdir().expect("home");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../macbook/client.example.toml");
    let out = client_status(&example, home.path());
    // Loaded: nothing backed up yet in this empty home is a failure (1), not a bad config (2).
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let missing = home.path().join("nothing-here.toml");
    let out = client_status(&missing, home.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run `homelab client setup"), "{err}");

    let broken = home.path().join("broken.toml");
    std::fs::write(
        &broken,
        "server-hostname = \"kopia.aza.network\"\nthis is not TOML\n",
    )
    .expect("write");
    let out = client_status(&broken, home.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.toml:2:"), "the line is named: {err}");
}

#[test]
fn unreadable_configuration_is_a_usage_error() {
    let lab = Lab::new();
    let out = lab.backup(&lab.path("missing.toml"), &["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));
    let config = lab.write_config(
        "backup.toml",
        "[[source]]\nname = \"a\"\npath = \"/srv/a\"\n",
    );
    let out = lab.backup(&config, &["run", "--source", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--source nope: no such source"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}
