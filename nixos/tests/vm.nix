# The VM test `nix flake check` runs: boots the module with secrets made for the test and checks
# what the design promises (SSH, firewall, user, timers, /etc/homelab/source, k3s).
{ module }:

{ pkgs, lib, ... }:

let
  # A throwaway age key and host secrets encrypted to it, made when the test is built.
  testSecrets = pkgs.runCommand "homelab-test-secrets" { nativeBuildInputs = [ pkgs.age pkgs.sops ]; } ''
    mkdir -p $out
    age-keygen -o $out/key.txt 2>/dev/null
    recipient=$(age-keygen -y $out/key.txt)
    age-keygen -o flux.key 2>/dev/null
    cat > secrets.yaml <<YAML
    cloudflared:
      credentials: '{"AccountTag":"test","TunnelSecret":"dGVzdA==","TunnelID":"00000000-0000-0000-0000-000000000000"}'
    kopia:
      repository-password: test-password
    r2:
      endpoint: http://127.0.0.1:9000
      bucket: test
      access-key-id: test
      secret-access-key: test
    notify:
      webhook-url: http://127.0.0.1:9/
      matrix-token: test
      heartbeat-url: http://127.0.0.1:9/ping
    flux:
      age-key: |
    $(sed 's/^/    /' flux.key)
    YAML
    sops encrypt --age "$recipient" --input-type yaml --output-type yaml secrets.yaml > $out/secrets.sops.yaml
  '';
in
{
  name = "homelab-host";

  nodes.server = {
    imports = [ module ];
    homelab.secretsFile = "${testSecrets}/secrets.sops.yaml";
    # sops-nix refuses a key file in the store: put the test key where the host's would be.
    system.activationScripts.homelabTestKey.text = ''
      install -D -m 0400 ${testSecrets}/key.txt /var/lib/sops-nix/key.txt
    '';
    system.activationScripts.setupSecrets.deps = [ "homelabTestKey" ];
    # The test network resolves nodes by their node names.
    networking.hostName = lib.mkForce "server";
    # No network to install Flux from.
    systemd.services.homelab-flux-bootstrap.wantedBy = lib.mkForce [ ];
    virtualisation.memorySize = 3072;
    virtualisation.diskSize = 8192;
  };

  nodes.client = { };

  testScript = ''
    start_all()
    server.wait_for_unit("multi-user.target")

    with subtest("sshd refuses passwords and root"):
        config = server.succeed("sshd -T")
        assert "passwordauthentication no" in config, config
        assert "kbdinteractiveauthentication no" in config, config
        assert "permitrootlogin no" in config, config

    with subtest("only TCP 22 and 6443 are open from outside"):
        server.wait_for_open_port(22)
        client.succeed("nc -z -w 5 server 22")
        server.succeed("nc -lk 8080 >/dev/null 2>&1 &")
        server.wait_for_open_port(8080)
        client.fail("nc -z -w 5 server 8080")
        rules = server.succeed("iptables -S nixos-fw")
        for port in ["22", "6443"]:
            assert f"--dport {port}" in rules, rules

    with subtest("the owner"):
        groups = server.succeed("id -nG aiden").split()
        for group in ["wheel", "networkmanager", "docker"]:
            assert group in groups, groups
        assert server.succeed("getent passwd aiden").strip().endswith("/bin/fish")

    with subtest("backup timers"):
        server.succeed("systemctl cat homelab-backup.timer | grep -F 'OnCalendar=*-*-* 02:30:00'")
        server.succeed("systemctl cat homelab-backup-sync.timer | grep -F 'OnCalendar=*-*-* 00/6:00:00'")
        server.succeed("systemctl cat homelab-backup.timer | grep -F 'Persistent=true'")
        server.succeed("homelab backup check-config $(systemctl show -p Environment homelab-backup.service | grep -o '/nix/store/[^ ]*homelab-backup.toml')")

    with subtest("the backup jobs' kopia is the release the server image and the tests use"):
        server.succeed("kopia --version | grep -F 0.23.1")
        server.succeed("systemctl cat homelab-backup.service | grep -F kopia-0.23.1")

    with subtest("/etc/homelab/source holds the flake source"):
        server.succeed("test -f /etc/homelab/source/flake.nix")
        server.succeed("test -f /etc/homelab/source/homelab.toml")

    with subtest("homelab status: its timers, its config, the node exporter on loopback only"):
        server.succeed("systemctl cat homelab-status.timer | grep -F 'OnCalendar=*:0/5'")
        server.succeed("systemctl cat homelab-status-summary.timer | grep -F 'OnCalendar=*-*-* 08:00:00'")
        server.succeed("test -s /etc/homelab/source-revision")
        server.wait_for_open_port(9100, "127.0.0.1")
        client.fail("nc -z -w 5 server 9100")
        # Exit 0 or 1 (much is not ok in a test VM), never 2: the generated config loads.
        code, output = server.execute("homelab status --json")
        assert code in (0, 1), output
        assert "host/generation" in output, output
        # A unit that fails is named by the real systemctl, one line of its own.
        server.execute("systemd-run --unit=homelab-test-failure false")
        server.wait_until_succeeds("systemctl is-failed homelab-test-failure.service")
        code, output = server.execute("homelab status --json")
        assert code == 1, output
        assert "host/units/homelab-test-failure.service" in output, output

    with subtest("k3s and the Flux bootstrap"):
        server.succeed("systemctl is-enabled k3s.service")
        server.succeed("systemctl cat homelab-flux-bootstrap.service | grep -F 'flux/clusters/azalab-0/flux-system-sync.yaml'")
  '';
}
