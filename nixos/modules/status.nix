# Operations: `homelab status` on the host (the whole system on one screen), a timer that runs
# `homelab status --notify` every five minutes (messages only on change), the daily summary, and
# the node exporter serving the backup metrics on loopback. Nothing here opens a port.
{ config, lib, pkgs, ... }:

let
  cfg = config.homelab;
  status = cfg.facts.status;
  settings = import ../lib/status-config.nix {
    inherit status;
    ageKeyFile = config.sops.age.keyFile;
    backupConfigFile = cfg.backup.configFile;
    timers = cfg.backup.timerNames ++ [ "homelab-status.timer" "homelab-status-summary.timer" ];
    notify = cfg.backup.notify;
  };
  configFile = (pkgs.formats.toml { }).generate "homelab-status.toml" settings;
  # `args`: what this run sends. Exit 1 means "something is not ok", which the run reported:
  # the unit succeeds, or it would itself show up as a failed unit in the next status.
  run = description: args: {
    inherit description;
    after = [ "network-online.target" ];
    wants = [ "network-online.target" ];
    path = [ pkgs.kubectl pkgs.systemd cfg.kopiaPackage ];
    environment = {
      HOMELAB_STATUS_CONFIG = "${configFile}";
    };
    serviceConfig = {
      Type = "oneshot";
      ExecStart = "${lib.getExe cfg.package} status ${args}";
      SuccessExitStatus = "1";
      TimeoutStartSec = "2min";
      StateDirectory = "homelab/status";
      RuntimeDirectory = "homelab-status";
      RuntimeDirectoryPreserve = "yes";
    };
  };
  node = lib.splitString ":" status.node-exporter;
in
{
  options.homelab.status.configFile = lib.mkOption {
    type = lib.types.path;
    readOnly = true;
    default = configFile;
    description = "The generated `homelab status` configuration, at /etc/homelab/status.toml (its default path).";
  };

  config = lib.mkIf cfg.enable {
    environment.etc."homelab/status.toml".source = configFile;
    systemd.services = {
      homelab-status = run "Check the homelab and message what changed" "--notify";
      homelab-status-summary = run "Send the homelab's daily summary" "--summary";
    };
    systemd.timers = {
      homelab-status = {
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = "*:0/5";
          AccuracySec = "30s";
        };
      };
      homelab-status-summary = {
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = status.summary-at;
          Persistent = true;
        };
      };
    };
    # The backup metrics `homelab backup` writes into textfile-dir, served on loopback only.
    services.prometheus.exporters.node = {
      enable = true;
      listenAddress = builtins.elemAt node 0;
      port = lib.toInt (builtins.elemAt node 1);
      openFirewall = false;
      extraFlags = [ "--collector.textfile.directory=${cfg.facts.backup.textfile-dir}" ];
    };
    systemd.tmpfiles.settings."10-homelab-metrics".${cfg.facts.backup.textfile-dir}.d = {
      user = "root";
      group = "root";
      mode = "0755";
    };
  };
}
