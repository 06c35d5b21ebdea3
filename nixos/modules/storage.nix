# The /srv tree: one folder per app's state, owned as its container expects (Immich's Postgres
# runs as uid 999 and wants 0700), plus the `.immich` markers Immich checks at start.
{ config, lib, ... }:

let
  cfg = config.homelab;
  facts = cfg.facts;
  entry = dir:
    let
      owner = lib.splitString ":" dir.owner;
    in
    lib.nameValuePair dir.path {
      d = {
        user = builtins.elemAt owner 0;
        group = builtins.elemAt owner 1;
        mode = dir.mode;
      };
    };
  marker = folder:
    lib.nameValuePair "${facts.immich.root}/${folder}/.immich" {
      f = {
        user = "root";
        group = "root";
        mode = "0644";
      };
    };
in
{
  config = lib.mkIf cfg.enable {
    systemd.tmpfiles.settings."10-homelab-srv" = builtins.listToAttrs (
      [
        (lib.nameValuePair "/srv" {
          d = {
            user = "root";
            group = "root";
            mode = "0755";
          };
        })
      ]
      ++ map entry facts.storage
      ++ map
        (folder: lib.nameValuePair "${facts.immich.root}/${folder}" {
          d = {
            user = "root";
            group = "root";
            mode = "0750";
          };
        })
        facts.immich.folders
      ++ map marker facts.immich.folders
    );
  };
}
