//! The Kopia repository server as the cluster runs it, with the laptop's path to it: a real
//! `kopia server start` on 127.0.0.1, started with the init and main container scripts and the
//! environment of `manifests/apps/kopia/deployment.yaml` (read from the manifest, so the two
//! cannot drift), over a filesystem repository `homelab backup` created. Between the client and
//! the server runs a TCP forwarder standing in for `cloudflared access tcp` (which needs
//! Cloudflare's edge). The client pins the server certificate's SHA-256.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{Guard, Lab, free_port, require, stderr, wait_for_port};

const DEPLOYMENT: &str = "flux/clusters/azalab-0/manifests/apps/kopia/deployment.yaml";
/// What the kopia image's Dockerfile sets (kopia tools/docker/Dockerfile, v0.23.1); the paths
/// are rewritten into the test's folders like the volume mounts.
const IMAGE_ENV: [(&str, &str); 5] = [
    ("KOPIA_CONFIG_PATH", "/app/config/repository.config"),
    ("KOPIA_LOG_DIR", "/app/logs"),
    ("KOPIA_CACHE_DIRECTORY", "/app/cache"),
    ("KOPIA_PERSIST_CREDENTIALS_ON_CONNECT", "false"),
    ("KOPIA_CHECK_FOR_UPDATES", "false"),
];
const CLIENT_USER: &str = "aiden@macbook";
const CLIENT_PASSWORD: &str = "laptop password";

/// The Deployment's scripts, mounts and port, from the manifest.
struct Manifest {
    init_script: String,
    main_script: String,
    mounts: Vec<String>,
}

fn manifest() -> Manifest {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(DEPLOYMENT);
    let text = std::fs::read_to_string(&path).expect("deployment manifest");
    let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("YAML");
    let pod = &doc["spec"]["template"]["spec"];
    let script = |container: &serde_json::Value| -> String {
        let command: Vec<&str> = container["command"]
            .as_array()
            .expect("a command")
            .iter()
            .map(|v| v.as_str().expect("text"))
            .collect();
        assert_eq!(&command[..2], ["/bin/sh", "-ec"], "scripts run with sh -ec");
        command[2].to_owned()
    };
    let main = &pod["containers"][0];
    let mounts = main["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| m["mountPath"].as_str().expect("mountPath").to_owned())
        .collect();
    Manifest {
        init_script: script(&pod["initContainers"][0]),
        main_script: script(main),
        mounts,
    }
}

/// One "pod": the manifest's paths mapped into `root`, its Secret's keys set from the test.
struct Pod {
    root: PathBuf,
    repository: PathBuf,
    port: u16,
    manifest: Manifest,
}

impl Pod {
    fn new(root: PathBuf, repository: PathBuf, port: u16) -> Self {
        Self {
            root,
            repository,
            port,
            manifest: manifest(),
        }
    }

    /// `text` with every container path in this pod's folders and the listen address on loopback.
    fn localize(&self, text: &str) -> String {
        let mut text = text.replace("0.0.0.0:51515", &format!("127.0.0.1:{}", self.port));
        for mount in &self.manifest.mounts {
            let local = if mount == "/repository" {
                self.repository.clone()
            } else {
                self.root.join(mount.trim_start_matches('/'))
            };
            std::fs::create_dir_all(&local).expect("mount folder");
            text = replace_path(&text, mount, &local.to_string_lossy());
        }
        replace_path(
            &text,
            "/app/logs",
            &self.root.join("app/logs").to_string_lossy(),
        )
    }

    fn command(&self, script: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-ec").arg(self.localize(script));
        for (key, value) in IMAGE_ENV {
            command.env(key, self.localize(value));
        }
        // The Secret's keys (manifests/apps/kopia/secret.sops.yaml).
        command
            .env("KOPIA_PASSWORD", "correct horse battery staple")
            .env("KOPIA_SERVER_USERNAME", "admin")
            .env("KOPIA_SERVER_PASSWORD", "server control password")
            .env("KOPIA_CLIENT_USER", CLIENT_USER)
            .env("KOPIA_CLIENT_PASSWORD", CLIENT_PASSWORD)
            .current_dir(&self.root);
        command
    }

    /// Runs the init container, then starts the server; returns it and the fingerprint it
    /// printed when it generated its certificate (None when it reused one).
    fn start(&self) -> (Guard, Option<String>) {
        let out = self
            .command(&self.manifest.init_script)
            .output()
            .expect("init runs");
        assert!(
            out.status.success(),
            "init container failed: {}",
            stderr(&out)
        );
        let mut child: Child = self
            .command(&self.manifest.main_script)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server starts");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut fingerprint = None;
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("server: {line}");
                if let Some(hex) = line.strip_prefix("SERVER CERT SHA256: ") {
                    fingerprint = Some(hex.trim().to_owned());
                }
                if line.starts_with("SERVER ADDRESS: ") {
                    let _ = tx.send(fingerprint.take());
                }
            }
        });
        let fingerprint = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server announced its address");
        wait_for_port(self.port, Duration::from_secs(30));
        (Guard(child), fingerprint)
    }

    fn certificate(&self) -> Vec<u8> {
        std::fs::read(self.root.join("app/server/tls.cert")).expect("certificate kept")
    }
}

