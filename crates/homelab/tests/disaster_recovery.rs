//! The disaster-recovery rehearsal: a host backs up and mirrors to the loopback S3 server
//! standing in for R2, writes its recovery kit, and is then destroyed — sources, repository,
//! state, age key, secrets. A new host with nothing but the kit (and the encrypted secrets file
//! from the Git repository) puts the key back, decrypts the secrets with sops, and restores every
//! source in place from the mirror. Real kopia, sops, age, SQLite, PostgreSQL and rclone.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use common::{
    Lab, Postgres, S3_KEY_ID, S3_SECRET, S3Server, assert_same_files, file_tree, require, stderr,
    stdout,
};
use rusqlite::Connection;

fn run_ok(command: &mut Command) -> String {
    let out = command.output().expect("program runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// sops outside this repository (whose `.sops.yaml` names the owner's key, not the test's).
fn sops() -> Command {
    let mut command = Command::new("sops");
    command
        .arg("--disable-version-check")
        .current_dir(std::env::temp_dir());
    command
}

/// What sops-nix does on a host: one secret out of the encrypted file, with the host's key.
fn sops_secret(file: &Path, key_file: &Path, path: &str) -> String {
    run_ok(
        sops()
            .env("SOPS_AGE_KEY_FILE", key_file)
            .args(["decrypt", "--extract", path])
            .arg(file),
    )
}

/// Writes the password file and the R2 credentials file a host's sops-nix would render.
fn render_secrets(secrets: &Path, key_file: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("secrets dir");
    let password = dir.join("kopia-password");
    std::fs::write(
        &password,
        sops_secret(secrets, key_file, "[\"kopia\"][\"repository-password\"]"),
    )
    .expect("password");
    let value = |name: &str| sops_secret(secrets, key_file, &format!("[\"r2\"][\"{name}\"]"));
    let credentials = dir.join("r2.env");
    std::fs::write(
        &credentials,
        format!(
            "R2_ENDPOINT={}\nR2_BUCKET={}\nAWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
            value("endpoint"),
            value("bucket"),
            value("access-key-id"),
            value("secret-access-key")
        ),
    )
    .expect("credentials");
    (password, credentials)
}

/// The backup configuration of a host whose sources live under `srv` and `etc` (the same paths
/// on both hosts, as /srv and /etc/nixos are), with this host's own state, secrets and database.
fn host_config(
    lab: &Lab,
    host: &str,
    password: &Path,
    credentials: &Path,
    key_file: &Path,
    pg_port: u16,
) -> PathBuf {
    let srv = lab.path("srv");
    let psql = format!(
        "[\"psql\", \"-h\", \"127.0.0.1\", \"-p\", \"{pg_port}\", \"-U\", \"postgres\", \"-d\", \"postgres\", \"-q\"]"
    );
    let text = format!(
        "state-dir = \"{state}\"\n\n\
         [repository]\npath = \"{srv}/kopia/repository\"\npassword-file = \"{password}\"\ncreate = true\n\n\
         [offsite]\ncredentials-file = \"{credentials}\"\n\n\
         [recovery-kit]\nage-key-file = \"{key}\"\nsource-repository = \"https://github.com/s1dny/homelab\"\n\n\
         [[source]]\nname = \"vaultwarden\"\npath = \"{srv}/vaultwarden\"\nexclude = [\"/icon_cache/\"]\n\
         [source.sqlite]\ndatabases = [\"db.sqlite3\"]\n\
         [source.restore]\nstop = []\nstart = []\n\n\
         [[source]]\nname = \"immich\"\npath = \"{srv}/immich\"\nexclude = [\"/postgres/\"]\n\
         [source.dump]\nfile = \"immich-postgres.sql\"\n\
         command = [\"pg_dumpall\", \"-h\", \"127.0.0.1\", \"-p\", \"{pg_port}\", \"-U\", \"postgres\", \"--clean\", \"--if-exists\"]\n\
         complete-marker = \"-- PostgreSQL database cluster dump complete\"\n\
         [source.restore]\nstop = []\nkeep = [\"postgres\"]\nload-dump = {psql}\n\n\
         [[source]]\nname = \"files\"\npath = \"{srv}/files\"\n\
         [source.restore]\nstop = []\n\n\
         [[source]]\nname = \"nixos\"\npath = \"{etc}\"\n\
         [source.restore]\nstop = []\n",
        state = lab.path(&format!("{host}/state")).display(),
        srv = srv.display(),
        etc = lab.path("etc/nixos").display(),
        password = password.display(),
        credentials = credentials.display(),
        key = key_file.display(),
    );
    let path = lab.path(&format!("{host}/backup.toml"));
    std::fs::write(&path, text).expect("config");
    path
}

/// The `sh` code blocks of the kit's rebuild steps (docs/disaster-recovery.md's "Rebuilding",
/// which the kit prints), in order; `sh-installer` and `sh-cluster` blocks are left out (the
/// installer and a running cluster are not here).
fn guide_blocks(kit: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in kit.lines() {
        let trimmed = line.trim_start();
        match (&mut current, trimmed) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(lines), "```") => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            (Some(lines), _) => lines.push(line.strip_prefix("   ").unwrap_or(line)),
            (None, _) => {}
        }
    }
    blocks
}

