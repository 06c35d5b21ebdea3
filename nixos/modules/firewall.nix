# Only SSH and the k3s API are reachable from outside; public traffic arrives through the
# Cloudflare Tunnel, an outbound connection.
{ config, lib, ... }:

let
  cfg = config.homelab;
  facts = cfg.facts.firewall;
in
{
  options.homelab.firewall = {
    tcpPorts = lib.mkOption {
      type = lib.types.listOf lib.types.port;
      default = facts.tcp-ports;
      description = "The only TCP ports open to the network.";
    };
    trustedInterfaces = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = facts.trusted-interfaces;
      description = "Interfaces whose traffic is trusted: k3s pod and overlay networks.";
    };
  };

  config = lib.mkIf cfg.enable {
    networking.firewall = {
      enable = true;
      allowedTCPPorts = cfg.firewall.tcpPorts;
      allowedUDPPorts = [ ];
      trustedInterfaces = cfg.firewall.trustedInterfaces;
    };
  };
}
