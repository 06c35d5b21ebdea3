use std::process::ExitCode;

fn main() -> ExitCode {
    homelab::run()
}
