//! Splitting a byte stream into lines, for SSE and NDJSON streams.

use bytes::{Buf, BytesMut};
use futures_util::{Stream, StreamExt};

/// The longest line accepted from a backend; a longer one is a broken stream.
const MAX_LINE: usize = 4 * 1024 * 1024;

/// Yields complete lines (without the newline, `\r` trimmed) from a chunked byte stream.
pub fn lines<S, E>(body: S) -> impl Stream<Item = Result<String, String>>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    futures_util::stream::unfold(
        (body, BytesMut::new(), false),
        |(mut body, mut buf, mut done)| async move {
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line = buf.split_to(pos);
                    buf.advance(1);
                    let text = String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_owned();
                    return Some((Ok(text), (body, buf, done)));
                }
                if done {
                    if buf.is_empty() {
                        return None;
                    }
                    let text = String::from_utf8_lossy(&buf)
                        .trim_end_matches('\r')
                        .to_owned();
                    buf.clear();
                    return Some((Ok(text), (body, buf, done)));
                }
                match body.next().await {
                    Some(Ok(chunk)) => {
                        buf.extend_from_slice(&chunk);
                        if buf.len() > MAX_LINE {
                            return Some((
                                Err("line too long".into()),
                                (body, BytesMut::new(), true),
                            ));
                        }
                    }
                    Some(Err(e)) => {
                        return Some((Err(e.to_string()), (body, BytesMut::new(), true)));
                    }
                    None => done = true,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_span_chunks_and_flush_the_tail() {
        let chunks: Vec<Result<bytes::Bytes, String>> = vec![
            Ok("data: a\r\nda".into()),
            Ok("ta: b\n\n".into()),
            Ok("tail".into()),
        ];
        let got: Vec<_> = lines(futures_util::stream::iter(chunks))
            .map(|l| l.unwrap())
            .collect()
            .await;
        assert_eq!(got, vec!["data: a", "data: b", "", "tail"]);
    }
}
