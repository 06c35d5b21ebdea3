//! `homelab bootstrap` against stand-ins for kubectl and flux: the Kubernetes API cannot run on
//! these machines. The stand-ins record their arguments and stdin; the first two API probes fail
//! as they do while k3s starts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const KEY: &str = "# created: 2026-11-26\n# public key: age1test\nAGE-SECRET-KEY-1TESTTESTTESTTESTTESTTESTTESTTESTTESTTESTTESTTESTTESTTESTTEST\n";

fn stand_in(dir: &Path, name: &str, log: &Path) {
    let script = format!(
        "#!/bin/sh\n\
         echo \"{name} $*\" >> {log}\n\
         case \"$*\" in\n\
           *--raw=/readyz*)\n\
             n=$(cat {dir}/probes 2>/dev/null || echo 0); echo $((n + 1)) > {dir}/probes\n\
             [ \"$n\" -ge 2 ] || {{ echo 'connection refused' >&2; exit 1; }} ;;\n\
           *'-f -'*) cat > {dir}/stdin-$(date +%s%N) ;;\n\
         esac\n",
        log = log.display(),
        dir = dir.display(),
    );
    let path = dir.join(name);
    std::fs::write(&path, script).expect("stand-in");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn bootstrap_waits_for_the_api_installs_flux_and_passes_the_key_on_stdin_only_with_stand_ins() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let log = dir.path().join("calls.log");
    stand_in(&bin, "kubectl", &log);
    stand_in(&bin, "flux", &log);
    let key = dir.path().join("key.txt");
    std::fs::write(&key, KEY).expect("key");
    let sync = dir.path().join("flux-system-sync.yaml");
    std::fs::write(&sync, "---\n").expect("sync");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let run = |key: &Path| {
        Command::new(env!("CARGO_BIN_EXE_homelab"))
            .args([
                "bootstrap",
                "--kubeconfig",
                "/etc/rancher/k3s/k3s.yaml",
                "--api-timeout",
                "1m",
            ])
            .arg("--age-key")
            .arg(key)
            .arg("--sync")
            .arg(&sync)
            .env("PATH", &path)
            .output()
            .expect("homelab runs")
    };
    let out = run(&key);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr.matches("waiting for the Kubernetes API").count(),
        2,
        "{stderr}"
    );

    let calls = std::fs::read_to_string(&log).expect("log");
    let calls: Vec<&str> = calls.lines().collect();
    let k = "kubectl --kubeconfig /etc/rancher/k3s/k3s.yaml";
    assert_eq!(
        calls,
        [
            format!("{k} get --raw=/readyz").as_str(),
            &format!("{k} get --raw=/readyz"),
            &format!("{k} get --raw=/readyz"),
            "flux install --kubeconfig /etc/rancher/k3s/k3s.yaml",
            &format!("{k} apply --server-side --force-conflicts --field-manager=homelab -f -"),
            &format!(
                "{k} apply --server-side --force-conflicts --field-manager=homelab -f {}",
                sync.display()
            ),
        ]
    );
    assert!(
        !calls.iter().any(|c| c.contains("AGE-SECRET-KEY")),
        "the key must not be in argv"
    );
    let stdin: Vec<_> = std::fs::read_dir(&bin)
        .expect("bin")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("stdin-"))
        })
        .collect();
    assert_eq!(stdin.len(), 1);
    let secret: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stdin[0]).expect("stdin")).expect("JSON");
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["namespace"], "flux-system");
    assert_eq!(secret["metadata"]["name"], "sops-age");
    assert_eq!(secret["stringData"]["age.agekey"], KEY);

    // No key, no bootstrap.
    let out = run(&dir.path().join("missing.txt"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sops-nix creates it"));
}
