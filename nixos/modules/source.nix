# The repository this host was built from, read-only, at /etc/homelab/source: the server never
# clones it.
{ config, lib, ... }:

{
  config = lib.mkIf config.homelab.enable {
    environment.etc."homelab/source".source = config.homelab.source;
  };
}
