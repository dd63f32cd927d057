//! The control socket's frames (docs/PROTOCOL.md "Control socket").
//!
//! A frame is `length: u32 BE | kind: u8 | payload`, where `length` counts
//! the kind byte and the payload. The client sends one `REQUEST`; the owner
//! answers with `STDOUT` and `STDERR` frames and ends with one `EXIT`.

use std::io::{Read, Write};
use std::path::Path;

/// The control protocol's version, in every request.
pub const CONTROL_VERSION: u64 = 1;
/// A request: JSON `{"version": 1, "cwd": "/abs", "args": [...]}`.
pub const REQUEST: u8 = 1;
/// Bytes for the client's stdout.
pub const STDOUT: u8 = 2;
/// Bytes for the client's stderr.
pub const STDERR: u8 = 3;
/// The command's exit code (one byte); the last frame.
pub const EXIT: u8 = 4;
/// Instead of any other frame, with no payload: the holder is stopping and
/// did not run the command; the client opens the directory itself.
pub const RETRY: u8 = 5;
/// Largest request payload.
pub const REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Largest output payload in one frame; longer output is split.
pub const OUTPUT_BYTES_MAX: usize = 64 * 1024;
/// Most arguments in a request.
pub const ARGS_MAX: usize = 1024;

/// What can be wrong with a frame or a request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The connection ended (cleanly between frames, or inside one).
    #[error("the connection ended")]
    Closed,
    /// A read or write failed.
    #[error("{0}")]
    Io(String),
    /// A frame's length is zero or over the limit for its direction.
    #[error("a frame of {length} bytes (at most {max})")]
    FrameSize {
        /// The length field.
        length: u64,
        /// The limit.
        max: u64,
    },
    /// A frame of a kind that is not expected here.
    #[error("unexpected frame kind {0}")]
    Kind(u8),
    /// A request that is not the expected JSON object.
    #[error("malformed request: {0}")]
    Request(String),
    /// A request of another control version.
    #[error(
        "the client speaks control version {0} and this process version {CONTROL_VERSION}: use the same peers version"
    )]
    Version(u64),
    /// An exit frame whose payload is not one byte.
    #[error("malformed exit frame")]
    Exit,
}

/// A command sent to the process that holds the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client's working directory (absolute).
    pub cwd: String,
    /// The command line after the program name, as typed.
    pub args: Vec<String>,
}

impl Request {
    /// The request frame's payload.
    pub fn encode(&self) -> Vec<u8> {
        let string = |text: &str| serde_json::Value::from(text).to_string();
        let args: Vec<String> = self.args.iter().map(|arg| string(arg)).collect();
        format!(
            "{{\"version\":{CONTROL_VERSION},\"cwd\":{},\"args\":[{}]}}",
            string(&self.cwd),
            args.join(",")
        )
        .into_bytes()
    }

    /// Decodes a request payload (bounded by [`REQUEST_BYTES_MAX`] before
    /// this is called); typed errors, never a panic.
    pub fn decode(payload: &[u8]) -> Result<Request, WireError> {
        let bad = |what: &str| WireError::Request(what.to_owned());
        let value: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|error| WireError::Request(error.to_string()))?;
        let version = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad("no numeric \"version\""))?;
        if version != CONTROL_VERSION {
            return Err(WireError::Version(version));
        }
        let cwd = value
            .get("cwd")
            .and_then(serde_json::Value::as_str)
            .filter(|cwd| Path::new(cwd).is_absolute())
            .map(str::to_owned)
            .ok_or_else(|| bad("no absolute \"cwd\""))?;
        let args = value
            .get("args")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| bad("no \"args\" array"))?;
        if args.len() > ARGS_MAX {
            return Err(bad("too many arguments"));
        }
        let args = args
            .iter()
            .map(|arg| arg.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| bad("an argument that is not a string"))?;
        Ok(Request { cwd, args })
    }
}

/// Writes one frame.
pub fn write_frame(mut writer: impl Write, kind: u8, payload: &[u8]) -> Result<(), WireError> {
    let length = u32::try_from(payload.len() + 1).map_err(|_| WireError::FrameSize {
        length: payload.len() as u64 + 1,
        max: u64::from(u32::MAX),
    })?;
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.push(kind);
    frame.extend_from_slice(payload);
    writer
        .write_all(&frame)
        .and_then(|()| writer.flush())
        .map_err(|error| WireError::Io(error.to_string()))
}

/// Writes output of any length as frames of `kind` (`STDOUT`/`STDERR`).
pub fn write_output(mut writer: impl Write, kind: u8, bytes: &[u8]) -> Result<(), WireError> {
    for chunk in bytes.chunks(OUTPUT_BYTES_MAX) {
        write_frame(&mut writer, kind, chunk)?;
    }
    Ok(())
}

/// Reads one frame whose payload is at most `max` bytes: `(kind, payload)`.
pub fn read_frame(mut reader: impl Read, max: usize) -> Result<(u8, Vec<u8>), WireError> {
    let mut length = [0u8; 4];
    reader.read_exact(&mut length).map_err(io_or_closed)?;
    let length = u64::from(u32::from_be_bytes(length));
    if length == 0 || length > max as u64 + 1 {
        return Err(WireError::FrameSize {
            length,
            max: max as u64 + 1,
        });
    }
    let mut kind = [0u8; 1];
    reader.read_exact(&mut kind).map_err(io_or_closed)?;
    // Bounded by `max` above; read_to_end on a `take` grows as bytes come.
    let mut payload = Vec::new();
    reader
        .take(length - 1)
        .read_to_end(&mut payload)
        .map_err(io_or_closed)?;
    if payload.len() as u64 != length - 1 {
        return Err(WireError::Closed);
    }
    Ok((kind[0], payload))
}

