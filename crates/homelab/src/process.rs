//! Running external programs: argv vectors only, bounded in time, stopped cleanly when we are
//! told to stop, and never outliving us.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const POLL: Duration = Duration::from_millis(10);
/// How long a child gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(30);
/// How long output is still read after the child exited.
const PIPE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("could not start `{program}`: {}", spawn_failure(program, source))]
    Spawn { program: String, source: io::Error },
    #[error("`{program}` was stopped: {reason}")]
    Cancelled { program: String, reason: String },
    #[error("`{program}` did not finish within {}", humantime::format_duration(*.after))]
    TimedOut { program: String, after: Duration },
    #[error("waiting for `{program}` failed: {source}")]
    Wait { program: String, source: io::Error },
}

/// Why a program did not start, in words that say what to do: a program that is not installed
/// is "not on PATH", with the variable that points homelab at it elsewhere.
fn spawn_failure(program: &str, err: &io::Error) -> String {
    if err.kind() != io::ErrorKind::NotFound {
        return err.to_string();
    }
    let name = std::path::Path::new(program)
        .file_name()
        .map_or(program.to_owned(), |n| n.to_string_lossy().into_owned());
    match crate::env_vars::program_override(&name) {
        Some(variable) if name == program => {
            format!("not on PATH (install it, or set {variable} to its path)")
        }
        Some(variable) => format!("no such program (check {variable})"),
        None if name == program => "not on PATH (install it)".to_owned(),
        None => "no such program".to_owned(),
    }
}

/// Set when SIGTERM, SIGINT or SIGHUP arrives, or when the job's time limit passes; long-running
/// work checks it between steps and the child processes are asked to stop.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    signalled: Arc<AtomicBool>,
    /// When the job must give up, and the limit it was given (for messages).
    deadline: Option<(Instant, Duration)>,
}

impl Cancel {
    /// Routes the termination signals to this flag instead of killing the process, so that
    /// cleanup (restarting a stopped app, removing staging files) always runs.
    pub fn install() -> io::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ] {
            signal_hook::flag::register(signal, Arc::clone(&flag))?;
        }
        Ok(Self {
            signalled: flag,
            deadline: None,
        })
    }

    /// The same flag, also raised once `limit` has passed from now (a limit too far in the
    /// future to represent is no limit).
    pub fn with_time_limit(self, limit: Duration) -> Self {
        Self {
            deadline: Instant::now()
                .checked_add(limit)
                .map(|deadline| (deadline, limit)),
            ..self
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.signalled.load(Ordering::SeqCst) || self.time_is_up()
    }

    fn time_is_up(&self) -> bool {
        self.deadline
            .is_some_and(|(deadline, _)| Instant::now() >= deadline)
    }

    /// Why work stops: a signal or the time limit. Meaningful once [`Self::is_cancelled`].
    pub fn reason(&self) -> String {
        match self.deadline {
            Some((_, limit)) if self.time_is_up() && !self.signalled.load(Ordering::SeqCst) => {
                format!(
                    "the job's time limit of {} was reached",
                    humantime::format_duration(limit)
                )
            }
            _ => "homelab received a termination signal".to_owned(),
        }
    }

    /// Sleeps for `duration` unless cancelled first; returns false when cancelled.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            if self.is_cancelled() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

/// What a finished child left behind.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last lines of stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    }
}

/// Runs `command` to completion. stdout is captured unless the caller already redirected it,
/// stderr is always captured. The child gets SIGTERM if we die, if `cancel` fires, or when
/// `timeout` passes, then SIGKILL after a grace period.
pub fn run(
    command: &mut Command,
    cancel: &Cancel,
    timeout: Option<Duration>,
    capture_stdout: bool,
) -> Result<Finished, ProcessError> {
    run_with_input(command, None, cancel, timeout, capture_stdout)
}

/// [`run`], with `input` written to the child's stdin (how secrets reach `kubectl apply -f -`
/// without touching argv or disk).
pub fn run_with_input(
    command: &mut Command,
    input: Option<Vec<u8>>,
    cancel: &Cancel,
    timeout: Option<Duration>,
    capture_stdout: bool,
) -> Result<Finished, ProcessError> {
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    spawn_and_wait(command, stdin, input, cancel, timeout, capture_stdout)
}

