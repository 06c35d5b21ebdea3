//! Shared test harness: temp labs with their own Kopia repository and config, and the real
//! programs the tests drive (kopia, rclone's S3 server, PostgreSQL), started on 127.0.0.1 and
//! stopped when dropped.
#![allow(dead_code)] // each test file uses its own part of the harness

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod kube;

/// The repository these tests belong to.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The parts of the repository `homelab check` reads (homelab.toml, .sops.yaml, flux/, the host
/// secrets and the Flux bootstrap module), copied into a temp dir to be broken there.
pub fn copy_repo() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("nixos/modules")).expect("dirs");
    std::fs::create_dir_all(dir.path().join("nixos/secrets")).expect("dirs");
    for file in [
        "homelab.toml",
        ".sops.yaml",
        "nixos/modules/flux.nix",
        "nixos/secrets/host-secrets.sops.yaml",
    ] {
        std::fs::copy(repo().join(file), dir.path().join(file)).expect("copy");
    }
    let status = Command::new("cp")
        .arg("-r")
        .arg(repo().join("flux"))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(status.success());
    dir
}

/// The host's backup configuration as nixos/lib/backup-config.nix makes it from the facts file
/// `facts` (the repository's homelab.toml, or a changed copy), the secret paths as sops-nix
/// would make them. Needs nix-instantiate (no nixpkgs).
pub fn generated_backup_config(facts: &Path) -> serde_json::Value {
    let expression = format!(
        r#"
      let facts = builtins.fromTOML (builtins.readFile {facts}); in
      import {generator} {{
        backup = facts.backup;
        sourceRepository = facts.source-repository;
        secrets = {{
          repositoryPassword = "/run/secrets/kopia/repository-password";
          r2Credentials = "/run/secrets/rendered/r2-credentials.env";
          webhookUrl = "/run/secrets/notify/webhook-url";
          matrixToken = "/run/secrets/notify/matrix-token";
          heartbeatUrl = "/run/secrets/notify/heartbeat-url";
        }};
      }}"#,
        facts = facts.display(),
        generator = repo().join("nixos/lib/backup-config.nix").display(),
    );
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", &expression])
        .output()
        .expect("nix-instantiate runs");
    assert!(out.status.success(), "evaluation failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// True when every tool is on PATH. Under CI a missing tool fails the test; elsewhere the test
/// is skipped with a loud message.
pub fn require(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "missing tools: {} (bash .ci/run installs them and puts them on PATH)",
        missing.join(", ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("\n!!! SKIPPED: {message}\n");
    false
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port} after {within:?}");
}

/// A temp folder with a repository password, a state dir, and the sources under `src/`.
pub struct Lab {
    pub dir: TempDir,
}

impl Lab {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("homelab-test-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(
            dir.path().join("password"),
            "correct horse battery staple\n",
        )
        .expect("password file");
        Self { dir }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Creates `src/<name>` and returns its path.
    pub fn source_dir(&self, name: &str) -> PathBuf {
        let path = self.path(&format!("src/{name}"));
        std::fs::create_dir_all(&path).expect("source dir");
        path
    }

    /// The config header every test shares, with `top` (top-level keys) before the tables and
    /// `rest` (sources and tables) after them.
    pub fn config_text(&self, top: &str, rest: &str) -> String {
        format!(
            "{top}\nstate-dir = \"{state}\"\n\
             textfile-dir = \"{metrics}\"\n\
             rpo = \"1h\"\n\n\
             [repository]\n\
             path = \"{repo}\"\n\
             password-file = \"{password}\"\n\
             create = true\n\n{rest}",
            state = self.path("state").display(),
            metrics = self.path("metrics").display(),
            repo = self.path("repo").display(),
            password = self.path("password").display(),
        )
    }

    pub fn write_config(&self, name: &str, rest: &str) -> PathBuf {
        self.write_config_with_top(name, "", rest)
    }

    pub fn write_config_with_top(&self, name: &str, top: &str, rest: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, self.config_text(top, rest)).expect("config");
        path
    }

    pub fn homelab(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_homelab"));
        command
            .env("HOMELAB_LOG", "homelab=debug")
            .env_remove("JOURNAL_STREAM")
            .env_remove("HOMELAB_BACKUP_CONFIG")
            .stdin(Stdio::null());
        command
    }

    /// Runs `homelab backup <args> --config <config>` and returns its output.
    pub fn backup(&self, config: &Path, args: &[&str]) -> Output {
        let output = self
            .homelab()
            .arg("backup")
            .args(args)
            .arg("--config")
            .arg(config)
            .output()
            .expect("homelab runs");
        report(&format!("homelab backup {args:?}"), &output);
        output
    }

    /// kopia with the same client config as homelab's, for assertions.
    pub fn kopia(&self, args: &[&str]) -> Output {
        let kopia_dir = self.path("state/kopia");
        Command::new("kopia")
            .args(args)
            .args(["--no-progress", "--no-auto-maintenance"])
            .env("KOPIA_CONFIG_PATH", kopia_dir.join("repository.config"))
            .env("KOPIA_PASSWORD", "correct horse battery staple")
            .env("KOPIA_LOG_DIR", kopia_dir.join("logs"))
            .env("KOPIA_CHECK_FOR_UPDATES", "false")
            .env("KOPIA_PERSIST_CREDENTIALS_ON_CONNECT", "false")
            .output()
            .expect("kopia runs")
    }

    /// An offsite credentials file (the environment file sops-nix writes on the host) for
    /// `bucket` on the S3 server at `endpoint`, with the given keys.
    pub fn s3_credentials(
        &self,
        endpoint: &str,
        bucket: &str,
        key_id: &str,
        secret: &str,
    ) -> PathBuf {
        let path = self.path(&format!("r2-{bucket}-{key_id}.env"));
        std::fs::write(
            &path,
            format!(
                "# written by sops-nix on the host\nR2_ENDPOINT={endpoint}\nR2_BUCKET={bucket}\n\
                 AWS_ACCESS_KEY_ID={key_id}\nAWS_SECRET_ACCESS_KEY={secret}\n"
            ),
        )
        .expect("credentials");
        path
    }

    /// Snapshots of `source` in the repository, oldest first, incomplete ones included.
    pub fn snapshots(&self, source: &Path) -> Vec<serde_json::Value> {
        let out = self.kopia(&[
            "snapshot",
            "list",
            &source.to_string_lossy(),
            "--json",
            "--incomplete",
        ]);
        assert!(
            out.status.success(),
            "kopia snapshot list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("snapshot list JSON")
    }
}

/// Shows what a command did in the test's output (seen when the test fails).
pub fn report(what: &str, output: &Output) {
    eprintln!(
        "--- {what}: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn pinned(snapshot: &serde_json::Value) -> bool {
    snapshot["pins"]
        .as_array()
        .is_some_and(|pins| pins.iter().any(|p| p == "homelab-last-good"))
}

/// A child process killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `rclone serve s3` on loopback, serving buckets as folders under `root`.
pub struct S3Server {
    pub port: u16,
    pub root: PathBuf,
    child: Option<Guard>,
}

pub const S3_KEY_ID: &str = "homelab-test";
pub const S3_SECRET: &str = "homelab-test-secret-key";

impl S3Server {
    pub fn start(root: PathBuf) -> Self {
        std::fs::create_dir_all(&root).expect("s3 root");
        let port = free_port();
        let child = Command::new("rclone")
            .args(["serve", "s3", "--addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--auth-key")
            .arg(format!("{S3_KEY_ID},{S3_SECRET}"))
            .args(["--config", "/dev/null"])
            // Objects the tests remove from the bucket folder must be gone at once, as on R2.
            .args(["--dir-cache-time", "0s"])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rclone starts");
        wait_for_port(port, Duration::from_secs(20));
        Self {
            port,
            root,
            child: Some(Guard(child)),
        }
    }

    pub fn stop(&mut self) {
        self.child.take();
    }

    /// The server's process ID, to freeze it (SIGSTOP) the way a hung endpoint behaves.
    pub fn pid(&self) -> i32 {
        let child = self.child.as_ref().expect("the S3 server is running");
        i32::try_from(child.0.id()).expect("pid fits")
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A PostgreSQL cluster in a temp folder, on a loopback port, trust auth. Run as the `postgres`
/// user when the tests run as root (initdb refuses root).
pub struct Postgres {
    pub port: u16,
    dir: TempDir,
    as_postgres: bool,
}

impl Postgres {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("homelab-pg-")
            .tempdir()
            .expect("pg dir");
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success());
            // The temp dir's parent must be traversable by postgres.
        }
        let port = free_port();
        let data = dir.path().join("data");
        let pg = Self {
            port,
            dir,
            as_postgres,
        };
        pg.run_checked(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.run_checked(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &pg.dir.path().join("log").to_string_lossy(),
                "-w",
                "-o",
                &format!(
                    "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
                    pg.dir.path().display()
                ),
                "start",
            ],
        );
        pg
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let path = which(program).unwrap_or_else(|| panic!("{program} not on PATH"));
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path).args(args);
            command
        } else {
            let mut command = Command::new(path);
            command.args(args);
            command
        }
    }

    fn run_checked(&self, program: &str, args: &[&str]) {
        let out = self.command(program, args).output().expect("pg tool runs");
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs SQL with psql as `postgres` over TCP and returns stdout (unaligned, tuples only).
    /// psql connected over TCP as `postgres`.
    fn psql_command(&self) -> Command {
        let mut command = Command::new("psql");
        command.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ]);
        command
    }

    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = self
            .psql_command()
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Loads a `pg_dumpall` file and returns the ERROR lines psql printed. A `--clean` dump
    /// tries to drop and re-create the role it is loaded as; the caller decides which errors
    /// are expected.
    pub fn psql_file(&self, file: &Path) -> Vec<String> {
        let out = self
            .psql_command()
            .args(["-d", "postgres", "-q", "-f"])
            .arg(file)
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql could not read {}",
            file.display()
        );
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains("ERROR"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command(
                "pg_ctl",
                &["-D", &data.to_string_lossy(), "-m", "immediate", "stop"],
            )
            .output();
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Stands in for ntfy/healthchecks and a Matrix homeserver, which cannot run here: records every
/// HTTP request on a loopback port and answers 200 `{}`.
pub struct HttpStandIn {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpStandIn {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(request) = read_request(&stream) {
                    seen.lock().expect("lock").push(request);
                }
                let mut stream = stream;
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                );
            }
        });
        Self { port, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Writes the URL of `path` into `file` (webhook URLs are secrets, read from files).
    pub fn url_file(&self, file: &Path, path: &str) -> PathBuf {
        std::fs::write(file, format!("{}\n", self.url(path))).expect("url file");
        file.to_owned()
    }

    pub fn received(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_owned());
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Writes `size` bytes of incompressible data.
pub fn random_file(path: &Path, size: usize) {
    let mut file = std::fs::File::create(path).expect("create");
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ size as u64;
    let mut block = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len());
        file.write_all(&block[..n]).expect("write");
        left -= n;
    }
}