/// Replaces `from` where it starts a path (after the start, a space, `=` or a quote), so that
/// `/repository` is not replaced inside `/app/config/repository.config`.
fn replace_path(text: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let starts = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || matches!(c, '=' | '"' | '\''));
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        out.push_str(if starts { to } else { from });
        rest = &after[from.len()..];
    }
    out.push_str(rest);
    out
}

/// `cloudflared access tcp` stand-in: forwards a loopback port to the server.
fn tunnel(to: u16) -> (Guard, u16) {
    let port = free_port();
    let child = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/tcp_forwarder.py"))
        .args(["access", "tcp", "--hostname", "kopia.aza.network", "--url"])
        .arg(format!("127.0.0.1:{port}"))
        .env("HOMELAB_TEST_FORWARD_TO", format!("127.0.0.1:{to}"))
        .spawn()
        .expect("forwarder starts");
    wait_for_port(port, Duration::from_secs(20));
    (Guard(child), port)
}

/// The laptop's kopia, with its own config.
fn laptop(lab: &Lab, args: &[&str]) -> Output {
    let out = Command::new("kopia")
        .args(args)
        .args(["--no-progress"])
        .env("KOPIA_CONFIG_PATH", lab.path("laptop/repository.config"))
        .env("KOPIA_PASSWORD", CLIENT_PASSWORD)
        .env("KOPIA_LOG_DIR", lab.path("laptop/logs"))
        .env("KOPIA_CHECK_FOR_UPDATES", "false")
        .output()
        .expect("kopia runs");
    common::report(&format!("laptop kopia {args:?}"), &out);
    out
}

fn connect(lab: &Lab, port: u16, fingerprint: &str) -> Output {
    let _ = std::fs::remove_file(lab.path("laptop/repository.config"));
    laptop(
        lab,
        &[
            "repository",
            "connect",
            "server",
            "--url",
            &format!("https://127.0.0.1:{port}"),
            "--server-cert-fingerprint",
            fingerprint,
            "--override-username",
            "aiden",
            "--override-hostname",
            "macbook",
        ],
    )
}

#[test]
fn the_laptop_backs_up_through_the_tunnel_to_the_server_the_cluster_runs_and_keeps_its_pin() {
    if !require(&["kopia", "python3", "sh"]) {
        return;
    }
    let lab = Lab::new();
    // The host side creates the repository, as `homelab backup run` does on azalab-0.
    let host_data = lab.source_dir("host");
    std::fs::write(host_data.join("a"), "host data").expect("file");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"host\"\npath = \"{}\"\n",
            host_data.display()
        ),
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));

    let pod = Pod::new(lab.path("pod"), lab.path("repo"), free_port());
    let (server, fingerprint) = pod.start();
    let fingerprint = fingerprint.expect("the first start generates and prints a certificate");
    let certificate = pod.certificate();
    let (_tunnel, local) = tunnel(pod.port);

    let documents = lab.source_dir("Documents");
    std::fs::write(documents.join("thesis.txt"), "chapter one").expect("file");
    assert!(connect(&lab, local, &fingerprint).status.success());
    let out = laptop(&lab, &["snapshot", "create", &documents.to_string_lossy()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The host sees the laptop's snapshot, under the laptop's user and host.
    let out = lab.kopia(&["snapshot", "list", "--all", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        listed.iter().any(|s| s["source"]["userName"] == "aiden"
            && s["source"]["host"] == "macbook"
            && s["source"]["path"] == documents.to_string_lossy().as_ref()),
        "the laptop's snapshot is in the repository"
    );

    // The pod restarts on the same volume: it keeps its certificate, the pin still holds.
    drop(server);
    let (_server, regenerated) = pod.start();
    assert_eq!(regenerated, None, "no new certificate on restart");
    assert_eq!(pod.certificate(), certificate);
    std::fs::write(documents.join("thesis.txt"), "chapter two").expect("file");
    let out = laptop(&lab, &["snapshot", "create", &documents.to_string_lossy()]);
    assert!(
        out.status.success(),
        "the pinned client still connects: {}",
        stderr(&out)
    );

    // A server with another certificate (someone else's, or a regenerated one) is refused.
    let impostor = Pod::new(lab.path("impostor"), lab.path("repo"), free_port());
    let (_impostor, other) = impostor.start();
    assert_ne!(other.as_deref(), Some(fingerprint.as_str()));
    let (_tunnel2, local2) = tunnel(impostor.port);
    let out = connect(&lab, local2, &fingerprint);
    assert!(
        !out.status.success(),
        "a different certificate must be refused"
    );
    let text = stderr(&out).to_lowercase();
    assert!(
        text.contains("fingerprint"),
        "the refusal names the fingerprint: {text}"
    );
}
