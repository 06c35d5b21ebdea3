# The `homelab` command, built from the Cargo workspace. Its tests drive kopia, PostgreSQL and an
# S3 server; they run in CI (.ci/run), not in the sandbox.
{ lib, rustPlatform }:

rustPlatform.buildRustPackage {
  pname = "homelab";
  version = "0.1.0";
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../crates
      # The recovery kit prints the guide's rebuild steps (include_str!).
      ../docs/disaster-recovery.md
    ];
  };
  cargoLock.lockFile = ../Cargo.lock;
  doCheck = false;
  meta = {
    description = "Backups, offsite sync, restore drills and checks for the azalab-0 homelab";
    mainProgram = "homelab";
    license = lib.licenses.mit;
  };
}
