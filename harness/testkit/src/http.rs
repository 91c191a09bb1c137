//! One HTTP/1.1 request read off a connection by hand: its head, then as many bytes of
//! body as its `Content-Length` says, both bounded. For the loopback peers of tests
//! and harnesses that need a request as it came over the wire (a webhook receiver
//! injecting faults, a proxy in front of moto, the bench's receiver), where a server
//! framework would hide or cost what they look at. Herald's clients and the AWS SDK
//! send `Content-Length`; a chunked body is refused.

use std::fmt;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest head read by default (request line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// The longest body read by default.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// One request, as it lies in the reader's buffer (nothing is copied): its head as
/// text (up to and with the blank line) and its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The request line and headers, `\r\n`-separated, ending with `\r\n\r\n`.
    pub head: &'a str,
    /// `Content-Length` bytes of body.
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The method (`POST`).
    pub fn method(&self) -> &'a str {
        self.head.split(' ').next().unwrap_or_default()
    }

    /// The request target (`/hook?x=1`).
    pub fn path(&self) -> &'a str {
        self.head
            .lines()
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .unwrap_or_default()
    }

    /// The first header named `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        header(self.head, name)
    }

    /// The whole request as text (the body lossily): for tests that look for a word.
    pub fn text(&self) -> String {
        format!("{}{}", self.head, String::from_utf8_lossy(self.body))
    }
}