/// Runs one of the guide's blocks as the owner would in the root shell: the kit's export lines
/// first, then the block, with the host's paths pointed into the test's folders and `homelab`
/// being the binary under test.
fn run_guide_block(lab: &Lab, kit: &str, block: &str, config: &Path) -> String {
    let exports = kit_section(kit, "== FOR THE COMMANDS OF THE GUIDE");
    let bin = lab.path("host-b/bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let homelab = bin.join("homelab");
    if !homelab.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_homelab"), &homelab).expect("symlink");
    }
    let script = format!("{exports}\n{block}\n")
        .replace("/etc/homelab/backup.toml", &config.to_string_lossy())
        .replace(
            "/srv/kopia/repository",
            &lab.path("srv/kopia/repository").to_string_lossy(),
        )
        .replace("/root/", &format!("{}/", lab.path("host-b").display()));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .env("KOPIA_CHECK_FOR_UPDATES", "false")
        .env("KOPIA_LOG_DIR", lab.path("host-b/kopia-logs"))
        .env_remove("HOMELAB_BACKUP_CONFIG")
        .output()
        .expect("bash runs");
    common::report(&format!("the guide's block:\n{block}"), &out);
    assert!(out.status.success(), "the guide's block failed:\n{block}");
    stdout(&out)
}

