# Everything azalab-0 is, apart from what Flux applies: options under `homelab.*` whose defaults
# are this host's facts (homelab.toml), one concern per file in ./modules.
{ lib, ... }:

let
  facts = builtins.fromTOML (builtins.readFile ../homelab.toml);
in
{
  imports = [
    ./modules/base.nix
    ./modules/users.nix
    ./modules/ssh.nix
    ./modules/firewall.nix
    ./modules/k3s.nix
    ./modules/secrets.nix
    ./modules/storage.nix
    ./modules/source.nix
    ./modules/tunnel.nix
    ./modules/backup.nix
    ./modules/flux.nix
    ./modules/status.nix
  ];

  options.homelab = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Make this machine the homelab host.";
    };
    facts = lib.mkOption {
      type = lib.types.attrs;
      default = facts;
      readOnly = true;
      description = "homelab.toml, parsed: the facts the options below default to.";
    };
    hostName = lib.mkOption {
      type = lib.types.str;
      default = facts.hostname;
      description = "Host name; also selects flux/clusters/<hostName>.";
    };
    domain = lib.mkOption {
      type = lib.types.str;
      default = facts.domain;
      description = "Domain of every public hostname.";
    };
    timeZone = lib.mkOption {
      type = lib.types.str;
      default = facts.timezone;
      description = "Time zone; backup calendars are read in it.";
    };
    package = lib.mkOption {
      type = lib.types.package;
      description = "The homelab command (set by this flake's nixosModules.default).";
    };
    kopiaPackage = lib.mkOption {
      type = lib.types.package;
      description = "kopia for the backup jobs: the release the Kopia server image and the tests use (nix/kopia.nix).";
    };
    source = lib.mkOption {
      type = lib.types.path;
      description = "This repository's source in the store, shown at /etc/homelab/source.";
    };
    sourceRevision = lib.mkOption {
      type = lib.types.str;
      default = "unknown";
      description = "The Git revision of this repository the host is built from (`homelab status` shows it).";
    };
  };
}
