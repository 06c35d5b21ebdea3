# The `homelab backup` configuration (docs/backup.example.toml), built from the [backup] table of
# homelab.toml and the paths of the secrets. Pure, so that the tests can evaluate it with
# nix-instantiate, without nixpkgs, and feed the result to the Rust loader.
{ backup, secrets, sourceRepository }:

{
  state-dir = backup.state-dir;
  textfile-dir = backup.textfile-dir;
  time-limit = backup.time-limit;
  repository = {
    path = backup.repository;
    password-file = secrets.repositoryPassword;
  };
  offsite.credentials-file = secrets.r2Credentials;
  notify = {
    webhook-file = secrets.webhookUrl;
    matrix = {
      homeserver = backup.matrix-homeserver;
      room = backup.matrix-room;
      access-token-file = secrets.matrixToken;
    };
    heartbeat-url-file = secrets.heartbeatUrl;
  };
  recovery-kit = {
    age-key-file = backup.age-key-file;
    source-repository = sourceRepository;
  };
  source = backup.source;
}
