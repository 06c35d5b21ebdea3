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
/// A Cloudflare Access service token (made up: the stand-in tunnel only records it).
const ACCESS_CLIENT_ID: &str = "3f9c2a7e.access";
const ACCESS_CLIENT_SECRET: &str = "made-up service token secret";

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

/// A stand-in for `cloudflared` that `homelab client` starts: the TCP forwarder above. It
/// first records its argv and the service token cloudflared would read from its environment
/// (TUNNEL_SERVICE_TOKEN_ID/SECRET, the EnvVars of `access tcp`'s --service-token-* flags in
/// cloudflare/cloudflared cmd/cloudflared/access/cmd.go) in `cloudflared.calls`.
fn cloudflared_stand_in(lab: &Lab) -> PathBuf {
    common::script(
        &lab.path("cloudflared"),
        &format!(
            "#!/bin/sh\nprintf 'argv: %s\\nid: %s\\nsecret: %s\\n' \"$*\" \"$TUNNEL_SERVICE_TOKEN_ID\" \"$TUNNEL_SERVICE_TOKEN_SECRET\" >> '{}'\nexec python3 {} \"$@\"\n",
            lab.path("cloudflared.calls").display(),
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/support/tcp_forwarder.py")
                .display()
        ),
    )
}

/// Pids of the tunnels a client started (the forwarder listening on `port`).
fn tunnels_on(port: u16) -> Vec<i32> {
    common::pids_with(&["tcp_forwarder.py", &format!("127.0.0.1:{port}")])
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn homelab_client_sets_up_backs_up_through_the_tunnel_and_always_closes_it() {
    if !require(&["kopia", "python3", "sh"]) {
        return;
    }
    let lab = Lab::new();
    let host_data = lab.source_dir("host");
    std::fs::write(host_data.join("a"), "host data").expect("file");
    let backup_config = lab.write_config(
        "backup.toml",
        &format!(
            "[[source]]\nname = \"host\"\npath = \"{}\"\n",
            host_data.display()
        ),
    );
    assert_eq!(lab.backup(&backup_config, &["run"]).status.code(), Some(0));
    let pod = Pod::new(lab.path("pod"), lab.path("repo"), free_port());
    let (server, fingerprint) = pod.start();
    let fingerprint = fingerprint.expect("fingerprint");

    let home = lab.path("home");
    for folder in ["Documents", "Pictures", "Desktop"] {
        std::fs::create_dir_all(home.join(folder)).expect("folder");
        std::fs::write(home.join(folder).join("note.txt"), folder).expect("file");
    }
    let config = home.join(".config/homelab/client.toml");
    let stand_in = cloudflared_stand_in(&lab);
    let client = |args: &[&str]| {
        let mut command = lab.homelab();
        command
            .arg("client")
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("HOME", &home)
            .env("HOMELAB_CLOUDFLARED", &stand_in)
            .env("HOMELAB_TEST_FORWARD_TO", format!("127.0.0.1:{}", pod.port));
        command
    };
    let run = |args: &[&str], input: Option<&str>| {
        let mut command = client(args);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("homelab runs");
        if let Some(input) = input {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("input");
        }
        let out = child.wait_with_output().expect("homelab ends");
        common::report(&format!("homelab client {args:?}"), &out);
        out
    };

    // Setup: the configuration, the password, the connection, the policies, the agent.
    let out = run(
        &[
            "setup",
            "--fingerprint",
            &fingerprint,
            "--user",
            CLIENT_USER,
            "--hostname",
            "localhost",
            "--password-stdin",
            "--service-token-id",
            ACCESS_CLIENT_ID,
            "--service-token-secret-stdin",
        ],
        Some(&format!("{CLIENT_PASSWORD}\n{ACCESS_CLIENT_SECRET}\n")),
    );
    assert_eq!(out.status.code(), Some(0));
    let said = common::stdout(&out);
    for step in [
        "wrote the configuration",
        "stored the server password",
        "stored the Cloudflare Access service token",
        "certificate pinned",
        "wrote the launchd agent",
    ] {
        assert!(said.contains(step), "setup says {step:?}: {said}");
    }
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace(
            "local-port = 51515",
            &format!("local-port = {}", free_port()),
        ),
    )
    .expect("a free port for the test");
    let port: u16 = std::fs::read_to_string(&config)
        .expect("config")
        .lines()
        .find_map(|l| l.strip_prefix("local-port = "))
        .and_then(|p| p.parse().ok())
        .expect("port");
    let password_file = home.join(".local/state/homelab-client/server-password");
    let mode = std::fs::metadata(&password_file)
        .expect("password file")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // The agent parses back and runs the right command at the right time.
    let plist_path = home.join("Library/LaunchAgents/network.aza.homelab-client-backup.plist");
    let agent: plist::Value = plist::from_file(&plist_path).expect("the plist parses");
    let agent = agent.as_dictionary().expect("a dictionary");
    let arguments: Vec<&str> = agent["ProgramArguments"]
        .as_array()
        .expect("arguments")
        .iter()
        .map(|v| v.as_string().expect("text"))
        .collect();
    assert!(arguments[0].ends_with("/homelab"), "{arguments:?}");
    assert_eq!(&arguments[1..4], ["client", "backup", "--config"]);
    assert_eq!(arguments[4], config.to_string_lossy());
    let calendar = agent["StartCalendarInterval"]
        .as_dictionary()
        .expect("calendar");
    assert_eq!(calendar["Hour"].as_unsigned_integer(), Some(12));
    assert_eq!(calendar["Minute"].as_unsigned_integer(), Some(30));
    assert_eq!(agent["RunAtLoad"].as_boolean(), Some(true));

    // Setup again changes nothing and needs nothing new.
    let out = run(&["setup"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(common::stdout(&out).contains("kept the configuration"));

    // A backup through the tunnel; the tunnel is gone afterwards.
    let out = run(&["backup"], None);
    assert_eq!(out.status.code(), Some(0));
    // The tunnel authenticated with the service token, which reached cloudflared through its
    // environment only: never in its argv, nor in the launchd agent.
    let calls = std::fs::read_to_string(lab.path("cloudflared.calls")).expect("calls");
    assert!(
        calls.contains(&format!("id: {ACCESS_CLIENT_ID}\n")),
        "{calls}"
    );
    assert!(
        calls.contains(&format!("secret: {ACCESS_CLIENT_SECRET}\n")),
        "{calls}"
    );
    for line in calls.lines().filter(|l| l.starts_with("argv: ")) {
        assert!(
            line.starts_with("argv: access tcp --hostname localhost --url 127.0.0.1:"),
            "{line}"
        );
        assert!(
            !line.contains(ACCESS_CLIENT_SECRET),
            "the secret is in argv: {line}"
        );
    }
    let plist_text = std::fs::read_to_string(&plist_path).expect("plist");
    assert!(!plist_text.contains(ACCESS_CLIENT_SECRET) && !plist_text.contains(CLIENT_PASSWORD));
    assert!(
        tunnels_on(port).is_empty(),
        "the tunnel is closed after a good run"
    );
    let out = lab.kopia(&["snapshot", "list", "--all", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    for folder in ["Documents", "Pictures", "Desktop"] {
        let path = home.join(folder).to_string_lossy().into_owned();
        assert!(
            listed.iter().any(|s| s["source"]["userName"] == "aiden"
                && s["source"]["host"] == "macbook"
                && s["source"]["path"] == path.as_str()),
            "{folder} was snapshotted as aiden@macbook"
        );
    }
    let out = run(&["status", "--json"], None);
    assert_eq!(out.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(status["agent_installed"], true);
    assert_eq!(status["sources"][0]["stale"], false);

    // Killed mid-backup: the tunnel dies with it (parent-death signal). kopia stands in hung.
    let hanging = common::hanging_kopia(&lab, 600);
    for signal in [
        nix::sys::signal::Signal::SIGKILL,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        let mut child = client(&["backup"])
            .env("HOMELAB_KOPIA", &hanging)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("homelab runs");
        wait_until("the tunnel opens", || !tunnels_on(port).is_empty());
        std::thread::sleep(Duration::from_millis(300));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
            signal,
        )
        .expect("signal");
        let status = child.wait().expect("homelab ends");
        if signal == nix::sys::signal::Signal::SIGTERM {
            assert_eq!(status.code(), Some(1), "a terminated run fails");
        }
        wait_until(&format!("the tunnel is gone after {signal}"), || {
            tunnels_on(port).is_empty()
        });
    }

    // kopia fails (the server is gone): the run fails and the tunnel is closed all the same.
    drop(server);
    let out = run(&["backup"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        tunnels_on(port).is_empty(),
        "the tunnel is closed after a failed run"
    );
    let out = run(&["status"], None);
    assert_eq!(out.status.code(), Some(1), "the failed run shows in status");

    // A cloudflared that cannot open the tunnel: its own words and exit status are shown.
    let refusing = common::script(
        &lab.path("cloudflared-refusing"),
        "#!/bin/sh\necho 'failed to connect to origin: websocket: bad handshake' >&2\nexit 3\n",
    );
    let out = client(&["backup"])
        .env("HOMELAB_CLOUDFLARED", &refusing)
        .output()
        .expect("homelab runs");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cloudflared exited (exit status: 3)")
            && err.contains("websocket: bad handshake"),
        "{err}"
    );

    // Without a stored service token the run fails at once and says how to store one, instead
    // of leaving cloudflared waiting for a browser login nobody will do.
    std::fs::remove_file(home.join(".local/state/homelab-client/access-client-secret"))
        .expect("rm");
    let out = run(&["backup"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("homelab client setup --service-token-id"),
        "{}",
        stderr(&out)
    );
    // Every run, good or not, says so on the screen when the last good snapshot is too old.
    let state_file = home.join(".local/state/homelab-client/state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).expect("state")).expect("JSON");
    for (_, source) in state["sources"].as_object_mut().expect("sources") {
        source["last-snapshot"] = (unix_now() - 4 * 86_400).into();
    }
    std::fs::write(&state_file, serde_json::to_vec(&state).expect("JSON")).expect("state");
    let out = run(&["backup"], None);
    assert!(
        stderr(&out).contains("backups are older than their objective"),
        "{}",
        stderr(&out)
    );

    // A bad configuration is located.
    std::fs::write(&config, "server-hostname = \"kopia.aza.network\"\nserver-fingerprint = \"abc\"\nuser = \"aiden@macbook\"\n")
        .expect("config");
    let out = run(&["status"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(":2: server-fingerprint: expected the certificate's SHA-256"),
        "{}",
        stderr(&out)
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}
