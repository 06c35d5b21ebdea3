//! A real Kubernetes API server for the GitOps rehearsal: etcd and kube-apiserver on loopback
//! (built by .ci/run from Go modules), TLS from a throwaway CA, RBAC authorization, an admin token
//! for the test itself, and Flux's kustomize-controller run out of cluster under the identity
//! `flux install` gives it. Every process is killed when its owner is dropped.
//!
//! No kubelet, kube-controller-manager or scheduler runs: nothing here starts a pod, binds a
//! claim or rolls out a Deployment. Where a test needs the status those would write, a helper
//! named `*_stand_in` writes it, and says so.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::{Guard, free_port, report, stderr, stdout, wait_for_port};

/// Every kubectl call is bounded: a stalled API server must fail the test, not hang it (longer
/// than the longest `kubectl wait --timeout` used here).
const REQUEST_TIMEOUT: &str = "--request-timeout=90s";

/// The cluster's processes die with the test thread that started them, even when the test
/// process is killed (a CI timeout) and no Drop runs.
fn dies_with_the_test(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        })
    }
}

/// The programs the rehearsal runs; `require` them first.
pub const TOOLS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kustomize-controller",
    "flux",
    "kubectl",
    "openssl",
    "sops",
    "age-keygen",
    "tar",
];

/// etcd and kube-apiserver, with an admin kubeconfig for the test.
pub struct Kube {
    apiserver: Guard,
    _etcd: Guard,
    pub port: u16,
    pub kubeconfig: PathBuf,
    pub dir: TempDir,
}

fn run_ok(command: &mut Command, what: &str) -> Output {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    if !out.status.success() {
        report(what, &out);
        panic!("{what} failed");
    }
    out
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("random bytes");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn kubeconfig_text(port: u16, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: rehearsal\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: rehearsal\n  context:\n    cluster: rehearsal\n    user: user\ncurrent-context: rehearsal\n",
        ca = ca.display()
    )
}

