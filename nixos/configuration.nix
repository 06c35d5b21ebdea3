# The minimal wrapper around the homelab module for one machine: disks, boot loader, and the
# NixOS release whose defaults this host's state was created with.
{ lib, ... }:

{
  imports = [ ./disko.nix ];

  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = true;
  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
  system.stateVersion = "25.11";
}
