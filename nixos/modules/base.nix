# Identity and the basics every homelab host shares.
{ config, lib, ... }:

let
  cfg = config.homelab;
in
{
  config = lib.mkIf cfg.enable {
    networking.hostName = cfg.hostName;
    networking.domain = cfg.domain;
    networking.networkmanager.enable = lib.mkDefault true;
    # The container runtimes own these interfaces.
    networking.networkmanager.unmanaged = [
      "interface-name:cni0"
      "interface-name:flannel*"
      "interface-name:veth*"
      "interface-name:docker0"
    ];
    time.timeZone = cfg.timeZone;
    nix.settings.experimental-features = [ "nix-command" "flakes" ];
  };
}
