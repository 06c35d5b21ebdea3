# SSH: keys only, never root. The port is opened by firewall.nix from the facts file.
{ config, lib, ... }:

{
  config = lib.mkIf config.homelab.enable {
    services.openssh = {
      enable = true;
      openFirewall = false;
      settings = {
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        PermitRootLogin = "no";
      };
    };
  };
}
