//! `homelab client setup`: configuration, password, connection, policies, launchd agent; each
//! step printed, each safe to repeat.

use std::io::BufRead as _;

use anyhow::Context as _;
use clap::Args;

use super::config::{ClientConfig, render_new};
use super::macos::KeychainItem;
use super::{AGENT_LABEL, ConfigArg, Tunnel, home, load, macos};
use crate::exit::ExitStatus;
use crate::files::write_atomically;
use crate::kopia::Kopia;
use crate::process::Cancel;

#[derive(Debug, Args)]
pub struct SetupCmd {
    #[command(flatten)]
    pub config: ConfigArg,
    /// SHA-256 of the Kopia server's certificate (needed when there is no configuration yet).
    #[arg(long, value_name = "HEX")]
    pub fingerprint: Option<String>,
    /// The Kopia server account (default: this user @ this computer's short name).
    #[arg(long, value_name = "USER@HOST")]
    pub user: Option<String>,
    /// The Kopia server's tcp hostname.
    #[arg(long, default_value = "kopia.aza.network")]
    pub hostname: String,
    /// Read the server account's password from standard input (first line).
    #[arg(long)]
    pub password_stdin: bool,
    /// Client ID of the Cloudflare Access service token that opens the tunnel unattended.
    #[arg(long, value_name = "ID", requires = "service_token_secret_stdin")]
    pub service_token_id: Option<String>,
    /// Read the service token's client secret from standard input (the line after the
    /// password when --password-stdin is given too).
    #[arg(long, requires = "service_token_id")]
    pub service_token_secret_stdin: bool,
}

/// The next line of standard input, without its line ending; empty is an error.
fn stdin_line(what: &str) -> anyhow::Result<Option<String>> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    let value = line.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        eprintln!("error: the {what} line of standard input is empty");
        return Ok(None);
    }
    Ok(Some(value))
}

pub fn run(cmd: &SetupCmd) -> anyhow::Result<ExitStatus> {
    let path = cmd.config.path()?;
    if path.exists() {
        println!(
            "kept the configuration {} (edit it, then run setup again)",
            path.display()
        );
    } else {
        let Some(fingerprint) = &cmd.fingerprint else {
            eprintln!(
                "error: no configuration at {} yet: give --fingerprint (the server prints SERVER \
                 CERT SHA256 on its first start)",
                path.display()
            );
            return Ok(ExitStatus::Error);
        };
        let user = match &cmd.user {
            Some(user) => user.clone(),
            None => default_user()?,
        };
        write_atomically(
            &path,
            render_new(&cmd.hostname, fingerprint, &user).as_bytes(),
        )?;
        println!("wrote the configuration {}", path.display());
    }
    let (_, config) = match load(&cmd.config) {
        Ok(loaded) => loaded,
        Err(status) => return Ok(status),
    };
    let home = home()?;
    let state_dir = config.state_dir(&home);
    let account = config.user.get_ref().as_str();
    let password = if cmd.password_stdin {
        let Some(password) = stdin_line("password (--password-stdin)")? else {
            return Ok(ExitStatus::Error);
        };
        let place =
            macos::store_secret(KeychainItem::ServerPassword, account, &password, &state_dir)?;
        println!("stored the server password in {place}");
        password
    } else {
        match macos::read_secret(KeychainItem::ServerPassword, account, &state_dir)? {
            Some(password) => {
                println!("kept the stored server password");
                password
            }
            None => {
                eprintln!(
                    "error: no server password is stored yet: run setup with --password-stdin"
                );
                return Ok(ExitStatus::Error);
            }
        }
    };
    if let Some(id) = &cmd.service_token_id {
        let Some(secret) = stdin_line("service token secret (--service-token-secret-stdin)")?
        else {
            return Ok(ExitStatus::Error);
        };
        macos::store_secret(KeychainItem::AccessId, account, id, &state_dir)?;
        let place = macos::store_secret(KeychainItem::AccessSecret, account, &secret, &state_dir)?;
        println!("stored the Cloudflare Access service token in {place}");
    }
    let cancel = Cancel::install()?.with_time_limit(config.time_limit);
    let tunnel = Tunnel::open(&config, &state_dir, &cancel)?;
    let kopia = Kopia::new(state_dir.join("kopia"), password, cancel.clone());
    let (user, host) = config.user_and_host();
    kopia.connect_server(&tunnel.url, config.server_fingerprint.get_ref(), user, host)?;
    println!(
        "connected to {} through the tunnel as {account}, certificate pinned",
        config.server_hostname.get_ref()
    );
    for source in config.source_paths(&home) {
        if !source.is_dir() {
            println!(
                "  {} does not exist: no policy set (create it, or remove it from sources)",
                source.display()
            );
            continue;
        }
        kopia.set_source_policy(&source, &config.exclude, &config.retention.policy())?;
        println!(
            "  policy of {}: excludes and retention set",
            source.display()
        );
    }
    drop(tunnel);
    let plist = home.join(format!("Library/LaunchAgents/{AGENT_LABEL}.plist"));
    write_agent(&plist, &config, &cmd.config.path()?, &state_dir)?;
    println!("wrote the launchd agent {}", plist.display());
    println!("{}", macos::load_agent(&plist)?);
    Ok(ExitStatus::Success)
}

fn default_user() -> anyhow::Result<String> {
    let user = std::env::var("USER").context("USER is not set: give --user USER@HOST")?;
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .context("cannot read the host name: give --user USER@HOST")?;
    let short = host.split('.').next().unwrap_or(&host).to_lowercase();
    Ok(format!("{user}@{short}"))
}

/// The launchd agent: `homelab client backup` daily at the scheduled time; `RunAtLoad` runs a
/// missed backup when the agent is loaded again (login, wake after a reboot).
fn write_agent(
    plist: &std::path::Path,
    config: &ClientConfig,
    config_file: &std::path::Path,
    state_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let (hour, minute) = config.schedule_time().context("schedule")?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut calendar = plist::Dictionary::new();
    calendar.insert("Hour".into(), plist::Value::Integer(u64::from(hour).into()));
    calendar.insert(
        "Minute".into(),
        plist::Value::Integer(u64::from(minute).into()),
    );
    let mut agent = plist::Dictionary::new();
    agent.insert("Label".into(), AGENT_LABEL.into());
    agent.insert(
        "ProgramArguments".into(),
        plist::Value::Array(
            [
                exe.to_string_lossy().into_owned(),
                "client".into(),
                "backup".into(),
                "--config".into(),
                config_file.to_string_lossy().into_owned(),
            ]
            .into_iter()
            .map(plist::Value::String)
            .collect(),
        ),
    );
    agent.insert(
        "StartCalendarInterval".into(),
        plist::Value::Dictionary(calendar),
    );
    agent.insert("RunAtLoad".into(), plist::Value::Boolean(true));
    agent.insert("ProcessType".into(), "Background".into());
    let log = state_dir.join("launchd.log").to_string_lossy().into_owned();
    agent.insert("StandardOutPath".into(), log.clone().into());
    agent.insert("StandardErrorPath".into(), log.into());
    let mut bytes = Vec::new();
    plist::to_writer_xml(&mut bytes, &plist::Value::Dictionary(agent))
        .context("cannot render the launchd agent")?;
    write_atomically(plist, &bytes)
}
