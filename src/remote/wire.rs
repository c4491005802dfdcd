//! Framing of the node protocol: each message is a 4-byte little-endian length followed by
//! that many bytes of UTF-8 JSON (one object with a `type`). Kept apart from the process
//! handling so the format can be tested (and read) on its own.

use serde_json::Value as Json;
use std::io::{self, Read, Write};

/// The protocol version comfyrs speaks (docs/node-protocol.md).
pub const PROTOCOL_VERSION: u64 = 1;

/// Largest frame either side accepts (a message is JSON; tensors travel as files).
pub const MAX_FRAME: usize = 64 << 20;

/// Writes one message as a frame and flushes it.
pub fn write_frame(w: &mut impl Write, msg: &Json) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::other(format!(
            "message of {} bytes is over the {MAX_FRAME}-byte frame limit",
            body.len()
        )));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one frame. `Ok(None)` at a clean end of stream (the peer closed between frames).
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Json>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let msg: Json = serde_json::from_slice(&body).map_err(|e| {
        let head = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame is not JSON ({e}): {head:?}"),
        )
    })?;
    if !msg.is_object() || !msg["type"].is_string() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a message must be a JSON object with a string \"type\"",
        ));
    }
    Ok(Some(msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &json!({"type": "hello", "id": 1})).unwrap();
        write_frame(&mut buf, &json!({"type": "x", "v": 2.0})).unwrap();
        // {"type":"hello","id":1} is 23 bytes.
        assert_eq!(&buf[..4], &23u32.to_le_bytes());
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).unwrap().unwrap()["id"], 1);
        assert_eq!(read_frame(&mut r).unwrap().unwrap()["v"], 2.0);
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn truncated_oversized_and_untyped_frames_are_errors() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &json!({"type": "hello"})).unwrap();
        let cut = &buf[..buf.len() - 1];
        assert!(read_frame(&mut &cut[..]).is_err());
        let huge = ((MAX_FRAME + 1) as u32).to_le_bytes();
        let e = read_frame(&mut &huge[..]).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        let mut untyped = Vec::new();
        write_frame(&mut untyped, &json!([1, 2])).unwrap();
        let e = read_frame(&mut &untyped[..]).unwrap_err();
        assert!(e.to_string().contains("\"type\""), "{e}");
    }
}
