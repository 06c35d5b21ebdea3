# Host backups: `homelab backup run` daily, `homelab backup sync` to R2 every 6 hours, a weekly
# drill and weekly verification of the repository and of the mirror, from timers that catch up
# after downtime, each unit bounded by its job's time limit. The configuration is generated from
# homelab.toml and the credentials come from sops-nix.
{ config, lib, pkgs, ... }:

let
  cfg = config.homelab;
  backup = cfg.facts.backup;
  secret = name: config.sops.secrets.${name}.path;
  settings = import ../lib/backup-config.nix {
    backup = backup // { source = cfg.backup.sources; };
    sourceRepository = cfg.facts.source-repository;
    secrets = {
      repositoryPassword = secret "kopia/repository-password";
      r2Credentials = config.sops.templates."r2-credentials.env".path;
      webhookUrl = secret "notify/webhook-url";
      matrixToken = secret "notify/matrix-token";
      heartbeatUrl = secret "notify/heartbeat-url";
    };
  };
  configFile = (pkgs.formats.toml { }).generate "homelab-backup.toml" settings;
  # `limit` is a job's time limit from homelab.toml (humantime syntax, which systemd's time spans
  # accept for the units used there); the unit allows 15 minutes more for the job's cleanup.
  job = description: command: limit: {
    inherit description;
    after = [ "network-online.target" "k3s.service" ];
    wants = [ "network-online.target" ];
    # kopia for the repository, kubectl for the dump and quiesce commands.
    path = [ cfg.kopiaPackage pkgs.kubectl ];
    environment = {
      HOMELAB_BACKUP_CONFIG = "${configFile}";
    };
    serviceConfig = {
      Type = "oneshot";
      ExecStart = "${lib.getExe cfg.package} backup ${command}";
      TimeoutStartSec = "${limit} 15min";
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
  limits = backup.time-limit;
  timers = {
    homelab-backup = timer cfg.backup.runAt;
    homelab-backup-sync = timer cfg.backup.syncAt;
    homelab-backup-drill = timer cfg.backup.drillAt;
    homelab-backup-verify = timer cfg.backup.verifyAt;
    homelab-backup-verify-offsite = timer cfg.backup.verifyOffsiteAt;
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
    drillAt = lib.mkOption {
      type = lib.types.str;
      default = backup.drill-at;
      description = "systemd calendar of `homelab backup drill` (restore and check every source).";
    };
    verifyAt = lib.mkOption {
      type = lib.types.str;
      default = backup.verify-at;
      description = "systemd calendar of `homelab backup verify` (the local repository).";
    };
    verifyOffsiteAt = lib.mkOption {
      type = lib.types.str;
      default = backup.verify-offsite-at;
      description = "systemd calendar of `homelab backup verify --offsite` (the R2 mirror).";
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
    notify = lib.mkOption {
      type = lib.types.attrs;
      readOnly = true;
      default = settings.notify;
      description = "Where failure messages and heartbeat pings go (`homelab status` sends there too).";
    };
    timerNames = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      readOnly = true;
      default = map (name: "${name}.timer") (lib.attrNames timers);
      description = "The backup timers (`homelab status` reports one that is not active).";
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
      "notify/heartbeat-url" = { };
    };
    sops.templates."r2-credentials.env".content = ''
      R2_ENDPOINT=${config.sops.placeholder."r2/endpoint"}
      R2_BUCKET=${config.sops.placeholder."r2/bucket"}
      AWS_ACCESS_KEY_ID=${config.sops.placeholder."r2/access-key-id"}
      AWS_SECRET_ACCESS_KEY=${config.sops.placeholder."r2/secret-access-key"}
    '';
    environment.systemPackages = [ cfg.package cfg.kopiaPackage ];
    # For the jobs run by hand: `sudo homelab backup status --config /etc/homelab/backup.toml`.
    environment.etc."homelab/backup.toml".source = configFile;
    # Every switch says when the off-host recovery kit is missing or older than the keys it
    # must hold (docs/disaster-recovery.md). A reminder only: it never fails the activation.
    system.activationScripts.homelabRecoveryKit = {
      # sops-nix decrypts in the `setupSecrets` activation script unless it runs as a systemd
      # unit (`sops.useSystemdActivation`), when that script does not exist.
      deps = lib.optional (!config.sops.useSystemdActivation) "setupSecrets";
      text = ''
        ${lib.getExe cfg.package} backup recovery-kit --check --config ${configFile} || true
      '';
    };
    systemd.services = {
      homelab-backup = job "Consistent Kopia snapshots of the homelab's data" "run" limits.run;
      homelab-backup-sync = job "Mirror the Kopia repository to Cloudflare R2" "sync" limits.sync;
      homelab-backup-drill = job "Restore every source's last good snapshot and check it" "drill" limits.drill;
      homelab-backup-verify = job "Verify the local Kopia repository" "verify" limits.verify;
      homelab-backup-verify-offsite = job "Verify the R2 mirror, read-only, from the bucket" "verify --offsite" limits.verify;
    };
    systemd.timers = timers;
  };
}
