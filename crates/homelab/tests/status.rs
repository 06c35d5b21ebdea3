//! `homelab status`: the host part (free space on a real tmpfs, the age key made by the real
//! age-keygen, the system generation), the tunnel from cloudflared's metric names, answers
//! within ten seconds when parts freeze, and the alerts: one message on failure, one on
//! recovery, none while unchanged, flapping held back, the daily summary, a full disk.
//!
//! Stand-ins, named so: systemd does not run here, so `systemctl` is a script answering from
//! files the test writes (HOMELAB_SYSTEMCTL); cloudflared cannot reach Cloudflare's edge here,
//! so its metrics server is a loopback server serving its real metric name,
//! `cloudflared_tunnel_ha_connections` (cloudflare/cloudflared supervisor/metrics.go); ntfy and
//! healthchecks.io are the HTTP recorder of the shared harness.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{FrozenServer, HttpStandIn, TextServer, Tmpfs, require, require_root};

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        let host = Self {
            dir: tempfile::Builder::new()
                .prefix("homelab-status-")
                .tempdir()
                .expect("temp dir"),
        };
        common::script(
            &host.path("systemctl"),
            &format!(
                "#!/bin/sh\n\
                 # Stand-in for systemctl: systemd does not run here.\n\
                 case \"$1\" in\n\
                 list-units) cat '{dir}/failed-units' 2>/dev/null; exit 0 ;;\n\
                 is-active) shift; rc=0\n\
                   for unit in \"$@\"; do\n\
                     if grep -qx \"$unit\" '{dir}/inactive' 2>/dev/null; then echo inactive; rc=3; else echo active; fi\n\
                   done; exit $rc ;;\n\
                 esac\nexit 1\n",
                dir = host.dir.path().display()
            ),
        );
        // The system profile as NixOS lays it out: system -> system-42-link -> a store path.
        std::fs::create_dir_all(host.path("store/system-a")).expect("system");
        std::fs::create_dir_all(host.path("store/system-b")).expect("system");
        std::fs::create_dir_all(host.path("profiles")).expect("profiles");
        std::os::unix::fs::symlink(
            host.path("store/system-a"),
            host.path("profiles/system-42-link"),
        )
        .expect("link");
        std::os::unix::fs::symlink("system-42-link", host.path("profiles/system")).expect("link");
        std::os::unix::fs::symlink(host.path("store/system-a"), host.path("current-system"))
            .expect("link");
        std::fs::write(host.path("source-revision"), "5544dd5c0ffee\n").expect("revision");
        host.set_failed_units(&[]);
        host
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn set_failed_units(&self, units: &[&str]) {
        let lines: String = units
            .iter()
            .map(|u| format!("{u} loaded failed failed A unit that failed\n"))
            .collect();
        std::fs::write(self.path("failed-units"), lines).expect("failed units");
    }

    /// The `[host]` table, with `disks` as `(path, warn, fail)`.
    fn host_table(&self, age_key: &Path, disks: &[(&Path, f64, f64)]) -> String {
        let mut text = format!(
            "[host]\nage-key-file = \"{}\"\ntimers = [\"homelab-backup.timer\", \"homelab-status.timer\"]\n\
             system-profile = \"{}\"\ncurrent-system = \"{}\"\nrevision-file = \"{}\"\n",
            age_key.display(),
            self.path("profiles/system").display(),
            self.path("current-system").display(),
            self.path("source-revision").display(),
        );
        for (path, warn, fail) in disks {
            text.push_str(&format!(
                "[[host.disk]]\npath = \"{}\"\nwarn-free-percent = {warn:.1}\nfail-free-percent = {fail:.1}\n",
                path.display()
            ));
        }
        text
    }

    fn write_config(&self, body: &str) -> PathBuf {
        let file = self.path("status.toml");
        let text = format!("state-dir = \"{}\"\n{body}", self.path("state").display());
        std::fs::write(&file, text).expect("config");
        file
    }

    fn status(&self, config: &Path, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
            .arg("status")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("HOMELAB_SYSTEMCTL", self.path("systemctl"))
            .env("HOMELAB_LOG", "homelab=debug")
            .env_remove("JOURNAL_STREAM")
            .output()
            .expect("homelab runs");
        common::report(&format!("homelab status {args:?}"), &out);
        out
    }

    /// `homelab status --json`: the exit code and each check as (level, message) by id.
    fn checks(&self, config: &Path) -> (i32, std::collections::BTreeMap<String, (String, String)>) {
        let out = self.status(config, &["--json"]);
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("status prints JSON");
        let checks = json["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().expect("id").to_owned(),
                    (
                        c["level"].as_str().expect("level").to_owned(),
                        c["message"].as_str().expect("message").to_owned(),
                    ),
                )
            })
            .collect();
        (out.status.code().expect("exit code"), checks)
    }
}