impl Kube {
    /// Starts etcd and kube-apiserver and returns at once; `wait_ready` waits for `/readyz`.
    pub fn spawn() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("homelab-kube-")
            .tempdir()
            .expect("kube dir");
        let d = dir.path();
        let ssl = |args: &[&str], what: &str| {
            run_ok(Command::new("openssl").args(args).current_dir(d), what);
        };
        // EC keys: generated in milliseconds; the API server signs service-account tokens with
        // ES256 as well as RS256.
        ssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=homelab-rehearsal-ca",
            ],
            "openssl CA",
        );
        ssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "apiserver.key",
                "-out",
                "apiserver.csr",
                "-subj",
                "/CN=kube-apiserver",
            ],
            "openssl server request",
        );
        std::fs::write(
            d.join("san.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("san");
        ssl(
            &[
                "x509",
                "-req",
                "-in",
                "apiserver.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "apiserver.crt",
                "-days",
                "2",
                "-extfile",
                "san.cnf",
            ],
            "openssl server certificate",
        );
        ssl(
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-out",
                "sa.key",
            ],
            "openssl service-account key",
        );
        ssl(
            &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
            "openssl service-account public key",
        );
        // The test's own identity; the controller gets a service-account token instead.
        let token = random_hex(24);
        std::fs::write(
            d.join("tokens.csv"),
            format!("{token},homelab-rehearsal-admin,admin,\"system:masters\"\n"),
        )
        .expect("token file");

        let client = free_port();
        let peer = free_port();
        let etcd_log = std::fs::File::create(d.join("etcd.log")).expect("etcd log");
        let etcd = dies_with_the_test(
            Command::new("etcd")
                .args(["--name", "rehearsal", "--data-dir"])
                .arg(d.join("etcd"))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!(
                    "--initial-cluster=rehearsal=http://127.0.0.1:{peer}"
                ))
                // A throwaway cluster: durability costs time and buys nothing.
                .arg("--unsafe-no-fsync")
                .arg("--log-level=warn")
                .stdout(Stdio::null())
                .stderr(etcd_log),
        )
        .spawn()
        .expect("etcd starts");
        let etcd = Guard(etcd);
        wait_for_port(client, Duration::from_secs(20));

        let port = free_port();
        let log = std::fs::File::create(d.join("apiserver.log")).expect("apiserver log");
        let apiserver = dies_with_the_test(
            Command::new("kube-apiserver")
                .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
                .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
                .arg(format!("--secure-port={port}"))
                .arg(format!("--cert-dir={}", d.join("certs").display()))
                .arg(format!(
                    "--tls-cert-file={}",
                    d.join("apiserver.crt").display()
                ))
                .arg(format!(
                    "--tls-private-key-file={}",
                    d.join("apiserver.key").display()
                ))
                .arg(format!(
                    "--token-auth-file={}",
                    d.join("tokens.csv").display()
                ))
                .arg("--authorization-mode=Node,RBAC")
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg(format!(
                    "--service-account-key-file={}",
                    d.join("sa.pub").display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    d.join("sa.key").display()
                ))
                // k3s' default service range.
                .arg("--service-cluster-ip-range=10.43.0.0/16")
                // The `kubernetes` Service's endpoint would be 127.0.0.1, which Endpoints refuse.
                .arg("--endpoint-reconciler-type=none")
                .stdout(Stdio::null())
                .stderr(log),
        )
        .spawn()
        .expect("kube-apiserver starts");
        let kubeconfig = d.join("admin.kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_text(port, &d.join("ca.crt"), &token),
        )
        .expect("kubeconfig");
        Self {
            apiserver: Guard(apiserver),
            _etcd: etcd,
            port,
            kubeconfig,
            dir,
        }
    }

    pub fn start() -> Self {
        let kube = Self::spawn();
        kube.wait_ready();
        kube
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self.kubectl(&["get", "--raw=/readyz"]);
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                self.dump_logs();
                report("kubectl get --raw=/readyz", &out);
                panic!("kube-apiserver not ready after 90 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn dump_logs(&self) {
        for log in ["etcd.log", "apiserver.log", "kustomize-controller.log"] {
            if let Ok(text) = std::fs::read_to_string(self.dir.path().join(log)) {
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                eprintln!("--- last lines of {log}:");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }

    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.0.id()
    }

    pub fn kubectl_command(&self) -> Command {
        let mut command = Command::new("kubectl");
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg(REQUEST_TIMEOUT);
        command
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command()
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        if !out.status.success() {
            report(&format!("kubectl {}", args.join(" ")), &out);
            panic!("kubectl {} failed: {}", args.join(" "), stderr(&out));
        }
        stdout(&out)
    }

    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .kubectl_command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("kubectl stdin");
        child.wait_with_output().expect("kubectl output")
    }

    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&all)).expect("kubectl JSON")
    }

    /// Server-side applies a manifest; the output, to check a refusal.
    pub fn apply(&self, manifest: &str) -> Output {
        self.kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=rehearsal",
                "-f",
                "-",
            ],
            manifest,
        )
    }

    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self.kubectl_ok(&["create", "token", name, "-n", namespace, "--duration=2h"]);
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(
            &path,
            kubeconfig_text(self.port, &self.dir.path().join("ca.crt"), token.trim()),
        )
        .expect("kubeconfig");
        path
    }

    /// kustomize-controller, out of cluster, as the service account `flux install` made for it
    /// (its RBAC is what Flux's install gives it on the host).
    pub fn start_kustomize_controller(&self, concurrent: usize) -> Guard {
        let kubeconfig = self.service_account_kubeconfig("flux-system", "kustomize-controller");
        let log = std::fs::File::create(self.dir.path().join("kustomize-controller.log"))
            .expect("controller log");
        let health = free_port();
        let mut child = dies_with_the_test(
            Command::new("kustomize-controller")
                .arg(format!("--concurrent={concurrent}"))
                .arg(format!("--metrics-addr=127.0.0.1:{}", free_port()))
                .arg(format!("--health-addr=127.0.0.1:{health}"))
                .arg("--enable-leader-election=false")
                .arg("--watch-all-namespaces=true")
                // Dependencies are re-checked every 30 s by default; the test should not wait that.
                .arg("--requeue-dependency=2s")
                // controller-runtime takes the kubeconfig from the environment only.
                .env("KUBECONFIG", &kubeconfig)
                .env("RUNTIME_NAMESPACE", "flux-system")
                .stdout(Stdio::null())
                .stderr(log),
        )
        .spawn()
        .expect("kustomize-controller starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", health)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                self.dump_logs();
                panic!("kustomize-controller exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "kustomize-controller not serving health checks after 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Guard(child)
    }
}

/// A stand-in thread; stopped (and joined) on drop.
pub struct FileServer {
    pub port: u16,
    pub root: PathBuf,
}

