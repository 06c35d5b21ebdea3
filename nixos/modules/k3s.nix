# Single-node k3s. Traefik stays as the in-cluster ingress, but as a ClusterIP service: servicelb
# would publish it on the node's ports 80/443 through DNAT rules that bypass the firewall.
# cloudflared on the host reaches it at the fixed cluster IP in homelab.toml
# ([tunnel] traefik-cluster-ip).
{ config, lib, ... }:

let
  cfg = config.homelab;
in
{
  options.homelab.k3s.traefikClusterIP = lib.mkOption {
    type = lib.types.str;
    default = cfg.facts.tunnel.traefik-cluster-ip;
    description = "Fixed cluster IP of the Traefik service (inside k3s's default 10.43.0.0/16).";
  };

  config = lib.mkIf cfg.enable {
    services.k3s = {
      enable = true;
      role = "server";
      extraFlags = [
        "--disable=servicelb"
        # The owner (group wheel) may use kubectl without sudo.
        "--write-kubeconfig-mode=0640"
        "--write-kubeconfig-group=wheel"
      ];
      # k3s deploys Traefik with its bundled Helm chart; this overrides the chart's values.
      manifests.traefik-config.content = {
        apiVersion = "helm.cattle.io/v1";
        kind = "HelmChartConfig";
        metadata = {
          name = "traefik";
          namespace = "kube-system";
        };
        spec.valuesContent = builtins.toJSON {
          service = {
            type = "ClusterIP";
            spec.clusterIP = cfg.k3s.traefikClusterIP;
          };
          # No backend speaks HTTPS (the Kopia server is reached by a tcp route, not through
          # Traefik), so certificate verification stays on.
        };
      };
    };
  };
}