/// The first header of `head` named `name` (any case), trimmed.
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    // `lines()` finds each line end with memchr; a two-byte pattern would search slower.
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// Reading from the connection failed.
    Io(std::io::Error),
    /// The connection ended part-way through a request.
    Truncated {
        /// Bytes of the request read when it ended.
        read: usize,
    },
    /// No blank line within the head's limit.
    HeadTooLong {
        /// The limit.
        limit: usize,
    },
    /// `Content-Length` names more than the body's limit.
    BodyTooLong {
        /// What the request said.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// `Content-Length` is not a number.
    BadLength(String),
    /// The body is chunked (`Transfer-Encoding`), which this reader does not read.
    Chunked,
    /// The head is not text (UTF-8).
    NotText,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "reading the request: {e}"),
            Self::Truncated { read } => {
                write!(f, "the connection ended {read} bytes into a request")
            }
            Self::HeadTooLong { limit } => {
                write!(f, "no end of the request's head within {limit} bytes")
            }
            Self::BodyTooLong { length, limit } => write!(
                f,
                "the request's content-length {length} is over the limit of {limit} bytes"
            ),
            Self::BadLength(v) => write!(f, "the request's content-length {v:?} is not a number"),
            Self::Chunked => write!(f, "the request's body is chunked; send content-length"),
            Self::NotText => write!(f, "the request's head is not UTF-8 text"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Reads the requests of one connection, one after another: what was read past one
/// request (a pipelined next one) is kept for the next read.
#[derive(Debug)]
pub struct RequestReader {
    buf: Vec<u8>,
    /// Bytes at the buffer's start that belong to the request last returned.
    used: usize,
    max_head: usize,
    max_body: usize,
}

impl Default for RequestReader {
    fn default() -> Self {
        Self::with_limits(MAX_HEAD, MAX_BODY)
    }
}

/// How much room each read asks for.
const READ_SIZE: usize = 64 * 1024;

impl RequestReader {
    /// A reader with [`MAX_HEAD`] and [`MAX_BODY`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A reader that refuses heads over `max_head` and bodies over `max_body` bytes.
    pub fn with_limits(max_head: usize, max_body: usize) -> Self {
        Self {
            buf: Vec::new(),
            used: 0,
            max_head,
            max_body,
        }
    }

    /// The next request on `stream`, borrowed from the reader until the next read;
    /// `None` when the connection ended between requests.
    pub async fn read<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Result<Option<Request<'_>>, ReadError> {
        self.buf.drain(..self.used);
        self.used = 0;
        let mut scanned = 0;
        let head_end = loop {
            // Only what arrived since the last look (and the 3 bytes before it) is new.
            if let Some(i) = find(&self.buf[scanned..], b"\r\n\r\n") {
                break scanned + i + 4;
            }
            if self.buf.len() > self.max_head {
                return Err(ReadError::HeadTooLong {
                    limit: self.max_head,
                });
            }
            scanned = self.buf.len().saturating_sub(3);
            if self.fill(stream).await? == 0 {
                return match self.buf.len() {
                    0 => Ok(None),
                    read => Err(ReadError::Truncated { read }),
                };
            }
        };
        if head_end > self.max_head {
            return Err(ReadError::HeadTooLong {
                limit: self.max_head,
            });
        }
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| ReadError::NotText)?;
        let mut length = 0;
        for line in head.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let value = value.trim();
                length = value
                    .parse()
                    .map_err(|_| ReadError::BadLength(value.to_owned()))?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(ReadError::Chunked);
            }
        }
        if length > self.max_body {
            return Err(ReadError::BodyTooLong {
                length,
                limit: self.max_body,
            });
        }
        let end = head_end + length;
        while self.buf.len() < end {
            if self.fill(stream).await? == 0 {
                return Err(ReadError::Truncated {
                    read: self.buf.len(),
                });
            }
        }
        self.used = end;
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| ReadError::NotText)?;
        Ok(Some(Request {
            head,
            body: &self.buf[head_end..end],
        }))
    }

    /// Reads what `stream` has into the buffer; how much (0 at its end).
    async fn fill<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<usize, ReadError> {
        self.buf.reserve(READ_SIZE);
        stream.read_buf(&mut self.buf).await.map_err(ReadError::Io)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every request `bytes` holds (given `chunk` bytes at a time), then what
    /// ends the reading.
    async fn read_all(
        reader: &mut RequestReader,
        bytes: &[u8],
        chunk: usize,
    ) -> (
        Vec<(String, String, Vec<u8>, Option<String>)>,
        Option<String>,
    ) {
        let mut stream = in_chunks(bytes, chunk);
        let mut requests = Vec::new();
        loop {
            match reader.read(&mut stream).await {
                Ok(Some(r)) => requests.push((
                    r.method().to_owned(),
                    r.path().to_owned(),
                    r.body.to_vec(),
                    r.header("x-amz-target").map(str::to_owned),
                )),
                Ok(None) => return (requests, None),
                Err(e) => return (requests, Some(e.to_string())),
            }
        }
    }

    /// A stream that yields `bytes` `chunk` at a time, then ends.
    fn in_chunks(bytes: &[u8], chunk: usize) -> impl AsyncRead + Unpin {
        let chunks: Vec<Vec<u8>> = bytes.chunks(chunk).map(<[u8]>::to_vec).collect();
        Chunks(chunks.into_iter().rev().collect())
    }

    struct Chunks(Vec<Vec<u8>>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if let Some(mut next) = self.0.pop() {
                let n = next.len().min(buf.remaining());
                buf.put_slice(&next[..n]);
                if n < next.len() {
                    self.0.push(next.split_off(n));
                }
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    const TWO: &[u8] = b"POST /hook?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Amz-Target: AmazonSQS.SendMessage\r\n\r\nhelloGET /count HTTP/1.1\r\nhost: a\r\n\r\n";

    #[tokio::test]
    async fn two_pipelined_requests_are_read_one_after_the_other_whatever_the_chunks() {
        for chunk in [1, 3, 7, 64, 4096] {
            let (requests, end) = read_all(&mut RequestReader::new(), TWO, chunk).await;
            assert_eq!(end, None, "chunks of {chunk}");
            assert_eq!(requests.len(), 2, "chunks of {chunk}");
            assert_eq!(
                requests,
                [
                    (
                        "POST".to_owned(),
                        "/hook?x=1".to_owned(),
                        b"hello".to_vec(),
                        Some("AmazonSQS.SendMessage".to_owned())
                    ),
                    ("GET".to_owned(), "/count".to_owned(), Vec::new(), None),
                ],
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn a_header_is_found_by_its_name_in_any_case_and_trimmed() {
        let request = Request {
            head: "POST /hook HTTP/1.1\r\nHost:  a \r\ncontent-length: 5\r\n\r\n",
            body: b"hello",
        };
        assert_eq!(request.header("host"), Some("a"));
        assert_eq!(request.header("Content-Length"), Some("5"));
        assert_eq!(request.header("x-amz-target"), None);
        assert_eq!(
            request.text(),
            "POST /hook HTTP/1.1\r\nHost:  a \r\ncontent-length: 5\r\n\r\nhello"
        );
    }

    #[tokio::test]
    async fn a_connection_that_ends_part_way_through_a_request_is_a_truncated_request() {
        let (requests, end) = read_all(&mut RequestReader::new(), &TWO[..90], 16).await;
        assert_eq!(requests, []);
        assert_eq!(
            end.as_deref(),
            Some("the connection ended 90 bytes into a request")
        );
    }

    #[tokio::test]
    async fn a_head_or_a_body_over_its_limit_is_refused_with_the_limit() {
        let (_, end) = read_all(&mut RequestReader::with_limits(32, 1024), TWO, 8).await;
        assert_eq!(
            end.as_deref(),
            Some("no end of the request's head within 32 bytes")
        );
        let (_, end) = read_all(&mut RequestReader::with_limits(1024, 4), TWO, 8).await;
        assert_eq!(
            end.as_deref(),
            Some("the request's content-length 5 is over the limit of 4 bytes")
        );
    }

    #[tokio::test]
    async fn a_length_that_is_not_a_number_or_a_chunked_body_is_refused() {
        let bad = b"POST / HTTP/1.1\r\ncontent-length: 5x\r\n\r\nhello";
        let (_, end) = read_all(&mut RequestReader::new(), bad, 64).await;
        assert_eq!(
            end.as_deref(),
            Some("the request's content-length \"5x\" is not a number")
        );
        let chunked =
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let (_, end) = read_all(&mut RequestReader::new(), chunked, 64).await;
        assert_eq!(
            end.as_deref(),
            Some("the request's body is chunked; send content-length")
        );
    }
}