fn age_key(host: &Host) -> PathBuf {
    let key = host.path("key.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen runs");
    assert!(out.status.success(), "{}", common::stderr(&out));
    key
}

fn level<'a>(
    checks: &'a std::collections::BTreeMap<String, (String, String)>,
    id: &str,
) -> &'a str {
    &checks
        .get(id)
        .unwrap_or_else(|| panic!("no check {id} in {checks:?}"))
        .0
}

fn fill(dir: &Path, name: &str, bytes: usize) {
    std::fs::write(dir.join(name), vec![7u8; bytes]).expect("fill");
}

#[test]
fn host_part_reads_free_space_units_timers_age_key_and_generation() {
    if !require(&["age-keygen"]) || !require_root("mounts a tmpfs to fill it") {
        return;
    }
    let host = Host::new();
    let key = age_key(&host);
    let disk = Tmpfs::mount(&host.path("disk"), "4m");
    let config = host.write_config(&host.host_table(&key, &[(&disk.path, 40.0, 20.0)]));

    let (code, checks) = host.checks(&config);
    assert_eq!(code, 0, "{checks:?}");
    for id in [
        "host/units",
        "host/timers",
        "host/age-key",
        "host/generation",
    ] {
        assert_eq!(level(&checks, id), "ok", "{id}: {checks:?}");
    }
    let disk_id = format!("host/disk:{}", disk.path.display());
    assert_eq!(level(&checks, &disk_id), "ok");
    assert!(
        checks["host/generation"].1.contains("generation 42"),
        "{checks:?}"
    );
    assert!(
        checks["host/generation"].1.contains("5544dd5c0ffee"),
        "{checks:?}"
    );

    // 4 MiB with 2.8 MiB written: about 30 % free, below warn (40 %), above fail (20 %).
    fill(&disk.path, "a", 2_900_000);
    let (code, checks) = host.checks(&config);
    assert_eq!(level(&checks, &disk_id), "warn", "{checks:?}");
    assert_eq!(code, 0, "a warning alone is not a failure");
    fill(&disk.path, "b", 700_000);
    let (code, checks) = host.checks(&config);
    assert_eq!(level(&checks, &disk_id), "fail", "{checks:?}");
    assert!(checks[&disk_id].1.contains("fail below 20"), "{checks:?}");
    assert_eq!(code, 1);
    std::fs::remove_file(disk.path.join("a")).expect("rm");
    std::fs::remove_file(disk.path.join("b")).expect("rm");

    host.set_failed_units(&["homelab-backup.service", "k3s.service"]);
    std::fs::write(host.path("inactive"), "homelab-backup.timer\n").expect("inactive");
    std::fs::write(&key, "not a key\n").expect("key");
    // A new generation built but not switched to.
    std::os::unix::fs::symlink(
        host.path("store/system-b"),
        host.path("profiles/system-43-link"),
    )
    .expect("link");
    std::fs::remove_file(host.path("profiles/system")).expect("rm");
    std::os::unix::fs::symlink("system-43-link", host.path("profiles/system")).expect("link");
    let (code, checks) = host.checks(&config);
    assert_eq!(code, 1);
    // One line per failed unit and per stopped timer: each is its own alert.
    assert_eq!(level(&checks, "host/units/homelab-backup.service"), "fail");
    assert_eq!(level(&checks, "host/units/k3s.service"), "fail");
    assert!(!checks.contains_key("host/units"), "{checks:?}");
    assert_eq!(level(&checks, "host/timers/homelab-backup.timer"), "fail");
    assert!(!checks.contains_key("host/timers/homelab-status.timer"));
    assert_eq!(level(&checks, "host/age-key"), "fail");
    assert!(
        !checks["host/age-key"].1.contains("not a key"),
        "the key file is never shown"
    );
    assert_eq!(level(&checks, "host/generation"), "warn");
    assert!(
        checks["host/generation"].1.contains("generation 43"),
        "{checks:?}"
    );

    std::fs::remove_file(&key).expect("rm");
    let (_, checks) = host.checks(&config);
    assert_eq!(level(&checks, "host/age-key"), "fail");

    // The text view: one line per check, the command that shows more under what is wrong.
    let out = host.status(&config, &[]);
    let text = common::stdout(&out);
    assert!(text.contains("FAIL    host/units/k3s.service"), "{text}");
    assert!(
        text.contains("more: journalctl -u k3s.service -n 50"),
        "{text}"
    );
}

