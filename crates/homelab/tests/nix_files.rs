//! The Nix side, checked without nixpkgs (which cannot be fetched here): every .nix file parses
//! and is formatted; the backup configuration the NixOS module generates, evaluated from the
//! same pure function and facts file, passes the Rust loader; the timer calendars are valid;
//! every SOPS file is encrypted and covered by a creation rule.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{generated_backup_config, repo, require, stderr, stdout};

/// Files tracked or added in the repository, by suffix.
fn files(suffix: &str) -> Vec<PathBuf> {
    let out = Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .current_dir(repo())
        .output()
        .expect("git runs");
    assert!(out.status.success(), "{}", stderr(&out));
    let files: Vec<PathBuf> = stdout(&out)
        .lines()
        .filter(|l| l.ends_with(suffix))
        .map(|l| repo().join(l))
        .filter(|p| p.exists())
        .collect();
    assert!(!files.is_empty(), "no {suffix} files found");
    files
}

fn facts() -> toml::Table {
    let text = std::fs::read_to_string(repo().join("homelab.toml")).expect("homelab.toml");
    text.parse().expect("homelab.toml is TOML")
}

#[test]
fn every_nix_file_parses_and_is_formatted() {
    if !require(&["nix-instantiate", "nixpkgs-fmt"]) {
        return;
    }
    let nix = files(".nix");
    for file in &nix {
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(file)
            .output()
            .expect("nix-instantiate runs");
        assert!(
            out.status.success(),
            "{} does not parse: {}",
            file.display(),
            stderr(&out)
        );
    }
    let out = Command::new("nixpkgs-fmt")
        .arg("--check")
        .args(&nix)
        .output()
        .expect("nixpkgs-fmt runs");
    assert!(
        out.status.success(),
        "not formatted (run `nix fmt` or nixpkgs-fmt): {}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn the_generated_backup_configuration_passes_the_loader() {
    if !require(&["nix-instantiate"]) {
        return;
    }
    // The same function and facts the module uses.
    let json = generated_backup_config(&repo().join("homelab.toml"));
    assert_app_expansion(&json);
    // What pkgs.formats.toml does on the host, done with the toml crate here.
    let text = toml::to_string(&json).expect("representable as TOML");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("homelab-backup.toml");
    std::fs::write(&file, &text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .args(["backup", "check-config"])
        .arg(&file)
        .output()
        .expect("homelab runs");
    assert_eq!(out.status.code(), Some(0), "{}\n{text}", stderr(&out));
    let summary = stdout(&out);
    // Every source homelab.toml declares (read from it, not copied here) reaches the config.
    let facts = facts();
    let sources = facts["backup"]["source"]
        .as_array()
        .expect("[[backup.source]]");
    assert!(sources.len() >= 6, "{sources:?}");
    for source in sources {
        let (name, path) = (
            source["name"].as_str().expect("name"),
            source["path"].as_str().expect("path"),
        );
        assert!(
            summary.contains(&format!("source {name:<12} {path}")),
            "{name} at {path} must be backed up: {summary}"
        );
    }
    assert!(
        summary.contains("repository /srv/kopia/repository"),
        "{summary}"
    );
}

/// `app = { namespace, deployment, stop }` becomes the commands an operator would type, in the
/// table its `stop` names, next to the time limits written beside it.
fn assert_app_expansion(config: &serde_json::Value) {
    let source = |name: &str| {
        config["source"]
            .as_array()
            .expect("source list")
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("source {name}"))
            .clone()
    };
    let kubectl = |namespace: &str, args: &[&str]| {
        let mut argv = vec![
            "kubectl",
            "--kubeconfig",
            "/etc/rancher/k3s/k3s.yaml",
            "--namespace",
            namespace,
        ];
        argv.extend_from_slice(args);
        serde_json::json!(argv)
    };
    let steps = |app: &str| {
        serde_json::json!({
            "stop": [
                kubectl(app, &["scale", &format!("deployment/{app}"), "--replicas=0"]),
                kubectl(app, &["wait", "--for=delete", "pod",
                    &format!("--selector=app.kubernetes.io/name={app}"), "--timeout=5m"]),
            ],
            "start": [
                kubectl(app, &["scale", &format!("deployment/{app}"), "--replicas=1"]),
                kubectl(app, &["rollout", "status", &format!("deployment/{app}"), "--timeout=5m"]),
            ],
        })
    };
    let vaultwarden = source("vaultwarden");
    assert_eq!(
        vaultwarden["restore"],
        steps("vaultwarden"),
        "{vaultwarden}"
    );
    assert!(vaultwarden.get("quiesce").is_none() && vaultwarden.get("app").is_none());
    let tuwunel = source("tuwunel");
    let quiesce = &tuwunel["quiesce"];
    assert_eq!(quiesce["stop"], steps("tuwunel")["stop"], "{tuwunel}");
    assert_eq!(quiesce["start"], steps("tuwunel")["start"], "{tuwunel}");
    assert_eq!(quiesce["timeout"], "6m", "{tuwunel}");
    assert_eq!(quiesce["snapshot-timeout"], "1h", "{tuwunel}");
}

/// The calendar of `homelab status --notify`, as nixos/modules/status.nix writes it.
fn status_check_calendar() -> String {
    let module = std::fs::read_to_string(repo().join("nixos/modules/status.nix")).expect("module");
    module
        .lines()
        .find_map(|line| line.trim().strip_prefix("OnCalendar = \"*:"))
        .map(|rest| format!("*:{}", rest.trim_end_matches("\";")))
        .expect("status.nix sets the check's OnCalendar")
}

#[test]
fn the_generated_status_configuration_loads_and_covers_every_part() {
    if !require(&["nix-instantiate"]) {
        return;
    }
    let expression = r#"
      let facts = builtins.fromTOML (builtins.readFile ./homelab.toml); in
      import ./nixos/lib/status-config.nix {
        status = facts.status;
        ageKeyFile = facts.backup.age-key-file;
        backupConfigFile = "/nonexistent/homelab-backup.toml";
        timers = [ "homelab-backup.timer" "homelab-status.timer" ];
        notify = { webhook-file = "/run/secrets/notify/webhook-url"; };
      }"#;
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", expression])
        .current_dir(repo())
        .output()
        .expect("nix-instantiate runs");
    assert!(out.status.success(), "evaluation failed: {}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let text = toml::to_string(&json).expect("representable as TOML");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("homelab-status.toml");
    std::fs::write(&file, &text).expect("write");
    // Run where nothing of the host exists: every part answers, none can be checked, and that
    // is exit 1 (not 2: the configuration itself is good).
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .args(["status", "--json", "--config"])
        .arg(&file)
        .env("PATH", "/nonexistent")
        .env("HOMELAB_SYSTEMCTL", "/nonexistent/systemctl")
        .output()
        .expect("homelab runs");
    assert_eq!(out.status.code(), Some(1), "{}\n{text}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ids: Vec<&str> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    for id in [
        "host/units",
        "host/timers",
        "host/age-key",
        "host/generation",
        "host/disk:/",
        "host/disk:/srv",
        "cluster",
        "tunnel/connections",
        "backup",
    ] {
        assert!(ids.contains(&id), "no {id} in {ids:?}\n{text}");
    }
    assert!(text.contains("http://127.0.0.1:20241"), "{text}");
    assert!(text.contains("aiden@macbook"), "{text}");
}

#[test]
fn timer_calendars_are_valid_and_as_designed() {
    if !require(&["systemd-analyze"]) {
        return;
    }
    let facts = facts();
    let backup = facts["backup"].as_table().expect("[backup]");
    let calendar = |key: &str| backup[key].as_str().expect(key).to_owned();
    for (calendar, normalized) in [
        (calendar("run-at"), "*-*-* 02:30:00"),
        (calendar("sync-at"), "*-*-* 00/6:00:00"),
        (calendar("drill-at"), "Sun *-*-* 04:00:00"),
        (calendar("verify-at"), "Wed *-*-* 04:00:00"),
        (calendar("verify-offsite-at"), "Thu *-*-* 04:00:00"),
        (
            facts["status"]["summary-at"]
                .as_str()
                .expect("status.summary-at")
                .to_owned(),
            "*-*-* 08:00:00",
        ),
        (status_check_calendar(), "*-*-* *:00/5:00"),
    ] {
        let out = Command::new("systemd-analyze")
            .args(["calendar", &calendar])
            .output()
            .expect("systemd-analyze runs");
        assert!(out.status.success(), "{calendar}: {}", stderr(&out));
        assert!(
            stdout(&out).contains(&format!("Normalized form: {normalized}")),
            "{calendar}: {}",
            stdout(&out)
        );
    }
    let delay = backup["randomized-delay"]
        .as_str()
        .expect("randomized-delay");
    let out = Command::new("systemd-analyze")
        .args(["timespan", delay])
        .output()
        .expect("systemd-analyze runs");
    assert!(out.status.success(), "{delay}: {}", stderr(&out));
    // The units' TimeoutStartSec is each job's limit (humantime, read by homelab) followed by
    // 15 minutes for cleanup: systemd must read the same text as the same span.
    let limits = backup["time-limit"]
        .as_table()
        .expect("[backup.time-limit]");
    for job in ["run", "sync", "verify", "drill"] {
        let limit = limits[job].as_str().expect("limit");
        let span = format!("{limit} 15min");
        let out = Command::new("systemd-analyze")
            .args(["timespan", &span])
            .output()
            .expect("systemd-analyze runs");
        assert!(out.status.success(), "{span}: {}", stderr(&out));
        let micros: u64 = stdout(&out)
            .lines()
            .find_map(|l| l.trim().strip_prefix("μs: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{span}: {}", stdout(&out)));
        let homelab = humantime::parse_duration(limit).expect("humantime reads the limit");
        assert_eq!(
            micros,
            (homelab.as_secs() + 15 * 60) * 1_000_000,
            "{job}: systemd and homelab read {limit:?} differently"
        );
    }
}

#[test]
fn every_sops_file_is_encrypted_and_covered_by_a_creation_rule() {
    if !require(&["sops"]) {
        return;
    }
    for file in files(".sops.yaml") {
        if file.file_name().is_some_and(|n| n == ".sops.yaml") {
            continue;
        }
        let relative = file.strip_prefix(repo()).expect("inside the repo");
        let out = Command::new("sops")
            .args(["--disable-version-check", "filestatus"])
            .arg(&file)
            .output()
            .expect("sops runs");
        assert!(
            out.status.success(),
            "{}: {}",
            relative.display(),
            stderr(&out)
        );
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(
            status["encrypted"],
            true,
            "{} is not encrypted",
            relative.display()
        );
        // sops picks the creation rule by path: encrypting a scratch file under this name
        // fails when no rule matches.
        let scratch = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(scratch.path(), "probe: value\n").expect("write");
        let out = Command::new("sops")
            .args([
                "--disable-version-check",
                "encrypt",
                "--input-type",
                "yaml",
                "--output-type",
                "yaml",
                "--filename-override",
            ])
            .arg(relative)
            .arg(scratch.path())
            .current_dir(repo())
            .output()
            .expect("sops runs");
        assert!(
            out.status.success(),
            "no creation rule in .sops.yaml covers {}: {}",
            relative.display(),
            stderr(&out)
        );
    }
}

#[test]
fn the_facts_file_holds_what_the_design_fixes() {
    let facts = facts();
    assert_eq!(facts["hostname"].as_str(), Some("azalab-0"));
    assert_eq!(facts["domain"].as_str(), Some("aza.network"));
    let ports: Vec<i64> = facts["firewall"]["tcp-ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(toml::Value::as_integer)
        .collect();
    assert_eq!(ports, [22, 6443]);
    let routes: Vec<(&str, bool)> = facts["tunnel"]["route"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().expect("name"),
                r["access"].as_bool().expect("access"),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("db", false),
            ("photos", true),
            ("kopia", true),
            ("vault", false),
            ("matrix", false)
        ],
        "kopia and photos sit behind Cloudflare Access; vault must not"
    );
    // The status endpoints the host adds open no port: loopback only, and the module says so.
    for key in ["tunnel-metrics", "node-exporter"] {
        let address = facts["status"][key].as_str().expect(key);
        assert!(address.starts_with("127.0.0.1:"), "{key} = {address}");
    }
    let module = std::fs::read_to_string(repo().join("nixos/modules/status.nix")).expect("module");
    assert!(
        module.contains("openFirewall = false;"),
        "the node exporter opens no port"
    );
    assert!(module.contains("listenAddress = builtins.elemAt node 0;"));
}

#[test]
fn every_option_area_the_modules_set_is_in_the_confirmed_list() {
    let listed = std::fs::read_to_string(repo().join("docs/nixos-options.md")).expect("list");
    let roots = [
        "networking",
        "services",
        "users",
        "programs",
        "virtualisation",
        "security",
        "sops",
        "systemd",
        "environment",
        "time",
        "nix",
        "boot",
        "disko",
        "system",
        "nixpkgs",
    ];
    let mut missing = Vec::new();
    let mut modules: Vec<PathBuf> = std::fs::read_dir(repo().join("nixos/modules"))
        .expect("modules")
        .map(|e| e.expect("entry").path())
        .collect();
    modules.extend(["nixos/configuration.nix", "nixos/disko.nix"].map(|f| repo().join(f)));
    for module in modules {
        let text = std::fs::read_to_string(&module).expect("module");
        for line in text.lines() {
            let line = line.trim_start();
            let Some((lhs, _)) = line.split_once(" = ") else {
                continue;
            };
            let parts: Vec<&str> = lhs.split('.').collect();
            if parts.len() < 2 || !roots.contains(&parts[0]) {
                continue;
            }
            let area = format!("`{}.{}", parts[0], parts[1].trim_matches('"'));
            if !listed.contains(&area) {
                missing.push(format!("{}: {lhs}", module.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "options not in docs/nixos-options.md:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_reference_host_flake_is_the_template() {
    let code = |path: &str| -> Vec<String> {
        std::fs::read_to_string(repo().join(path))
            .expect("flake")
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        code("nixos/flake.nix"),
        code("templates/host-bootstrap/flake.nix"),
        "nixos/flake.nix and the template differ beyond comments"
    );
}

#[test]
fn the_source_repository_is_one_fact_wherever_it_is_written() {
    let facts = facts();
    let url = facts["source-repository"]
        .as_str()
        .expect("source-repository");
    let github = url
        .strip_prefix("https://github.com/")
        .expect("a GitHub URL");
    let sync = std::fs::read_to_string(repo().join("flux/clusters/azalab-0/flux-system-sync.yaml"))
        .expect("sync manifest");
    assert!(
        sync.lines().any(|l| l.trim() == format!("url: {url}")),
        "Flux pulls another repository than homelab.toml names"
    );
    for flake in ["nixos/flake.nix", "templates/host-bootstrap/flake.nix"] {
        let text = std::fs::read_to_string(repo().join(flake)).expect("flake");
        assert!(
            text.contains(&format!("homelab.url = \"github:{github}\"")),
            "{flake} pins another repository than homelab.toml names"
        );
    }
}

#[test]
fn the_flake_tracks_the_supported_release_and_each_option_area_names_its_source_there() {
    let flake = std::fs::read_to_string(repo().join("flake.nix")).expect("flake.nix");
    let channel = nixpkgs_branch(&flake);
    assert_eq!(channel, "nixos-26.05", "flake.nix nixpkgs input");
    let listed = std::fs::read_to_string(repo().join("docs/nixos-options.md")).expect("list");
    let section = listed
        .split("## NixOS 26.05")
        .nth(1)
        .expect("docs/nixos-options.md has a NixOS 26.05 section");
    for area in [
        "k3s",
        "cloudflared",
        "sops-nix",
        "disko",
        "fish",
        "openssh",
        "firewall",
        "systemd",
    ] {
        let row = section
            .lines()
            .find(|l| l.starts_with(&format!("| {area} |")))
            .unwrap_or_else(|| panic!("no 26.05 row for {area}"));
        assert!(
            row.matches('|').count() >= 4,
            "{area}: source and change: {row}"
        );
    }
}

/// The branch in `nixpkgs.url = "github:NixOS/nixpkgs/<branch>"`.
fn nixpkgs_branch(flake: &str) -> &str {
    flake
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("nixpkgs.url = \"github:NixOS/nixpkgs/")
        })
        .and_then(|rest| rest.split('"').next())
        .expect("a nixpkgs.url line")
}

#[test]
fn the_deploy_node_is_what_the_readme_says() {
    if !require(&["nix-instantiate"]) {
        return;
    }
    // The same function and facts flake.nix uses; deploy-rs' activate.nixos stands in as a
    // function that names what it was given (deploy-rs itself cannot be fetched here).
    let expression = r#"
      let facts = builtins.fromTOML (builtins.readFile ./homelab.toml); in
      import ./nixos/lib/deploy-node.nix {
        inherit facts;
        activate = system: "activate.nixos " + system.name;
        system = { name = "nixosConfigurations.azalab-0"; };
      }"#;
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", expression])
        .current_dir(repo())
        .output()
        .expect("nix-instantiate runs");
    assert!(out.status.success(), "evaluation failed: {}", stderr(&out));
    let node: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        node,
        serde_json::json!({
            "hostname": "azalab-0",
            "sshUser": "aiden",
            "user": "root",
            "interactiveSudo": true,
            "magicRollback": true,
            "autoRollback": true,
            "confirmTimeout": 60,
            "profiles": {"system": {"path": "activate.nixos nixosConfigurations.azalab-0"}},
        })
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    for said in [
        "nix run github:serokell/deploy-rs -- .#azalab-0",
        "confirm within **60 s**",
        "SSH as `aiden`",
        "(`interactiveSudo`)",
        "*auto rollback*",
        "*magic rollback*",
    ] {
        assert!(
            readme.contains(said),
            "README's deploy section should say {said:?}"
        );
    }
    // The flake: the node from that file, deploy-rs' checks, the input pinned to our nixpkgs.
    let flake = std::fs::read_to_string(repo().join("flake.nix")).expect("flake.nix");
    for part in [
        "deploy.nodes.${facts.hostname} = import ./nixos/lib/deploy-node.nix",
        "activate = deploy-rs.lib.x86_64-linux.activate.nixos;",
        "// deploy-rs.lib.x86_64-linux.deployChecks self.deploy;",
        "url = \"github:serokell/deploy-rs\";\n      inputs.nixpkgs.follows = \"nixpkgs\";",
    ] {
        assert!(flake.contains(part), "flake.nix should hold {part:?}");
    }
}
