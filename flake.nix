{
  description = "azalab-0: the NixOS host, its k3s cluster's GitOps tree, and the homelab tool";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    sops-nix = {
      url = "github:Mic92/sops-nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    disko = {
      url = "github:nix-community/disko";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    # Host deploys from the laptop with automatic rollback (README, "Deploying").
    deploy-rs = {
      url = "github:serokell/deploy-rs";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, sops-nix, disko, deploy-rs }:
    let
      systems = [ "x86_64-linux" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      facts = builtins.fromTOML (builtins.readFile ./homelab.toml);
    in
    {
      # Consumed by the host flake at /etc/nixos/flake.nix (reference copy: nixos/flake.nix).
      nixosModules.default = { pkgs, lib, ... }: {
        imports = [
          sops-nix.nixosModules.sops
          disko.nixosModules.disko
          ./nixos/homelab-module.nix
        ];
        homelab.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.homelab;
        homelab.kopiaPackage = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.kopia;
        homelab.source = lib.mkDefault self.outPath;
        homelab.sourceRevision = lib.mkDefault (self.rev or self.dirtyRev or "unknown");
      };

      packages = forAllSystems (pkgs: rec {
        homelab = pkgs.callPackage ./nix/package.nix { };
        kopia = pkgs.callPackage ./nix/kopia.nix { };
        default = homelab;
      });

      # The host, as deploy-rs activates it (and `nix flake check` builds it). The host flake in
      # /etc/nixos (nixos/flake.nix) builds the same modules: the break-glass path.
      nixosConfigurations.azalab-0 = nixpkgs.lib.nixosSystem {
        system = "x86_64-linux";
        modules = [
          self.nixosModules.default
          ./nixos/configuration.nix
          ./nixos/hardware-configuration.nix
        ];
      };

      deploy.nodes.${facts.hostname} = import ./nixos/lib/deploy-node.nix {
        inherit facts;
        activate = deploy-rs.lib.x86_64-linux.activate.nixos;
        system = self.nixosConfigurations.azalab-0;
      };

      checks.x86_64-linux =
        let
          pkgs = nixpkgs.legacyPackages.x86_64-linux;
        in
        {
          homelab = self.packages.x86_64-linux.homelab;
          kopia = self.packages.x86_64-linux.kopia;
          toplevel = self.nixosConfigurations.azalab-0.config.system.build.toplevel;
          vm = pkgs.testers.runNixOSTest (import ./nixos/tests/vm.nix {
            module = self.nixosModules.default;
          });
        } // deploy-rs.lib.x86_64-linux.deployChecks self.deploy;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [ self.packages.${pkgs.stdenv.hostPlatform.system}.kopia ] ++ (with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            sops
            age
            kubectl
            kustomize
            kubeconform
            nixpkgs-fmt
          ]);
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);

      templates.host-bootstrap = {
        path = ./templates/host-bootstrap;
        description = "The /etc/nixos flake of a new homelab host";
      };
    };
}
