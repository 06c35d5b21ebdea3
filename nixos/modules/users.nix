# The owner's account: SSH keys only, fish, Docker.
{ config, lib, pkgs, ... }:

let
  cfg = config.homelab;
  user = cfg.facts.user;
in
{
  options.homelab.user = {
    name = lib.mkOption {
      type = lib.types.str;
      default = user.name;
      description = "The owner's login.";
    };
    groups = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = user.groups;
      description = "Supplementary groups of the owner.";
    };
    sshKeys = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = user.ssh-keys;
      description = "Public keys allowed to log in as the owner.";
    };
  };

  config = lib.mkIf cfg.enable {
    users.users.${cfg.user.name} = {
      isNormalUser = true;
      extraGroups = cfg.user.groups;
      shell = pkgs.fish;
      openssh.authorizedKeys.keys = cfg.user.sshKeys;
    };
    # A fish login shell needs fish set up system-wide.
    programs.fish.enable = true;
    virtualisation.docker.enable = true;
    # No passwords exist to type: keys are the only way in.
    security.sudo.wheelNeedsPassword = lib.mkDefault false;
  };
}
