//! Server-Sent Events: blocks of `event:` and `data:` lines ended by a blank line. Comments
//! (`:`) and unknown fields are skipped; several `data:` lines join with `\n`.

use crate::lines::lines;
use futures_util::{Stream, StreamExt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name; `message` when absent.
    pub event: String,
    pub data: String,
}

/// Parses a chunked byte stream into events. A stream that ends mid-event drops the partial
/// event; transport errors are passed through as `Err`.
pub fn events<S, E>(body: S) -> impl Stream<Item = Result<SseEvent, String>>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    futures_util::stream::unfold(
        (Box::pin(lines(body)), None::<String>, Vec::<String>::new()),
        |(mut lines, mut name, mut data)| async move {
            loop {
                match lines.next().await? {
                    Err(e) => return Some((Err(e), (lines, None, Vec::new()))),
                    Ok(line) if line.is_empty() => {
                        if data.is_empty() && name.is_none() {
                            continue;
                        }
                        let event = SseEvent {
                            event: name.take().unwrap_or_else(|| "message".into()),
                            data: data.join("\n"),
                        };
                        return Some((Ok(event), (lines, None, Vec::new())));
                    }
                    Ok(line) => {
                        if line.starts_with(':') {
                            continue;
                        }
                        let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "event" => name = Some(value.to_owned()),
                            "data" => data.push(value.to_owned()),
                            _ => {}
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_split_named_and_joined() {
        let chunks: Vec<Result<bytes::Bytes, String>> = vec![
            Ok(": comment\nevent: delta\ndata: {\"a\"".into()),
            Ok(":1}\n\ndata: one\ndata: two\n\nevent: done\ndata: x\n\nevent: cut\ndata: y".into()),
        ];
        let got: Vec<SseEvent> = events(futures_util::stream::iter(chunks))
            .map(|e| e.unwrap())
            .collect()
            .await;
        assert_eq!(
            got,
            vec![
                SseEvent {
                    event: "delta".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: "message".into(),
                    data: "one\ntwo".into()
                },
                SseEvent {
                    event: "done".into(),
                    data: "x".into()
                },
            ]
        );
    }
}
