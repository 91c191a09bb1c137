//! STOMP 1.2 frames: header escaping, encoding a client frame, and decoding what a
//! broker sends (bounded: a frame over [`MAX_FRAME`] is an error, not a buffer that
//! grows). Spec: <https://stomp.github.io/stomp-specification-1.2.html>.

/// Largest frame accepted from a broker (receipts and errors are small).
const MAX_FRAME: usize = 64 * 1024;

/// One frame read from the broker.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// `CONNECTED`, `RECEIPT`, `ERROR`, ...
    pub command: String,
    /// Headers, unescaped, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Frame {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn error_text(&self) -> String {
        let message = self.header("message").unwrap_or("no message");
        let body = String::from_utf8_lossy(&self.body);
        let body = body.trim();
        if body.is_empty() {
            message.to_owned()
        } else {
            format!("{message}: {}", body.chars().take(300).collect::<String>())
        }
    }
}

/// Escapes a header value (STOMP 1.2; not used in CONNECT frames).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            ':' => out.push_str("\\c"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`escape`]; an undefined escape is a protocol error.
pub fn unescape(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('c') => out.push(':'),
            other => {
                return Err(format!(
                    "undefined escape \\{}",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        }
    }
    Ok(out)
}

/// Encodes a frame. `escape_headers` is false only for CONNECT.
pub fn encode(
    command: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    escape_headers: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 256);
    out.extend_from_slice(command.as_bytes());
    out.push(b'\n');
    for (k, v) in headers {
        if escape_headers {
            out.extend_from_slice(escape(k).as_bytes());
            out.push(b':');
            out.extend_from_slice(escape(v).as_bytes());
        } else {
            out.extend_from_slice(k.as_bytes());
            out.push(b':');
            out.extend_from_slice(v.as_bytes());
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(0);
    out
}

/// Parses one frame from the front of `buf`; `Ok(None)` when more bytes are needed.
/// Returns the frame and how many bytes it used (heart-beat EOLs before it included).
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    let mut start = 0;
    while start < buf.len() && (buf[start] == b'\n' || buf[start] == b'\r') {
        start += 1;
    }
    let rest = &buf[start..];
    let Some(head_end) = rest
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| (p, p + 2))
        .or_else(|| {
            rest.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| (p, p + 4))
        })
    else {
        if rest.len() > MAX_FRAME {
            return Err("frame header too large".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&rest[..head_end.0])
        .map_err(|_| "frame header is not UTF-8".to_owned())?;
    let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
    let command = lines.next().unwrap_or_default().to_owned();
    let escaped = command != "CONNECTED";
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed header line {line:?}"))?;
        let (k, v) = if escaped {
            (unescape(k)?, unescape(v)?)
        } else {
            (k.to_owned(), v.to_owned())
        };
        headers.push((k, v));
    }
    let body_start = head_end.1;
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| {
            v.parse::<usize>()
                .map_err(|_| "bad content-length".to_owned())
        })
        .transpose()?;
    let (body, used) = match length {
        Some(n) => {
            if n > MAX_FRAME {
                return Err("frame body too large".into());
            }
            if rest.len() < body_start + n + 1 {
                return Ok(None);
            }
            if rest[body_start + n] != 0 {
                return Err("frame not terminated by NUL".into());
            }
            (
                rest[body_start..body_start + n].to_vec(),
                body_start + n + 1,
            )
        }
        None => match rest[body_start..].iter().position(|b| *b == 0) {
            Some(p) => (
                rest[body_start..body_start + p].to_vec(),
                body_start + p + 1,
            ),
            None if rest.len() > MAX_FRAME => return Err("frame body too large".into()),
            None => return Ok(None),
        },
    };
    Ok(Some((
        Frame {
            command,
            headers,
            body,
        },
        start + used,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_frame_is_encoded_with_escaped_headers_and_a_nul() {
        let f = encode("SEND", &[("destination", "/queue/a:b")], b"{}", true);
        assert_eq!(f, b"SEND\ndestination:/queue/a\\cb\n\n{}\0".to_vec());
        let c = encode("CONNECT", &[("passcode", "p:w")], b"", false);
        assert_eq!(c, b"CONNECT\npasscode:p:w\n\n\0".to_vec());
    }

    #[test]
    fn frames_are_decoded_across_heartbeats_partial_reads_and_lengths() {
        let bytes =
            b"\n\nRECEIPT\nreceipt-id:r\\c1\n\n\0ERROR\ncontent-length:3\nmessage:bad\n\na\0b\0";
        let (first, used) = decode(bytes).expect("ok").expect("frame");
        assert_eq!(first.command, "RECEIPT");
        assert_eq!(first.header("receipt-id"), Some("r:1"));
        let (second, used2) = decode(&bytes[used..]).expect("ok").expect("frame");
        assert_eq!(second.command, "ERROR");
        assert_eq!(second.body, b"a\0b");
        assert_eq!(used + used2, bytes.len());
        assert_eq!(decode(b"RECEIPT\nreceipt-id:1\n").expect("ok"), None);
        assert_eq!(decode(b"RECEIPT\n\nno-nul-yet").expect("ok"), None);
        let crlf = b"CONNECTED\r\nversion:1.2\r\n\r\n\0";
        assert_eq!(
            decode(crlf)
                .expect("ok")
                .expect("frame")
                .0
                .header("version"),
            Some("1.2")
        );
    }

    #[test]
    fn hostile_frames_are_refused_not_buffered_forever() {
        let huge = vec![b'a'; MAX_FRAME + 10];
        assert!(decode(&huge).is_err());
        assert!(decode(b"RECEIPT\nbroken-header\n\n\0").is_err());
        assert!(decode(b"ERROR\ncontent-length:2\n\nabc").is_err());
    }
}