impl FileServer {
    pub fn start(root: PathBuf) -> Self {
        std::fs::create_dir_all(&root).expect("file server root");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let served = root.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut line = String::new();
                let mut reader = BufReader::new(&stream);
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut header = String::new();
                    match reader.read_line(&mut header) {
                        Ok(n) if n > 2 => {}
                        _ => break,
                    }
                }
                let name = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/')
                    .to_owned();
                let file = (!name.contains('/') && !name.contains(".."))
                    .then(|| std::fs::read(served.join(&name)).ok())
                    .flatten();
                let _ = match file {
                    Some(body) => stream
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|()| stream.write_all(&body)),
                    None => stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    ),
                };
            }
        });
        Self { port, root }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

/// An artifact as source-controller would record it in a source's status.
pub struct Artifact {
    pub url: String,
    pub revision: String,
    pub digest: String,
    pub size: u64,
}

/// Packs `tree` (a repository root) as `name` under the server's root, the way source-controller
/// packs a Git checkout.
pub fn pack(server: &FileServer, tree: &Path, name: &str) -> Artifact {
    let file = server.root.join(name);
    run_ok(
        Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "-czf"])
            .arg(&file)
            .arg("-C")
            .arg(tree)
            .arg("."),
        "tar the artifact",
    );
    let bytes = std::fs::read(&file).expect("artifact");
    let hex: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Artifact {
        url: server.url(name),
        // Stands for the Git commit; only its uniqueness matters to Flux.
        revision: format!("main@sha1:{}", &hex[..40]),
        digest: format!("sha256:{hex}"),
        size: bytes.len() as u64,
    }
}

pub fn now_rfc3339() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    stdout(&out).trim().to_owned()
}

impl Kube {
    /// Records `artifact` in the GitRepository's status, as source-controller does after a
    /// fetch (through the status subresource, as the controller does).
    pub fn publish(&self, namespace: &str, name: &str, artifact: &Artifact) {
        let now = now_rfc3339();
        let generation =
            self.get_json(&["gitrepository", name, "-n", namespace])["metadata"]["generation"]
                .clone();
        let patch = serde_json::json!({"status": {
            "observedGeneration": generation,
            "artifact": {
                "path": format!("gitrepository/{namespace}/{name}/artifact.tar.gz"),
                "url": artifact.url, "revision": artifact.revision,
                "digest": artifact.digest, "size": artifact.size,
                "lastUpdateTime": now,
            },
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "Succeeded",
                "message": format!("stored artifact for revision '{}'", artifact.revision),
                "lastTransitionTime": now, "observedGeneration": generation,
            }],
        }});
        self.patch_status("gitrepository", namespace, name, &patch);
    }

    /// Writes an object's status (a merge patch through the status subresource), as the
    /// controller this test does not run would.
    pub fn patch_status(&self, kind: &str, namespace: &str, name: &str, patch: &serde_json::Value) {
        self.kubectl_ok(&[
            "patch",
            kind,
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
    }

    /// Polls `check` on a Flux Kustomization until it returns true; on timeout, fails with
    /// `what` and the Kustomizations' conditions.
    pub fn wait_for(&self, what: &str, within: Duration, mut check: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if check(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!(
            "{}",
            self.kubectl_ok(&[
                "get",
                "kustomizations",
                "-A",
                "-o",
                "custom-columns=NAME:.metadata.name,READY:.status.conditions[?(@.type==\"Ready\")].status,REASON:.status.conditions[?(@.type==\"Ready\")].reason,APPLIED:.status.lastAppliedRevision,ATTEMPTED:.status.lastAttemptedRevision,MESSAGE:.status.conditions[?(@.type==\"Ready\")].message",
            ])
        );
        self.dump_logs();
        panic!("timed out after {within:?} waiting for {what}");
    }

    /// A Flux Kustomization, or null while it does not exist yet.
    pub fn kustomization(&self, name: &str) -> serde_json::Value {
        let out = self.kubectl(&[
            "get",
            "kustomization",
            name,
            "-n",
            "flux-system",
            "-o",
            "json",
        ]);
        if !out.status.success() && stderr(&out).contains("NotFound") {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            report("kubectl get kustomization", &out);
            panic!("kustomization {name}: {e}")
        })
    }
}

/// The Ready condition of a Flux object: (status, reason, message).
pub fn ready(object: &serde_json::Value) -> Option<(String, String, String)> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("status"), s("reason"), s("message"))
        })
}

/// An age key pair made with age-keygen: (identity file text, recipient).
pub fn age_key(dir: &Path, name: &str) -> (String, String) {
    let file = dir.join(name);
    run_ok(
        Command::new("age-keygen").arg("-o").arg(&file),
        "age-keygen",
    );
    let text = std::fs::read_to_string(&file).expect("age key");
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("public key line")
        .to_owned();
    (text, recipient)
}

pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