fn io_or_closed(error: std::io::Error) -> WireError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        WireError::Closed
    } else {
        WireError::Io(error.to_string())
    }
}

/// How the holder answered a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// It ran the command, which exited with this code.
    Exit(u8),
    /// It is stopping and did not run the command.
    Retry,
}

/// Reads the holder's answer frames until `EXIT` (or a first `RETRY`),
/// handing each output frame to `output(kind, bytes)`.
pub fn read_answer(
    mut reader: impl Read,
    mut output: impl FnMut(u8, &[u8]),
) -> Result<Answer, WireError> {
    let mut first = true;
    loop {
        let (kind, payload) = read_frame(&mut reader, OUTPUT_BYTES_MAX)?;
        match kind {
            STDOUT | STDERR => output(kind, &payload),
            EXIT => {
                return match payload[..] {
                    [code] => Ok(Answer::Exit(code)),
                    _ => Err(WireError::Exit),
                };
            }
            RETRY if first && payload.is_empty() => return Ok(Answer::Retry),
            other => return Err(WireError::Kind(other)),
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_and_frames_have_the_documented_bytes() {
        let request = Request {
            cwd: "/home/ada".to_owned(),
            args: ["--db", "notes", "scan", "notes"]
                .map(str::to_owned)
                .to_vec(),
        };
        let mut bytes = Vec::new();
        write_frame(&mut bytes, REQUEST, &request.encode()).expect("to a Vec");
        // docs/PROTOCOL.md "Control socket": the example request, byte for byte.
        let payload = br#"{"version":1,"cwd":"/home/ada","args":["--db","notes","scan","notes"]}"#;
        let mut expected = vec![0, 0, 0, 0x47, REQUEST];
        expected.extend_from_slice(payload);
        assert_eq!(bytes, expected);
        let (kind, payload) = read_frame(&bytes[..], REQUEST_BYTES_MAX).expect("one frame");
        assert_eq!(kind, REQUEST);
        assert_eq!(Request::decode(&payload), Ok(request));
    }

    #[test]
    fn hostile_frames_and_requests_are_typed_errors() {
        assert_eq!(read_frame(&[][..], 10), Err(WireError::Closed));
        assert_eq!(
            read_frame(&[0, 0, 0, 0][..], 10),
            Err(WireError::FrameSize { length: 0, max: 11 })
        );
        assert_eq!(
            read_frame(&[0xff, 0xff, 0xff, 0xff][..], 10),
            Err(WireError::FrameSize {
                length: u64::from(u32::MAX),
                max: 11
            })
        );
        assert_eq!(
            read_frame(&[0, 0, 0, 3, 1, b'x'][..], 10),
            Err(WireError::Closed)
        );
        for (payload, what) in [
            (&b"not json"[..], "JSON"),
            (br#"{"version":2,"cwd":"/","args":[]}"#, "version"),
            (br#"{"version":1,"cwd":"relative","args":[]}"#, "cwd"),
            (br#"{"version":1,"cwd":"/","args":[1]}"#, "args"),
            (br#"{"version":1,"cwd":"/"}"#, "args"),
        ] {
            assert!(Request::decode(payload).is_err(), "{what}: {payload:?}");
        }
        let mut answer = Vec::new();
        write_output(&mut answer, STDOUT, b"hello\n").expect("to a Vec");
        write_frame(&mut answer, EXIT, &[0, 1]).expect("to a Vec");
        assert_eq!(read_answer(&answer[..], |_, _| {}), Err(WireError::Exit));
        let mut answer = Vec::new();
        write_frame(&mut answer, REQUEST, b"{}").expect("to a Vec");
        assert_eq!(
            read_answer(&answer[..], |_, _| {}),
            Err(WireError::Kind(REQUEST))
        );
    }

    #[test]
    fn long_output_is_split_and_reassembled() {
        let long = vec![b'x'; OUTPUT_BYTES_MAX * 2 + 7];
        let mut answer = Vec::new();
        write_output(&mut answer, STDOUT, &long).expect("to a Vec");
        write_frame(&mut answer, EXIT, &[3]).expect("to a Vec");
        let mut seen = Vec::new();
        let code = read_answer(&answer[..], |kind, bytes| {
            assert_eq!(kind, STDOUT);
            seen.extend_from_slice(bytes);
        });
        assert_eq!(code, Ok(Answer::Exit(3)));
        let mut retry = Vec::new();
        write_frame(&mut retry, RETRY, &[]).expect("to a Vec");
        assert_eq!(read_answer(&retry[..], |_, _| {}), Ok(Answer::Retry));
        let mut late = Vec::new();
        write_output(&mut late, STDOUT, b"x").expect("to a Vec");
        write_frame(&mut late, RETRY, &[]).expect("to a Vec");
        assert_eq!(
            read_answer(&late[..], |_, _| {}),
            Err(WireError::Kind(RETRY)),
            "a retry after output would run the command twice"
        );
        assert_eq!(seen, long);
    }
}