/// The lines of the kit section whose heading starts with `heading`, up to the blank line.
fn kit_section(kit: &str, heading: &str) -> String {
    let mut lines = kit.lines().skip_while(|l| !l.starts_with(heading));
    assert!(lines.next().is_some(), "the kit has a {heading} section");
    lines
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_host_destroyed_is_rebuilt_from_the_r2_mirror_with_nothing_but_the_recovery_kit() {
    if !require(&[
        "kopia",
        "rclone",
        "sops",
        "age-keygen",
        "initdb",
        "pg_ctl",
        "pg_dumpall",
        "psql",
    ]) {
        return;
    }
    let lab = Lab::new();
    let s3 = S3Server::start(lab.path("r2"));
    std::fs::create_dir_all(s3.root.join("azalab-kopia")).expect("bucket");
    let mut phases: Vec<(&str, f64)> = Vec::new();
    let mut clock = Instant::now();
    let mut phase = |name: &'static str, clock: &mut Instant| {
        phases.push((name, clock.elapsed().as_secs_f64()));
        *clock = Instant::now();
    };

    // Host A: its age key, and the host secrets encrypted to it (as in the Git repository).
    std::fs::create_dir_all(lab.path("host-a")).expect("dir");
    let key_a = lab.path("host-a/key.txt");
    run_ok(Command::new("age-keygen").arg("-o").arg(&key_a));
    let recipient = run_ok(Command::new("age-keygen").arg("-y").arg(&key_a));
    // Flux's own key, a second identity, lives inside the host secrets (as on the host).
    let flux_key_file = lab.path("flux-key.txt");
    run_ok(Command::new("age-keygen").arg("-o").arg(&flux_key_file));
    let flux_key = std::fs::read_to_string(&flux_key_file).expect("flux key");
    std::fs::remove_file(&flux_key_file).expect("only in the secrets from now on");
    let plain = lab.path("host-a/plain.yaml");
    std::fs::write(
        &plain,
        format!(
            "kopia:\n    repository-password: rehearsal-{}\nr2:\n    endpoint: {}\n    bucket: azalab-kopia\n    \
             access-key-id: {S3_KEY_ID}\n    secret-access-key: {S3_SECRET}\nflux:\n    age-key: |\n{}",
            std::process::id(),
            s3.endpoint(),
            flux_key
                .lines()
                .map(|l| format!("        {l}\n"))
                .collect::<String>()
        ),
    )
    .expect("plain secrets");
    let secrets = lab.path("host-secrets.sops.yaml");
    let encrypted = run_ok(
        sops()
            .args([
                "encrypt",
                "--age",
                recipient.trim(),
                "--input-type",
                "yaml",
                "--output-type",
                "yaml",
            ])
            .arg(&plain),
    );
    std::fs::write(&secrets, encrypted).expect("encrypted secrets");
    std::fs::remove_file(&plain).expect("no plaintext left");
    let (password_a, credentials_a) = render_secrets(&secrets, &key_a, &lab.path("host-a/secrets"));

    // Sources shaped like the host's.
    let srv = lab.path("srv");
    let vault = srv.join("vaultwarden");
    std::fs::create_dir_all(vault.join("attachments/a1")).expect("dir");
    std::fs::write(vault.join("attachments/a1/doc.pdf"), b"%PDF attachment").expect("file");
    std::fs::write(vault.join("rsa_key.pem"), b"-----BEGIN PRIVATE KEY-----").expect("file");
    let db = Connection::open(vault.join("db.sqlite3")).expect("db");
    db.pragma_update(None, "journal_mode", "wal").expect("wal");
    db.execute_batch("CREATE TABLE ciphers (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        .expect("schema");
    drop(db);
    let files = srv.join("files");
    std::fs::create_dir_all(files.join("docs")).expect("dir");
    common::random_file(&files.join("docs/big.bin"), 5 << 20);
    std::fs::write(files.join("docs/note.txt"), "plain file").expect("file");
    let immich = srv.join("immich");
    std::fs::create_dir_all(immich.join("library/upload")).expect("dir");
    common::random_file(&immich.join("library/upload/IMG_0001.jpg"), 3 << 20);
    let nixos = lab.path("etc/nixos");
    std::fs::create_dir_all(&nixos).expect("dir");
    std::fs::write(
        nixos.join("flake.nix"),
        "{ inputs.homelab.url = \"github:s1dny/homelab\"; }",
    )
    .expect("file");
    std::fs::write(nixos.join("flake.lock"), "{\"nodes\":{}}").expect("file");
    let pg_a = Postgres::start();
    std::fs::create_dir_all(immich.join("postgres")).expect("dir");
    pg_a.psql("postgres", "CREATE DATABASE immich");
    pg_a.psql(
        "immich",
        "CREATE TABLE assets (id serial PRIMARY KEY, path text NOT NULL);
         INSERT INTO assets (path) SELECT 'upload/' || g || '.jpg' FROM generate_series(1, 2500) g;",
    );
    let config_a = host_config(
        &lab,
        "host-a",
        &password_a,
        &credentials_a,
        &key_a,
        pg_a.port,
    );
    phase("host A set up", &mut clock);

    // Back up under a live writer, mirror, write the kit.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = Arc::clone(&writing);
        let db_path = vault.join("db.sqlite3");
        std::thread::spawn(move || {
            let db = Connection::open(db_path).expect("writer");
            db.busy_timeout(std::time::Duration::from_secs(5))
                .expect("busy timeout");
            let mut written = 0u64;
            while writing.load(Ordering::SeqCst) {
                db.execute("INSERT INTO ciphers (data) VALUES (randomblob(512))", [])
                    .expect("write");
                written += 1;
            }
            written
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = lab.backup(&config_a, &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    writing.store(false, Ordering::SeqCst);
    let written = writer.join().expect("writer thread");
    assert!(written > 0, "the writer wrote during the backup");
    assert_eq!(
        lab.backup(&config_a, &["sync", "--init"]).status.code(),
        Some(0)
    );
    let kit_file = lab.path("host-a/recovery-kit.txt");
    let out = lab.backup(
        &config_a,
        &["recovery-kit", "--output", &kit_file.to_string_lossy()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    phase("host A backed up and mirrored", &mut clock);

    // What was captured: the drill's copy tells the row count at capture time.
    let captured = lab.path("captured");
    let out = lab.backup(&config_a, &["drill", "--keep", &captured.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0));
    let rows_at_capture: i64 =
        Connection::open(captured.join("vaultwarden/.homelab-backup/db.sqlite3"))
            .and_then(|c| c.query_row("SELECT count(*) FROM ciphers", [], |r| r.get(0)))
            .expect("rows at capture");
    assert!(rows_at_capture > 0);
    let originals = [
        (
            "vaultwarden",
            file_tree(&vault, &[".homelab-backup", "db.sqlite3"]),
        ),
        ("files", file_tree(&files, &[".homelab-backup"])),
        (
            "immich",
            file_tree(&immich, &[".homelab-backup", "postgres"]),
        ),
        ("nixos", file_tree(&nixos, &[".homelab-backup"])),
    ];
    let kit = std::fs::read_to_string(&kit_file).expect("kit");
    drop(pg_a);

    // The disk dies: everything on host A is gone. What is left: the kit, the mirror, and the
    // encrypted secrets file in the Git repository.
    for gone in [srv.clone(), lab.path("etc"), lab.path("host-a"), captured] {
        std::fs::remove_dir_all(&gone).expect("destroy");
    }
    phase("host A destroyed", &mut clock);

    // Host B: the key from the kit, the secrets from sops, a fresh database server.
    std::fs::create_dir_all(lab.path("host-b")).expect("dir");
    let key_b = lab.path("host-b/key.txt");
    std::fs::write(&key_b, kit_section(&kit, "== AGE KEY") + "\n").expect("key from the kit");
    let (password_b, credentials_b) = render_secrets(&secrets, &key_b, &lab.path("host-b/secrets"));
    // The kit's (host's) key also gives back Flux's own key, which the kit does not carry.
    assert_eq!(
        sops_secret(&secrets, &key_b, "[\"flux\"][\"age-key\"]"),
        flux_key,
        "Flux's key comes back from the host secrets"
    );
    assert_eq!(
        std::fs::read_to_string(&password_b).expect("password"),
        kit_section(&kit, "== KOPIA REPOSITORY PASSWORD"),
        "the kit's password is the one sops decrypts"
    );
    let pg_b = Postgres::start();
    let config_b = host_config(
        &lab,
        "host-b",
        &password_b,
        &credentials_b,
        &key_b,
        pg_b.port,
    );
    phase("host B set up from the kit", &mut clock);

    // From here on, the guide's own commands, as the kit prints them.
    let blocks = guide_blocks(&kit);
    assert_eq!(
        blocks.len(),
        3,
        "the restores, the local repository and the kit check: {blocks:#?}"
    );
    let exports = kit_section(&kit, "== FOR THE COMMANDS OF THE GUIDE");
    assert!(
        exports.contains(&format!(
            "export R2_ENDPOINT_HOST='{}'",
            s3.endpoint().replace("http://", "")
        )),
        "the endpoint in the form kopia's --endpoint takes: {exports}"
    );
    let said = run_guide_block(&lab, &kit, &blocks[0], &config_b);
    for (name, _) in &originals {
        assert!(
            said.contains(&format!("of {name} in place")),
            "{name} restored: {said}"
        );
    }
    phase("every source restored from the mirror", &mut clock);

    for (name, original) in &originals {
        let path = match *name {
            "nixos" => nixos.clone(),
            other => srv.join(other),
        };
        assert_same_files(
            &file_tree(&path, &[".homelab-backup", "db.sqlite3", "postgres"]),
            original,
            name,
        );
    }
    // Before anything opens it (opening a WAL database creates its -wal).
    assert!(!vault.join("db.sqlite3-wal").exists());
    let restored = Connection::open(vault.join("db.sqlite3")).expect("restored db");
    let check: String = restored
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    let rows: i64 = restored
        .query_row("SELECT count(*) FROM ciphers", [], |r| r.get(0))
        .expect("rows");
    assert_eq!(rows, rows_at_capture, "the database as it was at capture");
    assert_eq!(pg_b.psql("immich", "SELECT count(*) FROM assets"), "2500");
    assert_eq!(
        pg_b.psql("immich", "SELECT path FROM assets WHERE id = 2500"),
        "upload/2500.jpg"
    );
    phase("everything checked", &mut clock);

    // The local repository comes back as a copy of the mirror (same repository, same ID);
    // then backups and syncs carry on, and the kit is recorded as the one this host runs with.
    let said = run_guide_block(&lab, &kit, &blocks[1], &config_b);
    assert!(said.contains("synced to s3://azalab-kopia"), "{said}");
    let said = run_guide_block(&lab, &kit, &blocks[2], &config_b);
    assert!(said.contains("rebuilt from; recorded"), "{said}");
    let out = lab.backup(&config_b, &["recovery-kit", "--check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("matches the current keys"));
    phase(
        "local repository recreated from the mirror; backups carry on",
        &mut clock,
    );

    eprintln!("\ndisaster-recovery rehearsal, seconds per phase:");
    for (name, seconds) in &phases {
        eprintln!("  {seconds:>7.2}  {name}");
    }
}

#[test]
fn the_recovery_kit_is_private_and_check_says_when_a_new_one_is_due() {
    if !require(&["kopia"]) {
        return;
    }
    let lab = Lab::new();
    let data = lab.source_dir("files");
    std::fs::write(data.join("a"), "a").expect("file");
    let key = lab.path("key.txt");
    std::fs::write(
        &key,
        "# public key: age1test\nAGE-SECRET-KEY-1TESTONLYNOTAREALKEY\n",
    )
    .expect("key");
    let config = lab.write_config(
        "backup.toml",
        &format!(
            "[recovery-kit]\nage-key-file = \"{}\"\nsource-repository = \"https://github.com/s1dny/homelab\"\n\n\
             [[source]]\nname = \"files\"\npath = \"{}\"\n",
            key.display(),
            data.display()
        ),
    );
    assert_eq!(lab.backup(&config, &["run"]).status.code(), Some(0));
    let out = lab.backup(&config, &["recovery-kit", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(common::stdout(&out).contains("no recovery kit was ever written"));

    let kit = lab.path("kit.txt");
    let out = lab.backup(
        &config,
        &["recovery-kit", "--output", &kit.to_string_lossy()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&kit).expect("kit").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the kit is readable by its owner only");
    let text = std::fs::read_to_string(&kit).expect("kit");
    for part in [
        "AGE-SECRET-KEY-1TESTONLYNOTAREALKEY",
        "correct horse battery staple",
        "https://github.com/s1dny/homelab",
    ] {
        assert!(text.contains(part), "the kit holds {part}");
    }
    let unique_id = kit_section(&text, "== KOPIA REPOSITORY UNIQUE ID");
    assert_eq!(
        unique_id.len(),
        64,
        "the repository's unique ID: {unique_id}"
    );
    assert_eq!(
        lab.backup(&config, &["recovery-kit", "--check"])
            .status
            .code(),
        Some(0)
    );

    // An existing file is never overwritten; a changed password makes the kit out of date.
    let out = lab.backup(
        &config,
        &["recovery-kit", "--output", &kit.to_string_lossy()],
    );
    assert_ne!(out.status.code(), Some(0));
    std::fs::write(lab.path("password"), "a new password\n").expect("password");
    let out = lab.backup(&config, &["recovery-kit", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stdout(&out).contains("a key changed"),
        "{}",
        common::stdout(&out)
    );
}
