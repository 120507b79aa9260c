//! A lean HTTP/1.1 client for whole-JSON `POST`s to a server on this machine over plain
//! `http://`: the request is written and its answer read by the task that makes the call, on a
//! pooled keep-alive connection.
//!
//! Why: on a hot path the general client (reqwest over hyper) is costly for such a call: the
//! URL parsed several times, redirect and retry layers, a header map, and a hop to a connection
//! task and back, which on a loaded machine is a thread wake-up each way (see BENCHMARKS.md).
//! The node uses it to call a local backend, the client SDK to send CALLs to a local node;
//! streams, TLS, remote servers and URLs with credentials keep using reqwest.
//!
//! Only loopback servers qualify: for them a proxy (which reqwest would take from the
//! environment) is never wanted.
//!
//! Connections: at most [`MAX_IDLE`] idle ones are kept, each for at most [`IDLE_TIMEOUT`]. A
//! connection goes back to the pool only after a complete answer that allows keep-alive; a call
//! that is cancelled (a deadline) drops its connection. A pooled connection the server closed
//! meanwhile is detected before use, and a request that finds its reused connection closed
//! before any byte of an answer is sent once more on a fresh one.

#![forbid(unsafe_code)]

use parking_lot::Mutex;
use std::io;
use std::thread::ThreadId;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_IDLE: usize = 64;
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 256 << 20;

/// A finished exchange: the status, the head and the whole (de-chunked) body.
pub struct Reply {
    pub status: u16,
    /// The status line and header lines, kept whole: most callers read no header, and
    /// splitting them up front would cost an allocation per name and value.
    head: Vec<u8>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The headers as received (name, value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        // The head was checked to be UTF-8 when it was parsed.
        let head = std::str::from_utf8(&self.head).unwrap_or_default();
        head.split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(name, _)| !name.is_empty())
            .map(|(name, value)| (name, value.trim()))
    }
}

/// The pooled connections to one origin.
pub struct H1 {
    /// What is connected to (an IP literal or `localhost`).
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// Oldest first. A connection is reused only by the thread that last used it: on a
    /// runtime per thread that keeps its I/O on the thread that polls it.
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    stream: TcpStream,
    since: Instant,
    thread: ThreadId,
}