#[test]
fn tunnel_part_reads_cloudflareds_edge_connections() {
    let host = Host::new();
    let metrics = TextServer::start(
        "# HELP cloudflared_tunnel_ha_connections Number of active ha connections\n\
         # TYPE cloudflared_tunnel_ha_connections gauge\n\
         cloudflared_tunnel_ha_connections 4\n\
         cloudflared_tunnel_total_requests 12\n",
    );
    let config = host.write_config(&format!(
        "[tunnel]\nmetrics-url = \"http://127.0.0.1:{}\"\n",
        metrics.port
    ));
    let (code, checks) = host.checks(&config);
    assert_eq!((code, level(&checks, "tunnel/connections")), (0, "ok"));
    metrics.set("cloudflared_tunnel_ha_connections 2\n");
    let (code, checks) = host.checks(&config);
    assert_eq!((code, level(&checks, "tunnel/connections")), (0, "warn"));
    assert!(checks["tunnel/connections"].1.contains("2 of 4"));
    metrics.set("cloudflared_tunnel_ha_connections 0\n");
    let (code, checks) = host.checks(&config);
    assert_eq!((code, level(&checks, "tunnel/connections")), (1, "fail"));
    metrics.set("some_other_server 1\n");
    let (code, checks) = host.checks(&config);
    assert_eq!((code, level(&checks, "tunnel/connections")), (1, "unknown"));

    // Nothing listens: unknown, with the reason.
    drop(metrics);
    let closed = common::free_port();
    let config = host.write_config(&format!(
        "[tunnel]\nmetrics-url = \"http://127.0.0.1:{closed}\"\n"
    ));
    let (code, checks) = host.checks(&config);
    assert_eq!((code, level(&checks, "tunnel/connections")), (1, "unknown"));
    assert!(
        checks["tunnel/connections"].1.contains("do not answer"),
        "{checks:?}"
    );
}

