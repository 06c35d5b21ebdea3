//! Wall time of `homelab status` (release build) on a real kube-apiserver with Flux's CRDs and
//! this repository's sync objects, a real Kopia repository with a backed-up source, the host
//! part (systemctl stand-in) and cloudflared's metrics (stand-in): with everything up, with the
//! API server stopped, and with an API server that accepts connections and never answers.
//! Run: `cargo bench --bench status` (needs the tools `.ci/run` installs on PATH). Numbers go
//! in docs/operations.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::kube::Kube;
use common::{FrozenServer, Lab, TextServer};

const RUNS: usize = 10;

fn measure(label: &str, config: &std::path::Path, systemctl: &std::path::Path) {
    let mut times = Vec::new();
    let mut code = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
            .args(["status", "--json", "--config"])
            .arg(config)
            .env("HOMELAB_SYSTEMCTL", systemctl)
            .output()
            .expect("homelab runs");
        times.push(started.elapsed());
        code = out.status.code();
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<40} exit {code:?}  min {:>7.1} ms  median {:>7.1} ms  max {:>7.1} ms  ({RUNS} runs)",
        ms(times[0]),
        ms(times[RUNS / 2]),
        ms(times[RUNS - 1])
    );
}

fn main() {
    if !common::require(&["kubectl", "kopia", "flux", "etcd", "kube-apiserver"]) {
        return;
    }
    let lab = Lab::new();
    let data = lab.source_dir("data");
    std::fs::write(data.join("f"), "x").expect("file");
    let backup = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"data\"\npath = \"{}\"\n",
            data.display()
        ),
    );
    assert_eq!(lab.backup(&backup, &["run"]).status.code(), Some(0));
    let systemctl = common::script(
        &lab.path("systemctl"),
        "#!/bin/sh\n# Stand-in for systemctl: systemd does not run here.\ncase \"$1\" in\nis-active) shift; for u in \"$@\"; do echo active; done ;;\nesac\nexit 0\n",
    );
    let metrics = TextServer::start("cloudflared_tunnel_ha_connections 4\n");

    let kube = Kube::start();
    let manifests = Command::new("flux")
        .args(["install", "--export"])
        .output()
        .expect("flux runs");
    assert!(manifests.status.success(), "{}", common::stderr(&manifests));
    let out = kube.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &String::from_utf8_lossy(&manifests.stdout),
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let sync = std::fs::read_to_string(
        common::repo().join("flux/clusters/azalab-0/flux-system-sync.yaml"),
    )
    .expect("sync");
    let out = kube.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &sync);
    assert!(out.status.success(), "{}", common::stderr(&out));

    let write = |name: &str, kubeconfig: &std::path::Path| {
        let file = lab.path(name);
        std::fs::write(
            &file,
            format!(
                "state-dir = \"{state}\"\n\
                 [host]\nage-key-file = \"{key}\"\ntimers = [\"homelab-backup.timer\"]\n\
                 system-profile = \"/nonexistent\"\ncurrent-system = \"/\"\nrevision-file = \"/nonexistent\"\n\
                 [[host.disk]]\npath = \"/\"\nwarn-free-percent = 10.0\nfail-free-percent = 5.0\n\
                 [cluster]\nkubeconfig = \"{kubeconfig}\"\n\
                 [tunnel]\nmetrics-url = \"http://127.0.0.1:{port}\"\n\
                 [backup]\nconfig = \"{backup}\"\n\
                 [[client]]\nname = \"aiden@macbook\"\nrpo = \"3d\"\n",
                state = lab.path("status-state").display(),
                key = lab.path("password").display(),
                kubeconfig = kubeconfig.display(),
                port = metrics.port,
                backup = backup.display(),
            ),
        )
        .expect("config");
        file
    };
    let up = write("status-up.toml", &kube.kubeconfig);
    measure("everything up", &up, &systemctl);

    let frozen = FrozenServer::start();
    let frozen_kubeconfig = lab.path("frozen-kubeconfig");
    std::fs::write(
        &frozen_kubeconfig,
        std::fs::read_to_string(&kube.kubeconfig)
            .expect("kubeconfig")
            .replace(
                &format!("127.0.0.1:{}", kube.port),
                &format!("127.0.0.1:{}", frozen.port),
            ),
    )
    .expect("kubeconfig");
    let frozen_config = write("status-frozen.toml", &frozen_kubeconfig);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(kube.apiserver_pid()).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill kube-apiserver");
    std::thread::sleep(Duration::from_millis(500));
    measure("API server stopped", &up, &systemctl);
    measure(
        "API server frozen (accepts, never answers)",
        &frozen_config,
        &systemctl,
    );
}
