# Host backups: `homelab backup run` daily and `homelab backup sync` to R2 every 6 hours, from
# timers that catch up after downtime, with a configuration generated from homelab.toml and the
# credentials from sops-nix.
{ config, lib, pkgs, ... }:

let
  cfg = config.homelab;
  backup = cfg.facts.backup;
  secret = name: config.sops.secrets.${name}.path;
  settings = import ../lib/backup-config.nix {
    backup = backup // { source = cfg.backup.sources; };
    secrets = {
      repositoryPassword = secret "kopia/repository-password";
      r2Credentials = config.sops.templates."r2-credentials.env".path;
      webhookUrl = secret "notify/webhook-url";
      matrixToken = secret "notify/matrix-token";
    };
  };
  configFile = (pkgs.formats.toml { }).generate "homelab-backup.toml" settings;
  job = description: command: {
    inherit description;
    after = [ "network-online.target" "k3s.service" ];
    wants = [ "network-online.target" ];
    # kopia for the repository, kubectl for the dump and quiesce commands.
    path = [ pkgs.kopia pkgs.kubectl ];
    environment = {
      HOMELAB_BACKUP_CONFIG = "${configFile}";
    };
    serviceConfig = {
      Type = "oneshot";
      ExecStart = "${lib.getExe cfg.package} backup ${command}";
      # Room for a stopped app to be started again after SIGTERM (see docs/backup.md).
      TimeoutStopSec = "15min";
      Nice = 10;
      IOSchedulingClass = "idle";
    };
  };
  timer = calendar: {
    wantedBy = [ "timers.target" ];
    timerConfig = {
      OnCalendar = calendar;
      Persistent = true;
      RandomizedDelaySec = cfg.backup.randomizedDelay;
    };
  };
in
{
  options.homelab.backup = {
    runAt = lib.mkOption {
      type = lib.types.str;
      default = backup.run-at;
      description = "systemd calendar of `homelab backup run`.";
    };
    syncAt = lib.mkOption {
      type = lib.types.str;
      default = backup.sync-at;
      description = "systemd calendar of `homelab backup sync` (the R2 mirror).";
    };
    randomizedDelay = lib.mkOption {
      type = lib.types.str;
      default = backup.randomized-delay;
      description = "Random delay added to both timers.";
    };
    sources = lib.mkOption {
      type = lib.types.listOf lib.types.attrs;
      default = backup.source;
      description = "Backup sources, in the shape of the [[source]] tables of the backup config.";
    };
    configFile = lib.mkOption {
      type = lib.types.path;
      readOnly = true;
      default = configFile;
      description = "The generated configuration (`homelab backup check-config` reads it).";
    };
  };

  config = lib.mkIf cfg.enable {
    sops.secrets = {
      "kopia/repository-password" = { };
      "r2/endpoint" = { };
      "r2/bucket" = { };
      "r2/access-key-id" = { };
      "r2/secret-access-key" = { };
      "notify/webhook-url" = { };
      "notify/matrix-token" = { };
    };
    sops.templates."r2-credentials.env".content = ''
      R2_ENDPOINT=${config.sops.placeholder."r2/endpoint"}
      R2_BUCKET=${config.sops.placeholder."r2/bucket"}
      AWS_ACCESS_KEY_ID=${config.sops.placeholder."r2/access-key-id"}
      AWS_SECRET_ACCESS_KEY=${config.sops.placeholder."r2/secret-access-key"}
    '';
    environment.systemPackages = [ cfg.package pkgs.kopia ];
    systemd.services.homelab-backup = job "Consistent Kopia snapshots of the homelab's data" "run";
    systemd.services.homelab-backup-sync = job "Mirror the Kopia repository to Cloudflare R2" "sync";
    systemd.timers.homelab-backup = timer cfg.backup.runAt;
    systemd.timers.homelab-backup-sync = timer cfg.backup.syncAt;
  };
}
