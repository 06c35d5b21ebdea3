# The repository this host was built from, read-only, at /etc/homelab/source: the server never
# clones it. Its revision is in /etc/homelab/source-revision.
{ config, lib, ... }:

{
  config = lib.mkIf config.homelab.enable {
    environment.etc."homelab/source".source = config.homelab.source;
    environment.etc."homelab/source-revision".text = config.homelab.sourceRevision + "\n";
  };
}
