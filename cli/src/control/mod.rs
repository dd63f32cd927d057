//! The control socket: one process holds a database, and every `peers`
//! command on it runs there (docs/PROTOCOL.md "Control socket").
//!
//! The process that opens a database (a `peers serve`, any other `peers`
//! command while it runs, or an application that starts a [`Control`])
//! listens on `DIR/control.sock`, a Unix socket only its user may open. A
//! `peers` command finds the socket, sends its command line and working
//! directory, and prints what comes back; the holder runs the command as
//! if it had been typed there (writes are signed by its identity), so the
//! output and exit code are the same either way. With no holder, the
//! command opens the database itself, and listens in turn while it runs.
//!
//! ```no_run
//! use peers::control::Control;
//! use peers_engine::{Db, Options};
//! # fn main() -> anyhow::Result<()> {
//! let db = Db::open("notes.peers", Options::default())?;
//! // From here on, `peers --db notes.peers scan notes` in a terminal runs
//! // in this process, on this `db`.
//! let control = Control::start(&db)?;
//! // ... the application runs ...
//! control.stop(); // or drop it
//! # Ok(()) }
//! ```

pub mod wire;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use peers_engine::{Db, Options};
use tokio::sync::watch;

use crate::console;
use wire::{Answer, EXIT, REQUEST, REQUEST_BYTES_MAX, RETRY, Request, STDERR, STDOUT, WireError};

/// The socket's name in the database directory.
pub const SOCKET_FILE: &str = "control.sock";
/// Most commands a holder runs for clients at once; more are refused.
pub const CLIENTS_MAX: usize = 64;
/// How long a client has to send its request once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a command waits for a holder that is starting or stopping
/// (it holds the database but does not listen, or no longer does).
const HOLDER_WAIT: Duration = Duration::from_secs(5);

/// One client's command running in this process.
struct Running {
    thread: JoinHandle<()>,
    /// Tells the command to stop (its `watch`, `sync --live` ...).
    stop: Arc<watch::Sender<bool>>,
}

/// A database's control socket, listening. Stops (and removes the socket)
/// on [`Control::stop`] or drop, after the commands it runs have ended.
pub struct Control {
    path: PathBuf,
    stopping: Arc<AtomicBool>,
    running: Arc<Mutex<Vec<Running>>>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("path", &self.path).finish()
    }
}

impl Control {
    /// Listens on `DIR/control.sock` for `db` (which this process holds:
    /// [`Db::open`] took its lock, so any socket file already there is a
    /// dead holder's, and is replaced).
    pub fn start(db: &Db) -> std::io::Result<Control> {
        let path = db.dir().join(SOCKET_FILE);
        // Bound in a private (0700) directory, made 0600, then moved into
        // place: there is no moment at which another user could connect.
        let private = tempfile::Builder::new()
            .prefix(".control-")
            .tempdir_in(db.dir())?;
        let bound = private.path().join("sock");
        let listener = UnixListener::bind(&bound)?;
        std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&bound, &path)?;
        drop(private);
        let stopping = Arc::new(AtomicBool::new(false));
        let running = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (db, stopping, running) = (db.clone(), Arc::clone(&stopping), Arc::clone(&running));
            let path = path.clone();
            std::thread::Builder::new()
                .name("peers-control".to_owned())
                .spawn(move || {
                    accept_loop(&db, &listener, &stopping, &running);
                    turn_away(&listener, &path);
                })?
        };
        Ok(Control {
            path,
            stopping,
            running,
            accept: Some(accept),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops listening, removes the socket, tells running commands to stop
    /// (a `watch` ends; a write in progress completes) and waits for them.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop; it sees `stopping` and ends. (Were the
        // socket file gone, the loop would never wake: it is left to end
        // with the process rather than waited for.)
        if UnixStream::connect(&self.path).is_ok() {
            let _ = accept.join();
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
        let running = std::mem::take(&mut *lock(&self.running));
        for command in &running {
            command.stop.send_replace(true);
        }
        for command in running {
            let _ = command.thread.join();
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept_loop(
    db: &Db,
    listener: &UnixListener,
    stopping: &AtomicBool,
    running: &Mutex<Vec<Running>>,
) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            // The wake-up, or a client that came just before it: not run.
            if let Ok(stream) = stream {
                let _ = wire::write_frame(&stream, RETRY, &[]);
            }
            break;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "control socket: accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let mut running = lock(running);
        running.retain(|command| !command.thread.is_finished());
        if running.len() >= CLIENTS_MAX {
            refuse(
                &stream,
                &format!(
                    "peers: error: {} already runs {CLIENTS_MAX} commands for others; try again when one has ended",
                    holder()
                ),
            );
            continue;
        }
        let (stop, stopped) = watch::channel(false);
        let stop = Arc::new(stop);
        let spawned = {
            let (db, stop) = (db.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("peers-control-command".to_owned())
                .spawn(move || serve_client(&db, stream, &stop, stopped))
        };
        match spawned {
            Ok(thread) => running.push(Running { thread, stop }),
            Err(error) => tracing::warn!(%error, "control socket: cannot start a thread"),
        }
    }
}

/// Once stopping: removes the socket file (no new client finds it), then
/// answers every connection already queued with `RETRY` (it was not run,
/// and the client opens the directory itself once this process lets go)
/// instead of resetting it, which would leave the client not knowing.
fn turn_away(listener: &UnixListener, path: &Path) {
    let _ = std::fs::remove_file(path);
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while let Ok((stream, _)) = listener.accept() {
        let _ = stream.set_nonblocking(false);
        let _ = wire::write_frame(&stream, RETRY, &[]);
    }
}

/// Answers a client with one error line and exit code 1.
fn refuse(stream: &UnixStream, line: &str) {
    let _ = wire::write_output(stream, STDERR, format!("{line}\n").as_bytes());
    let _ = wire::write_frame(stream, EXIT, &[1]);
}

/// This process, as the messages to clients name it.
pub(crate) fn holder() -> String {
    let command: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    format!("process {} ({})", std::process::id(), command.join(" "))
}

/// Reads one client's request, runs it with its output going back to the
/// client, and sends the exit code.
fn serve_client(
    db: &Db,
    stream: UnixStream,
    stop: &Arc<watch::Sender<bool>>,
    stopped: watch::Receiver<bool>,
) {
    let request = stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(|error| WireError::Io(error.to_string()))
        .and_then(|()| wire::read_frame(&stream, REQUEST_BYTES_MAX))
        .and_then(|(kind, payload)| match kind {
            REQUEST => Request::decode(&payload),
            other => Err(WireError::Kind(other)),
        });
    let request = match request {
        Ok(request) => request,
        Err(error) => {
            refuse(&stream, &format!("peers: error: control request: {error}"));
            return;
        }
    };
    let (Ok(reader), Ok(writer)) = (stream.try_clone(), stream.try_clone()) else {
        return;
    };
    // The client sends nothing more: a read that returns means it hung up.
    let hung_up = {
        let stop = Arc::clone(stop);
        std::thread::Builder::new()
            .name("peers-control-reader".to_owned())
            .spawn(move || {
                let mut reader = reader;
                let _ = reader.set_read_timeout(None);
                let mut byte = [0u8; 1];
                let _ = reader.read(&mut byte);
                stop.send_replace(true);
            })
    };
    let client = console::Client {
        stream: writer,
        cwd: PathBuf::from(&request.cwd),
        gone: Arc::new(AtomicBool::new(false)),
        stop: stopped,
    };
    let code = console::for_client(client, || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::commands::run_for_client(db, request.args)
        }))
        .unwrap_or_else(|_| {
            console::err(&format!(
                "peers: error: the command failed unexpectedly in {} (see its log)",
                holder()
            ));
            101
        })
    });
    let _ = wire::write_frame(&stream, EXIT, &[code]);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    if let Ok(reader) = hung_up {
        let _ = reader.join();
    }
}

