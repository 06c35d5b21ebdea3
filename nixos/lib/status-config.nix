# The `homelab status` configuration (crates/homelab/src/status/config.rs), built from the
# [status] table of homelab.toml, the backup configuration and the notification settings. Pure,
# so that the tests can evaluate it with nix-instantiate, without nixpkgs, and feed the result
# to the Rust loader.
{ status, ageKeyFile, backupConfigFile, timers, notify }:

{
  state-dir = status.state-dir;
  # A tmpfs: the alerts' memory survives a full disk (systemd RuntimeDirectory, preserved).
  runtime-dir = "/run/homelab-status";
  host = {
    age-key-file = ageKeyFile;
    inherit timers;
    disk = status.disk;
    system-profile = "/nix/var/nix/profiles/system";
    current-system = "/run/current-system";
    revision-file = "/etc/homelab/source-revision";
  };
  cluster.kubeconfig = "/etc/rancher/k3s/k3s.yaml";
  tunnel.metrics-url = "http://${status.tunnel-metrics}";
  backup.config = backupConfigFile;
  client = status.client;
  inherit notify;
}
