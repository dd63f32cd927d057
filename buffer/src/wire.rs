//! Frames on a TCP stream: `length u32 LE | body`, the body at most
//! [`FRAME_BYTES_MAX`] bytes.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::format::FRAME_BYTES_MAX;

/// Reads a frame's length: `Ok(None)` at a clean end of stream, an error
/// for a length over the limit.
pub(crate) async fn read_length<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<usize>> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_le_bytes(length) as usize;
    if length > FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {length} bytes, over the limit of {FRAME_BYTES_MAX}"),
        ));
    }
    Ok(Some(length))
}

/// Reads a body of `length` bytes (checked by [`read_length`]).
pub(crate) async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    length: usize,
) -> std::io::Result<Vec<u8>> {
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    Ok(body)
}

/// Writes one frame.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &[u8],
) -> std::io::Result<()> {
    let length = u32::try_from(body.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    writer.write_all(&length.to_le_bytes()).await?;
    writer.write_all(body).await?;
    writer.flush().await
}