/// Why an exchange failed, and whether it may be sent again on a fresh connection.
struct Failed {
    error: io::Error,
    /// Nothing of an answer arrived: the backend closed a reused connection.
    retry: bool,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A header value reqwest would accept (visible ASCII, spaces, tabs; no CR or LF).
fn valid_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

impl H1 {
    /// A client for `url` when it is plain HTTP to this machine without credentials.
    pub fn for_url(url: &url::Url) -> Option<H1> {
        if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = match url.host()? {
            url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => "localhost".to_owned(),
            url::Host::Domain(_) => return None,
            url::Host::Ipv4(ip) if ip.is_loopback() => ip.to_string(),
            url::Host::Ipv6(ip) if ip.is_loopback() => ip.to_string(),
            _ => return None,
        };
        let port = url.port_or_known_default()?;
        let name = url.host_str()?;
        let authority = match url.port() {
            Some(p) => format!("{name}:{p}"),
            None => name.to_owned(),
        };
        Some(H1 {
            host,
            port,
            authority,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// `POST target` with a JSON body and extra headers; the answer whatever its status.
    pub async fn post_json(
        &self,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Reply> {
        let mut request = Vec::with_capacity(256 + body.len());
        request.extend_from_slice(b"POST ");
        request.extend_from_slice(target.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        request.extend_from_slice(self.authority.as_bytes());
        request.extend_from_slice(
            b"\r\ncontent-type: application/json\r\naccept: */*\r\ncontent-length: ",
        );
        request.extend_from_slice(body.len().to_string().as_bytes());
        request.extend_from_slice(b"\r\n");
        for (name, value) in headers {
            if !valid_value(value) {
                return Err(bad(&format!("invalid value for the {name} header")));
            }
            request.extend_from_slice(name.as_bytes());
            request.extend_from_slice(b": ");
            request.extend_from_slice(value.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);

        if let Some(stream) = self.pooled() {
            match exchange(stream, &request).await {
                Ok((reply, stream)) => return Ok(self.finish(reply, stream)),
                Err(f) if f.retry => {}
                Err(f) => return Err(f.error),
            }
        }
        let stream = self.connect().await?;
        match exchange(stream, &request).await {
            Ok((reply, stream)) => Ok(self.finish(reply, stream)),
            Err(f) => Err(f.error),
        }
    }

    fn finish(&self, reply: Reply, stream: Option<TcpStream>) -> Reply {
        if let Some(stream) = stream {
            let mut idle = self.idle.lock();
            if idle.len() >= MAX_IDLE {
                idle.remove(0);
            }
            idle.push(Idle {
                stream,
                since: Instant::now(),
                thread: std::thread::current().id(),
            });
        }
        reply
    }

    /// This thread's most recently used idle connection that is still open.
    fn pooled(&self) -> Option<TcpStream> {
        let here = std::thread::current().id();
        let mut idle = self.idle.lock();
        while let Some(at) = idle.iter().rposition(|c| c.thread == here) {
            let Idle { stream, since, .. } = idle.remove(at);
            if since.elapsed() >= IDLE_TIMEOUT {
                continue;
            }
            // An idle connection has nothing to read: EOF or stray bytes mean it is unusable.
            let mut probe = [0u8; 1];
            match stream.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(stream),
                _ => continue,
            }
        }
        None
    }

    async fn connect(&self) -> io::Result<TcpStream> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Sends `request` and reads one whole answer; gives the connection back when it may be reused.
async fn exchange(
    mut stream: TcpStream,
    request: &[u8],
) -> Result<(Reply, Option<TcpStream>), Failed> {
    if let Err(error) = stream.write_all(request).await {
        return Err(Failed { error, retry: true });
    }
    // Small enough for the allocator's per-thread cache (most answers are a few hundred
    // bytes); grown as needed, exactly when the length is announced.
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    // The head; interim 1xx answers are skipped.
    let (head, head_end) = loop {
        let head_end = loop {
            if let Some(pos) = find(&buf, b"\r\n\r\n") {
                break pos + 4;
            }
            if buf.len() > MAX_HEAD {
                return Err(Failed {
                    error: bad("answer head too large"),
                    retry: false,
                });
            }
            let fresh = buf.is_empty();
            match read_more(&mut stream, &mut buf).await {
                Ok(0) => {
                    return Err(Failed {
                        error: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed before an answer",
                        ),
                        retry: fresh,
                    })
                }
                Ok(_) => {}
                Err(error) => {
                    let retry = fresh
                        && matches!(
                            error.kind(),
                            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                        );
                    return Err(Failed { error, retry });
                }
            }
        };
        let head = parse_head(&buf[..head_end]).map_err(|error| Failed {
            error,
            retry: false,
        })?;
        if (100..200).contains(&head.status) {
            buf.drain(..head_end);
            continue;
        }
        break (head, head_end);
    };
    let Head {
        status,
        framing,
        keep_alive,
    } = head;
    let head = buf[..head_end].to_vec();
    let failed = |error| Failed {
        error,
        retry: false,
    };
    let eof = || {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed inside a body",
        )
    };
    let (body, reusable) = match framing {
        Framing::Length(n) => {
            if n > MAX_BODY {
                return Err(failed(bad("answer too large")));
            }
            buf.reserve((head_end + n).saturating_sub(buf.len()));
            while buf.len() < head_end + n {
                if read_more(&mut stream, &mut buf).await.map_err(failed)? == 0 {
                    return Err(failed(eof()));
                }
            }
            buf.truncate(head_end + n);
            buf.drain(..head_end);
            (buf, keep_alive)
        }
        Framing::Chunked => {
            let mut body = Vec::new();
            let mut at = head_end;
            loop {
                match dechunk(&buf, &mut at, &mut body).map_err(failed)? {
                    Some(end) => {
                        // Bytes after the last chunk would belong to no request.
                        let clean = end == buf.len();
                        break (body, keep_alive && clean);
                    }
                    None => {
                        // Keep only what is not decoded yet.
                        buf.drain(head_end..at);
                        at = head_end;
                        if buf.len() - head_end > MAX_BODY + MAX_HEAD {
                            return Err(failed(bad("answer too large")));
                        }
                        if read_more(&mut stream, &mut buf).await.map_err(failed)? == 0 {
                            return Err(failed(eof()));
                        }
                    }
                }
            }
        }
        Framing::UntilClose => {
            while read_more(&mut stream, &mut buf).await.map_err(failed)? > 0 {
                if buf.len() - head_end > MAX_BODY {
                    return Err(failed(bad("answer too large")));
                }
            }
            buf.drain(..head_end);
            (buf, false)
        }
    };
    let stream = reusable.then_some(stream);
    let reply = Reply { status, head, body };
    Ok((reply, stream))
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    // Grown only when (nearly) full, so an exact reservation for an announced length holds.
    if buf.capacity() - buf.len() < 64 {
        buf.reserve(buf.len().max(4096));
    }
    stream.read_buf(buf).await
}

struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

/// An answer head (status line and headers, CRLF CRLF).
fn parse_head(head: &[u8]) -> io::Result<Head> {
    let head = std::str::from_utf8(head).map_err(|_| bad("answer head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not an HTTP/1 answer"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| bad("bad status line"))?;
    let mut keep_alive = version != "HTTP/1.0";
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| bad("bad content-length"))?;
            if length.is_some_and(|m| m != n) {
                return Err(bad("conflicting content-length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                return Err(bad("unsupported transfer-encoding"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = if status == 204 || status == 304 {
        Framing::Length(0)
    } else if chunked {
        // A length beside chunked encoding is ignored (RFC 9112 §6.3) and the connection is
        // not trusted afterwards.
        if length.is_some() {
            keep_alive = false;
        }
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Head {
        status,
        framing,
        keep_alive,
    })
}

/// Decodes the complete chunks of a chunked body from `data[*at..]` into `out`, advancing `at`
/// past them; `Ok(None)` when more bytes are needed, else the offset just past the body
/// (trailers included). Called again with more data, it goes on where it stopped.
fn dechunk(data: &[u8], at: &mut usize, out: &mut Vec<u8>) -> io::Result<Option<usize>> {
    loop {
        let Some(eol) = find(&data[*at..], b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&data[*at..*at + eol])
            .map_err(|_| bad("bad chunk size"))?
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        let start = *at + eol + 2;
        if size == 0 {
            // Trailers, then an empty line.
            let mut end = start;
            loop {
                let Some(eol) = find(&data[end..], b"\r\n") else {
                    return Ok(None);
                };
                end += eol + 2;
                if eol == 0 {
                    *at = end;
                    return Ok(Some(end));
                }
            }
        }
        if size > MAX_BODY || out.len() + size > MAX_BODY {
            return Err(bad("answer too large"));
        }
        if data.len() < start + size + 2 {
            return Ok(None);
        }
        if &data[start + size..start + size + 2] != b"\r\n" {
            return Err(bad("bad chunk"));
        }
        out.extend_from_slice(&data[start..start + size]);
        *at = start + size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_to_this_machine_without_credentials() {
        let h = |u: &str| H1::for_url(&url::Url::parse(u).unwrap()).map(|h| h.authority);
        assert_eq!(
            h("http://127.0.0.1:8080/v1/x").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(h("http://localhost/v1/x").as_deref(), Some("localhost"));
        assert_eq!(h("http://[::1]:11434/x").as_deref(), Some("[::1]:11434"));
        assert!(h("https://127.0.0.1:8080/x").is_none());
        assert!(h("http://10.0.0.5:8080/x").is_none());
        assert!(h("http://gpu.example:8080/x").is_none());
        assert!(h("http://user:pw@127.0.0.1:8080/x").is_none());
    }

    #[test]
    fn heads_give_status_framing_and_keep_alive() {
        let h =
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-Iicp: a b\r\n\r\n").unwrap();
        assert!(h.status == 200 && h.keep_alive && matches!(h.framing, Framing::Length(12)));
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert!(!h.keep_alive && matches!(h.framing, Framing::Chunked));
        let h = parse_head(b"HTTP/1.0 404 Not Found\r\n\r\n").unwrap();
        assert!(!h.keep_alive && matches!(h.framing, Framing::UntilClose));
        let h = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert!(matches!(h.framing, Framing::Length(0)));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").is_err());
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .is_err()
        );
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }

    fn dechunk_all(data: &[u8]) -> io::Result<(Option<usize>, Vec<u8>)> {
        let (mut at, mut out) = (0, Vec::new());
        dechunk(data, &mut at, &mut out).map(|end| (end, out))
    }

    #[test]
    fn chunked_bodies_decode_whole_or_ask_for_more() {
        let body = b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            dechunk_all(body).unwrap(),
            (Some(body.len()), b"abcde".to_vec())
        );
        let trailers = b"1\r\na\r\n0\r\nx-t: 1\r\n\r\n";
        assert_eq!(dechunk_all(trailers).unwrap().0, Some(trailers.len()));
        assert_eq!(dechunk_all(b"3\r\nabc\r\n2\r\nd").unwrap().0, None);
        assert_eq!(dechunk_all(b"3\r\nabc\r\n0\r\n").unwrap().0, None);
        assert!(dechunk_all(b"zz\r\n").is_err());
        assert!(dechunk_all(b"1\r\nab\r\n").is_err());
    }

    #[test]
    fn chunked_decoding_resumes_where_it_stopped() {
        let whole = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (mut at, mut out) = (0, Vec::new());
        for cut in [4, 9, 12, 17, whole.len()] {
            let end = dechunk(&whole[..cut], &mut at, &mut out).unwrap();
            assert_eq!(end.is_some(), cut == whole.len(), "cut at {cut}");
        }
        assert_eq!(out, b"abcde");
    }

    fn single_threaded_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A server answering `{}` to every request; counts the connections it accepted.
    async fn counting_server() -> (url::Url, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            let rt = single_threaded_runtime();
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener.into_std().unwrap()).unwrap();
                loop {
                    let (mut conn, _) = listener.accept().await.unwrap();
                    count.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 4096];
                        loop {
                            let n = conn.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                            if conn.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn idle_connections_are_reused_only_by_the_thread_that_used_them() {
        use std::sync::atomic::Ordering;
        let (url, accepted) = counting_server().await;
        let h1 = std::sync::Arc::new(H1::for_url(&url).unwrap());
        let call = |h1: std::sync::Arc<H1>| async move {
            let reply = h1.post_json("/x", &[], b"{}").await.unwrap();
            let headers: Vec<_> = reply.headers().collect();
            assert_eq!(headers, [("content-length", "2")]);
            assert_eq!((reply.status, reply.body), (200, b"{}".to_vec()));
        };
        call(h1.clone()).await;
        call(h1.clone()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "reused on this thread");
        let other = h1.clone();
        std::thread::spawn(move || {
            let rt = single_threaded_runtime();
            rt.block_on(call(other.clone()));
            rt.block_on(call(other));
        })
        .join()
        .unwrap();
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "one more for the other thread"
        );
        call(h1).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn header_values_with_line_breaks_are_refused() {
        assert!(valid_value("00-abc-def-01"));
        assert!(!valid_value("a\r\nx-evil: 1"));
    }
}
