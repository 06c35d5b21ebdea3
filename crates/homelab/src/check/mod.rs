//! `homelab check`: one offline gate over the whole repository — Nix facts (homelab.toml), the
//! Flux tree rendered natively, SOPS files, tunnel routes and backup coverage — with the file and
//! line of every finding. Exit 0 clean (warnings allowed), 1 errors found, 2 could not run.

mod findings;
mod object;
mod report;
mod rules;
mod schema;
mod tree;
mod yaml;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};

use crate::exit::ExitStatus;
pub use findings::{ALL as RULES, Severity};

#[derive(Debug, Args)]
pub struct CheckCmd {
    /// The repository to check (default: the one the current folder is in).
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Output: miette diagnostics (text) or one JSON document for CI (json).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn run(cmd: &CheckCmd) -> ExitStatus {
    let started = Instant::now();
    let root = match &cmd.path {
        Some(path) => path.clone(),
        None => match std::env::current_dir() {
            Ok(dir) => repository_of(&dir).unwrap_or(dir),
            Err(err) => {
                eprintln!("error: cannot read the current folder: {err}");
                return ExitStatus::Error;
            }
        },
    };
    let outcome = check(&root);
    match outcome {
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitStatus::Error
        }
        Ok(checked) => {
            let printed = match cmd.format {
                Format::Json => report::json(&checked),
                Format::Text => report::text(&checked),
            };
            if let Err(err) = printed {
                eprintln!("error: cannot write the report: {err}");
                return ExitStatus::Error;
            }
            eprintln!(
                "{} errors, {} warnings in {} objects from {} files ({} ms)",
                checked.count(Severity::Error),
                checked.count(Severity::Warning),
                checked.objects,
                checked.files.len(),
                started.elapsed().as_millis()
            );
            if checked.count(Severity::Error) > 0 {
                ExitStatus::Failure
            } else {
                ExitStatus::Success
            }
        }
    }
}

/// What a check found, with the text of every file it read (for snippets).
pub struct Checked {
    pub findings: Vec<findings::Finding>,
    pub files: Vec<tree::SourceFile>,
    pub objects: usize,
}

impl Checked {
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.rule.severity == severity)
            .count()
    }
}

pub fn check(root: &Path) -> anyhow::Result<Checked> {
    let tree = tree::Tree::load(root)?;
    let mut schemas = schema::Schemas::load()?;
    let findings = rules::run(&tree, &mut schemas);
    Ok(Checked {
        findings,
        objects: tree.objects.len(),
        files: tree.files,
    })
}

/// The objects of every Flux path (the root folder first), as the check rendered them: what the
/// differential test compares with `kubectl kustomize`.
pub fn render(root: &Path) -> anyhow::Result<Vec<(String, Vec<serde_json::Value>)>> {
    let tree = tree::Tree::load(root)?;
    let mut paths = vec![(tree.cluster.clone(), None)];
    for (index, flux) in tree.flux.iter().enumerate() {
        if flux.rendered {
            let path = tree::normalize(&flux.path).unwrap_or_default();
            paths.push((path, Some(index)));
        }
    }
    Ok(paths
        .into_iter()
        .map(|(path, index)| {
            let objects = tree
                .objects
                .iter()
                .filter(|o| o.flux == index)
                .map(|o| o.node.to_json())
                .collect();
            (path, objects)
        })
        .collect())
}

/// The nearest folder at or above `dir` that holds homelab.toml.
fn repository_of(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(tree::FACTS_FILE).is_file())
        .map(Path::to_owned)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_vendored_schema_builds() {
        let mut schemas = super::schema::Schemas::load().expect("schemas load");
        let empty = serde_json::json!({});
        for (api_version, kind) in [
            ("v1", "Secret"),
            ("apps/v1", "Deployment"),
            ("networking.k8s.io/v1", "Ingress"),
            ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
            ("helm.toolkit.fluxcd.io/v2", "HelmRelease"),
            ("helm.cattle.io/v1", "HelmChartConfig"),
        ] {
            assert!(
                !matches!(
                    schemas.validate(api_version, kind, &empty),
                    super::schema::Outcome::UnknownKind
                ),
                "{api_version} {kind}"
            );
        }
        assert!(matches!(
            schemas.validate("v1", "Sekret", &empty),
            super::schema::Outcome::UnknownKind
        ));
    }
}
