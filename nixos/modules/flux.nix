# Flux on the local k3s, pointed at flux/clusters/<hostName> of this repository. Runs at every
# boot (idempotent) and needs no network: the Flux controllers of homelab.toml's flux-version
# (the release CI rehearses) come from nixos/flux/install.yaml in the store, applied to the local
# API server; the sops-age Secret is made at run time from Flux's own age key (host secret
# flux/age-key, never through the store, never the host's key); then the GitRepository and root
# Kustomization.
{ config, lib, pkgs, ... }:

let
  cfg = config.homelab;
in
{
  config = lib.mkIf cfg.enable {
    # Flux's age identity: what the cluster's *.sops.yaml are encrypted to (with the owner's
    # key). Only Flux gets it; the host's own key never enters the cluster.
    sops.secrets."flux/age-key" = {
      restartUnits = [ "homelab-flux-bootstrap.service" ];
    };
    # The disaster guide's `flux suspend`/`flux resume`, and a look at Flux by hand.
    environment.systemPackages = [ pkgs.fluxcd ];
    systemd.services.homelab-flux-bootstrap = {
      description = "Install Flux and point it at the homelab repository";
      wantedBy = [ "multi-user.target" ];
      after = [ "k3s.service" ];
      wants = [ "k3s.service" ];
      path = [ pkgs.kubectl ];
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
          "--age-key ${config.sops.secrets."flux/age-key".path}"
          "--sync ${cfg.source}/flux/clusters/${cfg.hostName}/flux-system-sync.yaml"
          "--flux-manifests ${../flux/install.yaml}"
        ];
        Restart = "on-failure";
        RestartSec = "30s";
      };
    };
  };
}
