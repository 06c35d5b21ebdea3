# The Cloudflare Tunnel: every public hostname, declared in homelab.toml, reaches the cluster
# through one outbound connection: http routes through Traefik, tcp routes (the Kopia server)
# straight to their Service. nixpkgs' module runs a locally-managed tunnel (credentials file and
# ingress rules here), not a dashboard token.
{ config, lib, ... }:

let
  cfg = config.homelab;
  tunnel = cfg.facts.tunnel;
  hostname = route: "${route.name}.${cfg.domain}";
  # http routes reach Traefik, which routes by Ingress; tcp routes reach their Service directly.
  origin = route:
    if route.kind == "tcp"
    then "tcp://${route.cluster-ip}:${toString route.port}"
    else "http://${cfg.k3s.traefikClusterIP}:80";
in
{
  options.homelab.tunnel = {
    id = lib.mkOption {
      type = lib.types.str;
      default = tunnel.id;
      description = "UUID of the tunnel (`cloudflared tunnel create` prints it).";
    };
    routes = lib.mkOption {
      type = lib.types.attrsOf lib.types.str;
      default = lib.listToAttrs (map (route: lib.nameValuePair (hostname route) (origin route)) tunnel.route);
      description = "Public hostname to origin service; everything else gets 404.";
    };
  };

  config = lib.mkIf cfg.enable {
    sops.secrets."cloudflared/credentials" = {
      restartUnits = [ "cloudflared-tunnel-${cfg.tunnel.id}.service" ];
    };
    # cloudflared's metrics server on a fixed loopback port (its TUNNEL_METRICS variable; the
    # module has no option for it): `homelab status` reads the edge connections there.
    systemd.services."cloudflared-tunnel-${cfg.tunnel.id}".environment.TUNNEL_METRICS =
      cfg.facts.status.tunnel-metrics;
    services.cloudflared = {
      enable = true;
      tunnels.${cfg.tunnel.id} = {
        credentialsFile = config.sops.secrets."cloudflared/credentials".path;
        default = "http_status:404";
        ingress = cfg.tunnel.routes;
      };
    };
  };
}
