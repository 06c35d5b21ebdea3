# /etc/nixos/flake.nix of a new homelab host: `nix flake init -t github:s1dny/homelab#host-bootstrap`
# in /etc/nixos, then follow README.md.
{
  description = "azalab-0";

  inputs = {
    homelab.url = "github:s1dny/homelab";
    nixpkgs.follows = "homelab/nixpkgs";
  };

  outputs = { homelab, nixpkgs, ... }: {
    # Name the configuration after the host (`hostname -s`); homelab.toml holds its facts.
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
