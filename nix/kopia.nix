# kopia for the host, at the one release the Kopia server image (flux/…/apps/kopia) and the CI
# tools (.ci/tools.sh) use too; tests/renovate.rs fails when the three disagree. nixpkgs 26.05
# branched (2026-05-24) before kopia 0.23.1 reached master (2026-06-17), so the host cannot take
# nixpkgs' kopia and stay on the release everything else is tested with.
#
# Renovate proposes the version; both hashes must then change with it. `nix build .#kopia`
# prints the right ones, or compute them without nixpkgs (how these were made, and they equal
# nixpkgs master's own 0.23.1 package):
#   git archive v$VERSION | tar -x -C src && nix hash path src            # hash
#   (cd src && GOTOOLCHAIN=local go mod vendor) && nix hash path src/vendor  # vendorHash
{ lib, buildGo126Module, fetchFromGitHub }:

# kopia 0.23's go.mod asks for Go ≥ 1.25.8; 1.26 is what CI builds it with.
buildGo126Module (finalAttrs: {
  pname = "kopia";
  version = "0.23.1";

  src = fetchFromGitHub {
    owner = "kopia";
    repo = "kopia";
    tag = "v${finalAttrs.version}";
    hash = "sha256-yjeLV7N/U88oVdP4iJYgSM/QJLAMREaB/2jBcbTDWkA=";
  };

  vendorHash = "sha256-5p/MUNkqNb+iAFxXXYRR2NB1WiGVIcNrTADsd/VjapU=";

  subPackages = [ "." ];

  ldflags = [
    "-X github.com/kopia/kopia/repo.BuildVersion=${finalAttrs.version}"
    "-X github.com/kopia/kopia/repo.BuildInfo=${finalAttrs.src.rev}"
  ];

  meta = {
    description = "Fast, encrypted, deduplicating backups (the release the homelab is tested with)";
    homepage = "https://kopia.io";
    license = lib.licenses.asl20;
    mainProgram = "kopia";
  };
})