/// Every regular file under `root` (relative path → content), skipping paths whose text starts
/// with one of `skip` (`db.sqlite3` skips its `-wal` and `-shm` too).
pub fn file_tree(root: &Path, skip: &[&str]) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).expect("inside").to_owned();
            if skip
                .iter()
                .any(|s| relative.to_string_lossy().starts_with(s))
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(relative, std::fs::read(&path).expect("read file"));
            }
        }
    }
    files
}

/// Asserts two file trees are equal and not empty, naming the files that differ instead of
/// printing their contents.
#[track_caller]
pub fn assert_same_files(
    found: &std::collections::BTreeMap<PathBuf, Vec<u8>>,
    wanted: &std::collections::BTreeMap<PathBuf, Vec<u8>>,
    what: &str,
) {
    let differing: Vec<&PathBuf> = found
        .keys()
        .chain(wanted.keys())
        .filter(|k| found.get(*k) != wanted.get(*k))
        .collect();
    assert!(
        differing.is_empty(),
        "{what}: these files differ: {differing:?}"
    );
    assert!(!wanted.is_empty(), "{what}: nothing to compare");
}

/// Writes an executable shell script.
pub fn script(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).expect("script");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    path.to_owned()
}

/// Stands in for a kopia that never returns from `snapshot create` (a hung disk, a stuck
/// lock): `sleep SECONDS` there, the real kopia for everything else. Pass it as HOMELAB_KOPIA.
pub fn hanging_kopia(lab: &Lab, sleep_seconds: u32) -> PathBuf {
    let kopia = which("kopia").expect("kopia");
    script(
        &lab.path("hanging-kopia"),
        &format!(
            "#!/bin/sh\nif [ \"$1 $2\" = \"snapshot create\" ]; then exec sleep {sleep_seconds}; fi\nexec {} \"$@\"\n",
            kopia.display()
        ),
    )
}

