//! Reading a request body whole, within a size limit.
//!
//! Every model request is read completely before it is answered: the
//! simulator needs the JSON, and `drop`/`hang` are defined as "read it,
//! then misbehave". A body that arrives in one frame (the usual case) is
//! kept as is, without copying.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body::Body;
use http_body_util::BodyExt;

/// Largest model request body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Largest control request body accepted.
pub(crate) const MAX_CONTROL_BODY_BYTES: usize = 64 * 1024;

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// Over the limit (announced or actual).
    TooLarge,
    /// The connection failed mid-body: the client went away.
    Broken,
}

/// Reads `body` whole, refusing more than `limit` bytes.
pub(crate) async fn read<B>(
    mut body: B,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
{
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut whole = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| ReadError::Broken)?.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(ReadError::TooLarge);
        }
        if let Some(buf) = joined.as_mut() {
            buf.extend_from_slice(&data);
        } else if whole.is_empty() {
            whole = data;
        } else {
            let expected = announced
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(total);
            let mut buf = BytesMut::with_capacity(expected.max(total));
            buf.extend_from_slice(&whole);
            buf.extend_from_slice(&data);
            joined = Some(buf);
        }
    }
    Ok(joined.map_or(whole, BytesMut::freeze))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::stream;
    use http_body::Frame;
    use http_body_util::{Full, StreamBody};

    use super::*;

    type Frames = stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

    fn chunked(parts: &[&'static str]) -> StreamBody<Frames> {
        let frames: Vec<_> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(stream::iter(frames))
    }

    #[tokio::test]
    async fn single_and_multi_frame_bodies() {
        let none = HeaderMap::new();
        assert_eq!(
            read(Full::new(Bytes::from_static(b"abc")), &none, 10)
                .await
                .unwrap(),
            "abc"
        );
        assert_eq!(
            read(chunked(&["ab", "", "cd", "e"]), &none, 10)
                .await
                .unwrap(),
            "abcde"
        );
        assert_eq!(read(chunked(&[]), &none, 10).await.unwrap(), "");
    }

    #[tokio::test]
    async fn limits_apply_to_announced_and_actual_sizes() {
        let none = HeaderMap::new();
        assert_eq!(
            read(chunked(&["abcdef", "ghijkl"]), &none, 10).await,
            Err(ReadError::TooLarge)
        );
        let mut announced = HeaderMap::new();
        announced.insert(CONTENT_LENGTH, http::HeaderValue::from_static("11"));
        assert_eq!(
            read(chunked(&["a"]), &announced, 10).await,
            Err(ReadError::TooLarge)
        );
    }
}
