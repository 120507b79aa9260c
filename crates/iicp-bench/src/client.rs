//! A minimal HTTP/1.1 keep-alive client: one TCP connection, one request at a time.
//!
//! A load generator sharing two cores with the server must spend as little CPU per request as
//! it can, so requests are pre-formatted bytes and responses are framed by `Content-Length`
//! (or chunked encoding) without building header maps.

use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where requests go: the socket address, the `Host` header and the URL path prefix.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    /// Path of the base URL without a trailing slash (usually empty).
    pub prefix: String,
}

impl Target {
    /// Parses `http://host:port[/prefix]`; only plain HTTP is supported.
    pub fn parse(base: &str) -> Result<Target, String> {
        let url = url::Url::parse(base).map_err(|e| format!("{base}: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!("{base}: only http:// URLs are supported"));
        }
        let host = url
            .host_str()
            .ok_or_else(|| format!("{base}: no host"))?
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .map_err(|e| format!("{base}: {e}"))?
            .next()
            .ok_or_else(|| format!("{base}: does not resolve"))?;
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        Ok(Target {
            addr,
            host: host_header,
            prefix: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// `GET path` as wire bytes.
    pub fn get(&self, path: &str) -> Vec<u8> {
        format!(
            "GET {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
            self.prefix, self.host
        )
        .into_bytes()
    }

    /// `POST path` with a JSON body (and a bearer token when given) as wire bytes.
    pub fn post_json(&self, path: &str, bearer: Option<&str>, body: &[u8]) -> Vec<u8> {
        let auth = bearer
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let mut req = format!(
            "POST {}{path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            self.prefix,
            self.host,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        req
    }
}

/// One response: the status and the (de-chunked) body.
pub struct Response<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

/// A keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Body of the last chunked response, decoded.
    dechunked: Vec<u8>,
    /// The server asked to close after the last response.
    closing: bool,
}

fn protocol(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            dechunked: Vec::new(),
            closing: false,
        })
    }

    /// The server sent `Connection: close`; the caller must reconnect before the next request.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    /// Sends one request and reads its whole response.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<Response<'_>> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let head_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                ));
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| protocol("response head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| protocol("bad status line"))?;
        let mut framing = Framing::UntilClose;
        let mut closing = status_line.starts_with("HTTP/1.0");
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n = value.parse().map_err(|_| protocol("bad Content-Length"))?;
                framing = Framing::Length(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
            {
                framing = Framing::Chunked;
            } else if name.eq_ignore_ascii_case("connection") {
                closing = value.eq_ignore_ascii_case("close");
            }
        }
        if status == 204 || status == 304 || (100..200).contains(&status) {
            framing = Framing::Length(0);
        }
        self.closing = closing;
        match framing {
            Framing::Length(n) => {
                while self.buf.len() < head_end + n {
                    if self.fill().await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed inside a body",
                        ));
                    }
                }
                Ok(Response {
                    status,
                    body: &self.buf[head_end..head_end + n],
                })
            }
            Framing::UntilClose => {
                self.closing = true;
                while self.fill().await? > 0 {}
                Ok(Response {
                    status,
                    body: &self.buf[head_end..],
                })
            }
            Framing::Chunked => {
                while !dechunk(&self.buf[head_end..], &mut self.dechunked)? {
                    if self.fill().await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed inside a chunked body",
                        ));
                    }
                }
                Ok(Response {
                    status,
                    body: &self.dechunked,
                })
            }
        }
    }
}

/// Decodes a complete chunked body into `out`; `Ok(false)` when more bytes are needed.
fn dechunk(mut data: &[u8], out: &mut Vec<u8>) -> io::Result<bool> {
    out.clear();
    loop {
        let Some(eol) = find(data, b"\r\n") else {
            return Ok(false);
        };
        let size_text = std::str::from_utf8(&data[..eol])
            .map_err(|_| protocol("bad chunk size"))?
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| protocol("bad chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            // Trailers end with an empty line.
            return Ok(
                find(data, b"\r\n").is_some_and(|p| p == 0 || find(data, b"\r\n\r\n").is_some())
            );
        }
        if data.len() < size + 2 {
            return Ok(false);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks_complete_and_partial_bodies() {
        let mut out = Vec::new();
        assert!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", &mut out).unwrap());
        assert_eq!(out, b"abcde");
        assert!(!dechunk(b"3\r\nabc\r\n2\r\nd", &mut out).unwrap());
        assert!(!dechunk(b"3\r\nabc\r\n0\r\n", &mut out).unwrap());
    }

    #[test]
    fn parses_targets() {
        let t = Target::parse("http://127.0.0.1:8010/").unwrap();
        assert_eq!(t.host, "127.0.0.1:8010");
        assert_eq!(t.prefix, "");
        assert!(Target::parse("https://example.com").is_err());
    }
}
