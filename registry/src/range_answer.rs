//! Checking a registry's answer to a range request: its `Content-Range` against the
//! range asked for, and the errors that name the request (method and credential-free
//! URL). Shared by whole-range reads, streamed bodies and resumed streams.

use std::ops::Range;

use estargz::Digest;
use reqwest::header::CONTENT_RANGE;
use reqwest::Response;

use crate::error::Error;
use crate::ranges::{parse_content_range, ContentRange};
use crate::transport::Call;

/// The response's parsed `Content-Range` header.
pub(crate) fn content_range(call: &Call<'_>, response: &Response) -> Result<ContentRange, Error> {
    let header = response
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    parse_content_range(header)
        .ok_or_else(|| protocol(call, format!("bad Content-Range {header:?}")))
}

pub(crate) fn check_content_range(
    call: &Call<'_>,
    digest: &Digest,
    range: &Range<u64>,
    response: &Response,
) -> Result<(), Error> {
    let parsed = content_range(call, response)?;
    if parsed.total.is_some_and(|total| total < range.end) {
        return Err(not_satisfiable(call, digest, range));
    }
    if parsed.range != *range {
        return Err(protocol(
            call,
            format!(
                "Content-Range {:?} for a request of {}..{}",
                parsed.range, range.start, range.end
            ),
        ));
    }
    Ok(())
}

pub(crate) fn not_satisfiable(call: &Call<'_>, digest: &Digest, range: &Range<u64>) -> Error {
    Error::RangeNotSatisfied {
        method: call.method.to_string(),
        url: call.shown_url(),
        digest: *digest,
        range: range.clone(),
    }
}

pub(crate) fn protocol(call: &Call<'_>, problem: String) -> Error {
    Error::Protocol {
        method: call.method.to_string(),
        url: call.shown_url(),
        problem,
    }
}

pub(crate) fn len_u64(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}
