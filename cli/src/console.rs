//! Where a command's output goes, and what stops it: this process's terminal
//! and Ctrl-C (or SIGTERM), or, for a command that another `peers` process
//! sent through the control socket, that client's connection (its output
//! goes back as frames; it stops when the client hangs up or the owner
//! stops). Commands print through here only, so they behave the same either
//! way.

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::control::wire;

/// The client a command runs for, on the thread that runs it.
pub(crate) struct Client {
    /// Where output frames go.
    pub(crate) stream: std::os::unix::net::UnixStream,
    /// The client's working directory: its relative paths mean paths there.
    pub(crate) cwd: PathBuf,
    /// Set once a write to the client failed (it hung up).
    pub(crate) gone: Arc<AtomicBool>,
    /// Becomes `true` when the client hangs up or the owner stops.
    pub(crate) stop: watch::Receiver<bool>,
}

thread_local! {
    static CLIENT: RefCell<Option<Client>> = const { RefCell::new(None) };
}

/// Runs `work` on this thread for `client`: its output goes to the client.
pub(crate) fn for_client<T>(client: Client, work: impl FnOnce() -> T) -> T {
    CLIENT.with(|slot| *slot.borrow_mut() = Some(client));
    let result = work();
    CLIENT.with(|slot| *slot.borrow_mut() = None);
    result
}

/// Whether the command runs for a client of the control socket.
pub(crate) fn is_remote() -> bool {
    CLIENT.with(|slot| slot.borrow().is_some())
}

/// Prints one result line: `value` with `--json`, else `text()`. When
/// whoever reads stdout has gone (`peers scan t | head -1`, a script that
/// stopped reading a serving node's events), the program stops quietly, as
/// Unix tools do, instead of panicking.
pub(crate) fn print(json: bool, value: serde_json::Value, text: impl FnOnce() -> String) {
    let line = if json { value.to_string() } else { text() };
    out(&line);
}

/// Writes one line to stdout (the terminal's, or the client's).
pub(crate) fn out(line: &str) {
    write_line(wire::STDOUT, line);
}

/// Writes one line to stderr (the terminal's, or the client's).
pub(crate) fn err(line: &str) {
    write_line(wire::STDERR, line);
}

fn write_line(kind: u8, line: &str) {
    let sent = CLIENT.with(|slot| {
        let slot = slot.borrow();
        let client = slot.as_ref()?;
        if client.gone.load(Ordering::Relaxed) {
            return Some(());
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        if wire::write_output(&client.stream, kind, &bytes).is_err() {
            client.gone.store(true, Ordering::Relaxed);
        }
        Some(())
    });
    if sent.is_some() {
        return;
    }
    let result = if kind == wire::STDOUT {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush())
    } else {
        let mut err = std::io::stderr().lock();
        writeln!(err, "{line}")
    };
    if let Err(error) = result {
        // A reader that went away (`peers log | head`) ends the program
        // quietly, like any Unix filter.
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        if kind == wire::STDOUT {
            eprintln!("peers: cannot write to stdout: {error}");
        }
        std::process::exit(1);
    }
}

/// A path as the user meant it: relative paths are relative to the
/// client's working directory when the command came through the socket.
pub(crate) fn path(path: &Path) -> PathBuf {
    CLIENT.with(|slot| match slot.borrow().as_ref() {
        Some(client) if path.is_relative() => client.cwd.join(path),
        _ => path.to_owned(),
    })
}

/// A progress bar's look from an indicatif template.
pub(crate) fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A progress bar on stderr, hidden when stderr is not a terminal (or the
/// command runs for a client of the control socket).
pub(crate) fn progress_bar(length: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(length), progress_target());
    bar.set_style(bar_style("{msg} {bar:40} {pos}/{len} ({eta})"));
    bar.set_message(message);
    bar
}

/// A spinner with a message on stderr, hidden when stderr is not a terminal
/// (or the command runs for a client of the control socket).
pub(crate) fn spinner(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, progress_target());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

/// Where progress bars draw: stderr at a terminal, nowhere for a client
/// (its output is a stream of lines).
fn progress_target() -> ProgressDrawTarget {
    if is_remote() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    }
}

/// Completes when the command should stop: Ctrl-C or SIGTERM at a
/// terminal; the client hanging up or the owner stopping for a client.
pub(crate) async fn interrupted() {
    let stop = CLIENT.with(|slot| slot.borrow().as_ref().map(|client| client.stop.clone()));
    match stop {
        Some(mut stop) => {
            // An error means the sender is gone: the owner stopped.
            let _ = stop.wait_for(|stopped| *stopped).await;
        }
        None => {
            let terminate = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(_) => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = terminate => {}
            }
        }
    }
}
