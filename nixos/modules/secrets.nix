# sops-nix: host secrets decrypted at activation with the host's own age key, which is generated
# on first boot and never leaves /var/lib/sops-nix. Each secret is declared by the module that
# reads it (tunnel.nix, backup.nix), root-only, restarting its reader.
{ config, lib, ... }:

{
  options.homelab.secretsFile = lib.mkOption {
    type = lib.types.path;
    default = ../secrets/host-secrets.sops.yaml;
    description = "The SOPS-encrypted host secrets.";
  };

  config = lib.mkIf config.homelab.enable {
    sops = {
      defaultSopsFile = config.homelab.secretsFile;
      age = {
        keyFile = "/var/lib/sops-nix/key.txt";
        generateKey = true;
        # The age key above is the host's only identity for secrets.
        sshKeyPaths = [ ];
      };
      gnupg.sshKeyPaths = [ ];
    };
  };
}
