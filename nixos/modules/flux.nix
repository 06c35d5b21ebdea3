# Flux on the local k3s, pointed at flux/clusters/<hostName> of this repository. Runs at every
# boot (idempotent): Flux at homelab.toml's flux-version (the release CI rehearses), the sops-age Secret made from the host's
# age key at run time (never through the store), then the GitRepository and root Kustomization.
{ config, lib, pkgs, ... }:

let
  cfg = config.homelab;
in
{
  config = lib.mkIf cfg.enable {
    # The disaster guide's `flux suspend`/`flux resume`, and a look at Flux by hand.
    environment.systemPackages = [ pkgs.fluxcd ];
    systemd.services.homelab-flux-bootstrap = {
      description = "Install Flux and point it at the homelab repository";
      wantedBy = [ "multi-user.target" ];
      after = [ "k3s.service" "network-online.target" ];
      wants = [ "k3s.service" "network-online.target" ];
      path = [ pkgs.kubectl pkgs.fluxcd ];
      # Neither boot nor `nixos-rebuild switch` waits for it (its command line changes with every
      # new source), and a failure is retried in the background.
      restartIfChanged = false;
      serviceConfig = {
        Type = "exec";
        RemainAfterExit = true;
        ExecStart = lib.concatStringsSep " " [
          (lib.getExe cfg.package)
          "bootstrap"
          "--kubeconfig /etc/rancher/k3s/k3s.yaml"
          "--age-key ${config.sops.age.keyFile}"
          "--sync ${cfg.source}/flux/clusters/${cfg.hostName}/flux-system-sync.yaml"
          "--flux-version ${cfg.facts."flux-version"}"
        ];
        Restart = "on-failure";
        RestartSec = "30s";
      };
    };
  };
}
