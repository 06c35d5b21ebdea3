# The `homelab backup` configuration (docs/backup.example.toml), built from the [backup] table of
# homelab.toml and the paths of the secrets. Pure, so that the tests can evaluate it with
# nix-instantiate, without nixpkgs, and feed the result to the Rust loader.
{ backup, secrets, sourceRepository }:

let
  kubectl = namespace: args:
    [ "kubectl" "--kubeconfig" "/etc/rancher/k3s/k3s.yaml" "--namespace" namespace ] ++ args;
  # An app declared by name (`app = { namespace, deployment, stop }`): a one-replica Deployment
  # whose pods carry app.kubernetes.io/name=<deployment>. `kubectl wait --for=delete` passes at
  # once when nothing matches, which is why `homelab check` holds the names to the tree.
  stopApp = app: [
    (kubectl app.namespace [ "scale" "deployment/${app.deployment}" "--replicas=0" ])
    (kubectl app.namespace [ "wait" "--for=delete" "pod" "--selector=app.kubernetes.io/name=${app.deployment}" "--timeout=5m" ])
  ];
  startApp = app: [
    (kubectl app.namespace [ "scale" "deployment/${app.deployment}" "--replicas=1" ])
    (kubectl app.namespace [ "rollout" "status" "deployment/${app.deployment}" "--timeout=5m" ])
  ];
  # `stop = "restore"`: stopped around an in-place restore; `"snapshot"`: around every snapshot
  # (its quiesce table then holds only the time limits), and so around a restore too.
  expand = source:
    let
      app = source.app;
      table = if app.stop == "snapshot" then "quiesce" else "restore";
      steps = { stop = stopApp app; start = startApp app; };
    in
    if !(source ? app) then source
    else
      assert app.stop == "snapshot" || app.stop == "restore";
      builtins.removeAttrs source [ "app" ] // {
        ${table} = (source.${table} or { }) // steps;
      };
in
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
  source = map expand backup.source;
}
