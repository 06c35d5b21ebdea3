# The deploy-rs node for this host (flake.nix `deploy.nodes.<hostname>`), from homelab.toml's
# facts. Pure, so that the tests can evaluate it with nix-instantiate and hold it to the README.
# `activate` is deploy-rs' `lib.x86_64-linux.activate.nixos`; `system` the host's
# nixosConfiguration.
{ facts, activate, system }:

{
  hostname = facts.hostname;
  # The owner's account; activation as root through sudo, which asks for the password
  # (the owner has no passwordless sudo).
  sshUser = facts.user.name;
  user = "root";
  interactiveSudo = true;
  # After activation, deploy-rs opens a second SSH connection to confirm the host is still
  # reachable; without that confirmation within confirmTimeout the host rolls back by itself.
  magicRollback = true;
  # A failed activation (a unit that does not start, the switch script failing) rolls back.
  autoRollback = true;
  confirmTimeout = 60;
  profiles.system.path = activate system;
}
