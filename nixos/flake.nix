# Reference copy of the host flake at /etc/nixos/flake.nix on azalab-0. The host pins this
# repository in its flake.lock; `sudo nix flake update homelab && sudo nixos-rebuild switch
# --flake /etc/nixos#$(hostname -s)` applies a new version.
{
  description = "azalab-0";

  inputs = {
    homelab.url = "github:s1dny/homelab";
    nixpkgs.follows = "homelab/nixpkgs";
  };

  outputs = { homelab, nixpkgs, ... }: {
    nixosConfigurations.azalab-0 = nixpkgs.lib.nixosSystem {
      system = "x86_64-linux";
      modules = [
        ./hardware-configuration.nix
        homelab.nixosModules.default
        "${homelab}/nixos/configuration.nix"
      ];
    };
  };
}