#[test]
fn frozen_parts_are_unknown_and_the_answer_still_comes_within_ten_seconds() {
    if !require(&["kubectl", "kopia"]) {
        return;
    }
    let host = Host::new();
    let lab = common::Lab::new();
    lab.source_dir("data");
    // An API server and a metrics server that accept connections and never answer, and a
    // repository whose kopia hangs (the hanging-kopia stand-in, for every command here).
    let api = FrozenServer::start();
    let metrics = FrozenServer::start();
    let kubeconfig = host.path("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: k3s\n  cluster:\n    server: https://127.0.0.1:{}\n    insecure-skip-tls-verify: true\n\
             users:\n- name: admin\n  user:\n    token: test\ncontexts:\n- name: k3s\n  context:\n    cluster: k3s\n    user: admin\ncurrent-context: k3s\n",
            api.port
        ),
    )
    .expect("kubeconfig");
    let backup_config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"data\"\npath = \"{}\"\n",
            lab.path("src/data").display()
        ),
    );
    let hanging = common::script(
        &host.path("kopia"),
        "#!/bin/sh\n# Stand-in: a kopia whose repository disk hangs.\nexec sleep 60\n",
    );
    // And a systemd that hangs (stand-in): the host's other checks must still come back.
    let hung_systemctl = common::script(
        &host.path("hung-systemctl"),
        "#!/bin/sh\n# Stand-in for a systemctl whose systemd hangs.\nexec sleep 60\n",
    );
    let key = host.path("key.txt");
    std::fs::write(&key, "AGE-SECRET-KEY-1STANDIN\n").expect("key");
    let config = host.write_config(&format!(
        "{}[cluster]\nkubeconfig = \"{}\"\n[tunnel]\nmetrics-url = \"http://127.0.0.1:{}\"\n[backup]\nconfig = \"{}\"\n",
        host.host_table(&key, &[(Path::new("/"), 0.0, 0.0)]),
        kubeconfig.display(),
        metrics.port,
        backup_config.display()
    ));
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_homelab"))
        .args(["status", "--json", "--config"])
        .arg(&config)
        .env("HOMELAB_KOPIA", &hanging)
        .env("HOMELAB_SYSTEMCTL", &hung_systemctl)
        .output()
        .expect("homelab runs");
    let took = started.elapsed();
    common::report("homelab status", &out);
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let checks = json["checks"].as_array().expect("checks");
    for part in [
        "cluster",
        "tunnel/connections",
        "backup",
        "host/units",
        "host/timers",
    ] {
        let check = checks
            .iter()
            .find(|c| c["id"] == part)
            .unwrap_or_else(|| panic!("no {part} line: {json}"));
        assert_eq!(check["level"], "unknown", "{part}: {check}");
        assert!(!check["message"].as_str().unwrap_or("").is_empty());
    }
    for id in ["host/age-key", "host/disk:/"] {
        let check = checks.iter().find(|c| c["id"] == id).expect(id);
        assert_eq!(
            check["level"], "ok",
            "a hung systemd does not hide {id}: {check}"
        );
    }
    // Nothing we started outlives us.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        common::pids_with(&[&hanging.display().to_string()]).is_empty()
            && common::pids_with(&["sleep 60"]).is_empty(),
        "a hung child outlived homelab status"
    );
}

/// The messages the ntfy stand-in received (not the heartbeat pings).
fn messages(receiver: &HttpStandIn) -> Vec<common::Request> {
    receiver
        .received()
        .into_iter()
        .filter(|r| r.path == "/ntfy")
        .collect()
}

fn title(request: &common::Request) -> String {
    request
        .headers
        .iter()
        .find(|(name, _)| name == "title")
        .map(|(_, value)| value.clone())
        .unwrap_or_default()
}