/// Pids of the processes whose command line contains every one of `needles`.
pub fn pids_with(needles: &[&str]) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            needles.iter().all(|n| cmdline.contains(n)).then_some(pid)
        })
        .collect()
}

/// A server that freezes instead of failing: it accepts every connection and never answers
/// (a hung API server, a wedged metrics endpoint, a heartbeat service that hangs).
pub struct FrozenServer {
    pub port: u16,
}

impl FrozenServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        Self { port }
    }
}

/// Serves `body` (changeable while running) as `text/plain` for every request: stands in for
/// an endpoint whose program cannot run here (cloudflared's metrics server).
pub struct TextServer {
    pub port: u16,
    pub body: Arc<Mutex<String>>,
}

impl TextServer {
    pub fn start(body: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let body = Arc::new(Mutex::new(body.to_owned()));
        let served = Arc::clone(&body);
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = read_request(&stream);
                let text = served.lock().expect("lock").clone();
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Self { port, body }
    }

    pub fn set(&self, body: &str) {
        *self.body.lock().expect("lock") = body.to_owned();
    }
}

/// Tests that mount filesystems need root: under CI its absence fails the test, elsewhere the
/// test is skipped loudly.
pub fn require_root(why: &str) -> bool {
    if is_root() {
        return true;
    }
    let message = format!("not root: {why}");
    if std::env::var_os("CI").is_some() {
        panic!("{message}");
    }
    eprintln!("\n!!! SKIPPED: {message}\n");
    false
}