/// How a command reaches its database.
pub(crate) enum Route {
    /// Through the process that holds it.
    Holder(UnixStream),
    /// Opened here (this process now holds it).
    Direct(Db),
}

/// Finds the process that holds `dir` and connects to it, or opens the
/// database here when none does (removing a dead holder's socket).
pub(crate) fn route(dir: &Path) -> Result<Route> {
    let path = dir.join(SOCKET_FILE);
    let deadline = Instant::now() + HOLDER_WAIT;
    loop {
        match UnixStream::connect(&path) {
            Ok(stream) => return Ok(Route::Holder(stream)),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "reaching the process that holds {} through {}",
                        dir.display(),
                        path.display()
                    )
                });
            }
        }
        match Db::open(dir, Options::default()) {
            Ok(db) => {
                // This process holds the lock now: a socket file left there
                // is a dead holder's.
                if let Err(error) = std::fs::remove_file(&path)
                    && error.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(%error, "removing a stale {}", path.display());
                }
                return Ok(Route::Direct(db));
            }
            Err(peers_engine::Error::InUse { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(error @ peers_engine::Error::InUse { .. }) => {
                return Err(anyhow::Error::new(error)).context(format!(
                    "opening {0}: it takes no commands from other processes (no {0}/{SOCKET_FILE}; it may be starting or stopping): try again, use the database there, or stop it",
                    dir.display()
                ));
            }
            Err(error) => {
                return Err(error).with_context(|| format!("opening {}", dir.display()));
            }
        }
    }
}

/// Sends this process's command line to the holder, copies its output to
/// stdout and stderr, and returns its exit code; `None` when the holder
/// was stopping and did not run it (open the directory instead).
pub(crate) fn forward(stream: &UnixStream, dir: &Path) -> Result<Option<ExitCode>> {
    let args = std::env::args_os()
        .skip(1)
        .map(|arg| arg.into_string())
        .collect::<Result<Vec<String>, _>>()
        .map_err(|arg| {
            anyhow::anyhow!(
                "argument {arg:?} is not UTF-8, and the command must run in the process that holds {}",
                dir.display()
            )
        })?;
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let cwd = cwd
        .to_str()
        .with_context(|| format!("the working directory {} is not UTF-8", cwd.display()))?
        .to_owned();
    let request = Request { cwd, args }.encode();
    if wire::write_frame(stream, REQUEST, &request).is_err() {
        // The holder hung up before it had the whole request (it was
        // stopping): it cannot have run the command.
        return Ok(None);
    }
    let code = wire::read_answer(stream, |kind, bytes| {
        let written = if kind == STDOUT {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush())
        } else {
            std::io::stderr().lock().write_all(bytes)
        };
        // As at a terminal: a reader that went away (`peers watch t | head`)
        // ends the program quietly (and hanging up stops the command).
        match written {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
            Err(error) => {
                eprintln!("peers: cannot write the output: {error}");
                std::process::exit(1);
            }
        }
    });
    match code {
        Ok(Answer::Exit(code)) => Ok(Some(ExitCode::from(code))),
        Ok(Answer::Retry) => Ok(None),
        // The holder went away mid-command (killed, or crashed).
        Err(WireError::Closed | WireError::Io(_)) => anyhow::bail!(
            "the process that holds {} stopped before the command ended (it may have run: check, then run it again)",
            dir.display()
        ),
        Err(error) => Err(error).with_context(|| {
            format!(
                "reading the answer of the process that holds {}",
                dir.display()
            )
        }),
    }
}
