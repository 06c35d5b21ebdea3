//! What only macOS has: the Keychain, launchd, the battery, notifications. Each is reached
//! through macOS's own command-line tools, so this builds and its fallbacks run everywhere;
//! elsewhere (the tests on Linux) the password lives in a 0600 file and the agent is written but
//! not loaded.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

/// What the login Keychain keeps for the client, each under the Kopia account's name.
#[derive(Debug, Clone, Copy)]
pub enum KeychainItem {
    /// The Kopia server account's password.
    ServerPassword,
    /// The Cloudflare Access service token that opens the tunnel without a browser.
    AccessId,
    AccessSecret,
}

impl KeychainItem {
    fn service(self) -> &'static str {
        match self {
            KeychainItem::ServerPassword => "homelab-kopia-server",
            KeychainItem::AccessId => "homelab-cloudflare-access-id",
            KeychainItem::AccessSecret => "homelab-cloudflare-access-secret",
        }
    }

    /// Where it lives where there is no Keychain (the tests on Linux): a 0600 file.
    pub fn fallback_file(self, state_dir: &Path) -> std::path::PathBuf {
        state_dir.join(match self {
            KeychainItem::ServerPassword => "server-password",
            KeychainItem::AccessId => "access-client-id",
            KeychainItem::AccessSecret => "access-client-secret",
        })
    }
}

fn is_macos() -> bool {
    cfg!(target_os = "macos")
}

fn output(program: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))
}

/// Stores a secret for `account`; returns where.
pub fn store_secret(
    item: KeychainItem,
    account: &str,
    value: &str,
    state_dir: &Path,
) -> anyhow::Result<String> {
    let fallback = &item.fallback_file(state_dir);
    if is_macos() {
        // `security` takes the password as an argument: briefly visible to this user's own
        // processes, never written to disk outside the Keychain.
        let out = output(
            "security",
            &[
                "add-generic-password",
                "-U",
                "-s",
                item.service(),
                "-a",
                account,
                "-w",
                value,
            ],
        )?;
        if !out.status.success() {
            bail!(
                "the Keychain refused the password: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        return Ok(format!("the login Keychain (service {})", item.service()));
    }
    if let Some(dir) = fallback.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(fallback);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(fallback)
        .with_context(|| format!("cannot create {}", fallback.display()))?;
    file.write_all(value.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", fallback.display()))?;
    Ok(format!("{} (mode 0600)", fallback.display()))
}

/// The stored secret, if any.
pub fn read_secret(
    item: KeychainItem,
    account: &str,
    state_dir: &Path,
) -> anyhow::Result<Option<String>> {
    let fallback = &item.fallback_file(state_dir);
    if is_macos() {
        let out = output(
            "security",
            &[
                "find-generic-password",
                "-s",
                item.service(),
                "-a",
                account,
                "-w",
            ],
        )?;
        return Ok(out.status.success().then(|| {
            String::from_utf8_lossy(&out.stdout)
                .trim_end_matches('\n')
                .to_owned()
        }));
    }
    match std::fs::read_to_string(fallback) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", fallback.display())),
    }
}

fn gui_domain() -> String {
    format!("gui/{}", nix::unistd::getuid())
}

/// (Re)loads the launchd agent from `plist`; says what it did.
pub fn load_agent(plist: &Path) -> anyhow::Result<String> {
    if !is_macos() {
        return Ok("not macOS: the agent file is written, launchd is not asked to load it".into());
    }
    let plist = plist.to_string_lossy();
    // Unloading an agent that is not loaded fails; that is fine.
    let _ = output("launchctl", &["bootout", &gui_domain(), &plist]);
    let out = output("launchctl", &["bootstrap", &gui_domain(), &plist])?;
    if !out.status.success() {
        bail!(
            "launchctl bootstrap {plist} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(format!("loaded into launchd ({})", gui_domain()))
}

/// Whether launchd has the agent loaded; `None` where there is no launchd.
pub fn agent_loaded(label: &str) -> Option<bool> {
    if !is_macos() {
        return None;
    }
    let target = format!("{}/{label}", gui_domain());
    output("launchctl", &["print", &target])
        .ok()
        .map(|out| out.status.success())
}

/// The charge in percent when running on battery; `None` on power or where unknown.
pub fn battery_percent() -> Option<u8> {
    if !is_macos() {
        return None;
    }
    let out = output("pmset", &["-g", "batt"]).ok()?;
    parse_pmset(&String::from_utf8_lossy(&out.stdout))
}

/// `pmset -g batt`: "Now drawing from 'Battery Power'" and a line with "85%;".
fn parse_pmset(text: &str) -> Option<u8> {
    if !text.contains("'Battery Power'") {
        return None;
    }
    text.split_whitespace()
        .find_map(|word| word.strip_suffix("%;"))
        .and_then(|n| n.parse().ok())
}

/// A notification in the macOS notification centre; elsewhere only the log line.
pub fn notify(title: &str, text: &str) {
    if !is_macos() {
        return;
    }
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let script = format!(
        "display notification \"{}\" with title \"{}\"",
        quote(text),
        quote(title)
    );
    if let Err(err) = output("osascript", &["-e", &script]) {
        tracing::warn!("could not show a notification: {err:#}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pmset_output_is_read() {
        let on_battery = "Now drawing from 'Battery Power'\n -InternalBattery-0 (id=1234)\t85%; discharging; 4:12 remaining present: true\n";
        assert_eq!(super::parse_pmset(on_battery), Some(85));
        let on_power = "Now drawing from 'AC Power'\n -InternalBattery-0 (id=1234)\t100%; charged; 0:00 remaining\n";
        assert_eq!(super::parse_pmset(on_power), None);
    }
}