/// A configured command (an argv list) that could not run or exited non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("`{argv}` failed ({status}):\n{stderr}")]
    Failed {
        argv: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// Runs configured commands one after another, each bounded by `timeout`; the first that fails
/// stops the rest. `stdin`, when given, feeds the first command (a dump loaded by `psql`).
pub fn run_commands(
    commands: &[Vec<String>],
    mut stdin: Option<std::fs::File>,
    cancel: &Cancel,
    timeout: Duration,
) -> Result<(), CommandError> {
    for argv in commands {
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        let input = stdin.take().map_or_else(Stdio::null, Stdio::from);
        let done = spawn_and_wait(&mut command, input, None, cancel, Some(timeout), true)?;
        if !done.status.success() {
            return Err(CommandError::Failed {
                argv: argv.join(" "),
                status: done.status,
                stderr: done.stderr_tail(),
            });
        }
    }
    Ok(())
}

fn spawn_and_wait(
    command: &mut Command,
    stdin: Stdio,
    input: Option<Vec<u8>>,
    cancel: &Cancel,
    timeout: Option<Duration>,
    capture_stdout: bool,
) -> Result<Finished, ProcessError> {
    let program = program_name(command.get_program());
    if capture_stdout {
        command.stdout(Stdio::piped());
    }
    // Own process group: stopping it stops the grandchildren too (a `sh -c` and its `sleep`),
    // which would otherwise hold our pipes open.
    command.stdin(stdin).stderr(Stdio::piped()).process_group(0);
    // Linux only (the MacBook has no parent-death signal; there the client is not left running
    // unattended).
    #[cfg(target_os = "linux")]
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe, and allocates nothing.
    unsafe {
        command
            .pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(io::Error::from));
    }
    // Program and arguments only: the environment carries passwords.
    tracing::debug!(program = %program, args = ?command.get_args().collect::<Vec<_>>(), "running");
    let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
        program: program.clone(),
        source,
    })?;
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
    }
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let started = Instant::now();
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(source) => {
                break Err(ProcessError::Wait {
                    program: program.clone(),
                    source,
                });
            }
        }
        if cancel.is_cancelled() {
            stop(&mut child);
            break Err(ProcessError::Cancelled {
                program: program.clone(),
                reason: cancel.reason(),
            });
        }
        if let Some(after) = timeout.filter(|t| started.elapsed() >= *t) {
            stop(&mut child);
            break Err(ProcessError::TimedOut {
                program: program.clone(),
                after,
            });
        }
        thread::sleep(POLL);
    };
    // A grandchild left running in the background (`sh -c 'app &'`) keeps our pipes open:
    // wait a little for the rest of the output, then go on without it.
    let deadline = Instant::now() + PIPE_GRACE;
    let stdout = stdout.map(|h| join(h, deadline)).unwrap_or_default();
    let stderr = stderr.map(|h| join(h, deadline)).unwrap_or_default();
    outcome.map(|status| Finished {
        status,
        stdout,
        stderr,
    })
}

fn program_name(program: &OsStr) -> String {
    program.to_string_lossy().into_owned()
}

fn drain<R: Read + Send + 'static>(mut reader: R) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        buf
    })
}

fn join(handle: JoinHandle<Vec<u8>>, deadline: Instant) -> Vec<u8> {
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            tracing::warn!("a background process still holds the output pipe; not waiting for it");
            return Vec::new();
        }
        thread::sleep(POLL);
    }
    handle.join().unwrap_or_default()
}

/// A helper process that runs beside the job (the `cloudflared access tcp` tunnel): in its own
/// process group, told to stop by the parent-death signal on Linux, and stopped (group SIGTERM,
/// grace, SIGKILL) when this is dropped, on every way out of the job.
pub struct Background {
    child: Child,
    program: String,
}

impl Background {
    /// Starts `command` with its output sent to `log` (a file, or `Stdio::null()`).
    pub fn spawn(command: &mut Command, log: Option<std::fs::File>) -> Result<Self, ProcessError> {
        let program = program_name(command.get_program());
        let (stdout, stderr) = match log {
            Some(file) => match file.try_clone() {
                Ok(copy) => (Stdio::from(copy), Stdio::from(file)),
                Err(_) => (Stdio::null(), Stdio::from(file)),
            },
            None => (Stdio::null(), Stdio::null()),
        };
        command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(io::Error::from)
            });
        }
        tracing::debug!(program = %program, args = ?command.get_args().collect::<Vec<_>>(), "starting in the background");
        let child = command.spawn().map_err(|source| ProcessError::Spawn {
            program: program.clone(),
            source,
        })?;
        Ok(Self { child, program })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// `None` while the process runs; how it ended once it exited on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        tracing::debug!(program = %self.program, "stopping");
        stop(&mut self.child);
    }
}

/// SIGTERM to the child's process group, a grace period, then SIGKILL; always reaps the child.
fn stop(child: &mut Child) {
    let group = i32::try_from(child.id())
        .ok()
        .map(|pid| Pid::from_raw(-pid));
    if let Some(group) = group {
        let _ = kill(group, Signal::SIGTERM);
    }
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        thread::sleep(POLL);
    }
    if let Some(group) = group {
        let _ = kill(group, Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let cancel = Cancel::default();
        let done = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            &cancel,
            None,
            true,
        )
        .expect("sh runs");
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.stdout_text(), "out\n");
        assert_eq!(done.stderr_tail(), "err");
    }

    #[test]
    fn timeout_stops_the_child() {
        let cancel = Cancel::default();
        let err = run(
            Command::new("sleep").arg("30"),
            &cancel,
            Some(Duration::from_millis(200)),
            true,
        )
        .expect_err("must time out");
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err}");
    }

    #[test]
    fn a_background_grandchild_does_not_hang_us() {
        let cancel = Cancel::default();
        let started = Instant::now();
        let done = run(
            Command::new("sh").args(["-c", "sleep 60 & echo started"]),
            &cancel,
            None,
            true,
        )
        .expect("sh runs");
        assert!(done.status.success());
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "hung on the pipe"
        );
    }

    #[test]
    fn cancel_stops_the_child() {
        let cancel = Cancel::default();
        cancel.signalled.store(true, Ordering::SeqCst);
        let err = run(Command::new("sleep").arg("30"), &cancel, None, true)
            .expect_err("must be cancelled");
        assert!(matches!(err, ProcessError::Cancelled { .. }), "{err}");
        assert!(err.to_string().contains("termination signal"), "{err}");
    }

    #[test]
    fn the_time_limit_stops_the_child_and_says_so() {
        let cancel = Cancel::default().with_time_limit(Duration::from_millis(300));
        let err = run(Command::new("sleep").arg("30"), &cancel, None, true)
            .expect_err("must be stopped at the limit");
        assert!(
            err.to_string().contains("time limit of 300ms was reached"),
            "{err}"
        );
        assert!(
            !cancel.sleep(Duration::from_secs(5)),
            "the limit has passed"
        );
    }
}