/// A small tmpfs mounted at `path` (created), unmounted when dropped.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount -t tmpfs {}", path.display());
        Self {
            path: path.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

// Helpers of the backup tests, one copy for all of them.

pub fn status_json(lab: &Lab, config: &Path) -> (Option<i32>, serde_json::Value) {
    let out = lab.backup(config, &["status", "--json"]);
    let json = serde_json::from_slice(&out.stdout).expect("status JSON");
    (out.status.code(), json)
}

pub fn notify_table(lab: &Lab, hook: &HttpStandIn) -> String {
    format!(
        "[notify]\nwebhook-file = \"{}\"\n\n",
        hook.url_file(&lab.path("webhook"), "/ntfy/backups")
            .display()
    )
}

/// Notification texts the webhook stand-in received.
pub fn notifications(hook: &HttpStandIn) -> Vec<String> {
    hook.received().into_iter().map(|r| r.body).collect()
}

/// Waits for `child` at most `within`; kills it and fails the test if it is still running.
pub fn wait_bounded(mut child: std::process::Child, within: Duration) -> (Output, Duration) {
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return (child.wait_with_output().expect("output"), started.elapsed());
        }
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn spawn_run(lab: &Lab, config: &Path) -> Child {
    lab.homelab()
        .args(["backup", "run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("homelab starts")
}

/// Waits until some process's command line contains all of `needles`; returns its pid.
pub fn wait_for_process(needles: &[&str], within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(pid) = pids_with(needles).first() {
            return *pid;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no process with {needles:?} appeared within {within:?}");
}