#[test]
fn alerts_once_on_failure_once_on_recovery_never_while_unchanged_flapping_held_and_a_daily_summary()
{
    if !require(&["age-keygen"]) {
        return;
    }
    let host = Host::new();
    let key = age_key(&host);
    let receiver = HttpStandIn::start();
    let webhook = receiver.url_file(&host.path("webhook-url"), "/ntfy");
    let heartbeat = receiver.url_file(&host.path("heartbeat-url"), "/hc/key");
    let config = host.write_config(&format!(
        "{}\n[notify]\nwebhook-file = \"{}\"\nheartbeat-url-file = \"{}\"\n",
        host.host_table(&key, &[]),
        webhook.display(),
        heartbeat.display()
    ));
    let notify = || host.status(&config, &["--notify"]);

    assert_eq!(notify().status.code(), Some(0));
    assert!(
        messages(&receiver).is_empty(),
        "nothing changed, nothing to say"
    );
    let pings: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(pings, ["/hc/key/status"], "the watcher's own heartbeat");

    host.set_failed_units(&["homelab-backup.service"]);
    assert_eq!(notify().status.code(), Some(1));
    let sent = messages(&receiver);
    assert_eq!(sent.len(), 1, "one message on failure: {sent:?}");
    assert!(title(&sent[0]).contains("1 problem"), "{sent:?}");
    assert!(
        sent[0].body.contains("host/units/homelab-backup.service"),
        "{sent:?}"
    );
    assert!(
        sent[0]
            .headers
            .contains(&("priority".into(), "high".into()))
    );

    notify();
    notify();
    assert_eq!(messages(&receiver).len(), 1, "nothing while unchanged");

    host.set_failed_units(&[]);
    notify();
    let sent = messages(&receiver);
    assert_eq!(sent.len(), 2, "one message on recovery: {sent:?}");
    assert!(title(&sent[1]).contains("recovered"), "{sent:?}");
    assert!(
        sent[1]
            .body
            .contains("ok      host/units/homelab-backup.service"),
        "{sent:?}"
    );

    // Failing again within the hour after the last message: flapping, held back.
    host.set_failed_units(&["homelab-backup.service"]);
    notify();
    notify();
    assert_eq!(
        messages(&receiver).len(),
        2,
        "a flapping check is held back"
    );
    // An hour later (the state's clock moved back by one), still failing: said once more.
    let state_file = host.path("state/alerts.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).expect("state")).expect("JSON");
    let at = &mut state["checks"]["host/units/homelab-backup.service"]["announced-at"];
    *at = (at.as_u64().expect("announced-at") - 3700).into();
    std::fs::write(&state_file, serde_json::to_vec(&state).expect("JSON")).expect("state");
    notify();
    let sent = messages(&receiver);
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent[2].body.contains("again"), "{sent:?}");
    notify();
    assert_eq!(messages(&receiver).len(), 3);

    // The daily summary lists what is not ok; when all is well it says so.
    host.status(&config, &["--summary"]);
    let sent = messages(&receiver);
    assert_eq!(sent.len(), 4);
    assert!(title(&sent[3]).contains("not ok") && sent[3].body.contains("host/units/"));
    host.set_failed_units(&[]);
    notify();
    host.status(&config, &["--summary"]);
    let sent = messages(&receiver);
    assert_eq!(sent.len(), 6, "recovery, then the summary: {sent:?}");
    assert!(title(&sent[5]).contains("all ok"), "{sent:?}");
}

#[test]
fn an_undelivered_alert_is_sent_by_the_next_run_and_a_full_state_disk_does_not_repeat_it() {
    if !require(&["age-keygen"]) || !require_root("mounts a tmpfs to fill it") {
        return;
    }
    let host = Host::new();
    let key = age_key(&host);
    // The state dir on a full file system; the runtime copy elsewhere.
    let full = Tmpfs::mount(&host.path("full"), "64k");
    let mut n = 0;
    while std::fs::write(full.path.join(format!("f{n}")), vec![1u8; 4096]).is_ok() {
        n += 1;
    }
    let port = common::free_port();
    let webhook = host.path("webhook-url");
    std::fs::write(&webhook, format!("http://127.0.0.1:{port}/ntfy\n")).expect("url");
    let config = host.path("status.toml");
    std::fs::write(
        &config,
        format!(
            "state-dir = \"{}\"\nruntime-dir = \"{}\"\n{}\n[notify]\nwebhook-file = \"{}\"\n",
            full.path.join("state").display(),
            host.path("run").display(),
            host.host_table(&key, &[]),
            webhook.display()
        ),
    )
    .expect("config");
    host.set_failed_units(&["k3s.service"]);
    // Nothing listens on the webhook's port: not delivered, so not recorded as said.
    host.status(&config, &["--notify"]);
    let receiver = HttpStandIn::start();
    std::fs::write(&webhook, format!("{}\n", receiver.url("/ntfy"))).expect("url");
    host.status(&config, &["--notify"]);
    assert_eq!(messages(&receiver).len(), 1, "the next run delivers it");
    for _ in 0..3 {
        host.status(&config, &["--notify"]);
    }
    assert_eq!(
        messages(&receiver).len(),
        1,
        "with the state disk full, the runtime copy keeps the alert from repeating"
    );
    assert!(
        !full.path.join("state/alerts.json").exists(),
        "the full disk really took nothing"
    );
    assert!(
        host.path("run/alerts.json").exists(),
        "the runtime copy holds it"
    );
    // A second failure beside the first is its own alert, even now.
    host.set_failed_units(&["k3s.service", "homelab-backup.service"]);
    host.status(&config, &["--notify"]);
    let sent = messages(&receiver);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[1].body.contains("host/units/homelab-backup.service")
            && !sent[1].body.contains("host/units/k3s.service"),
        "{sent:?}"
    );
}
