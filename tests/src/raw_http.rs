//! A minimal HTTP/1.1 client over a plain TCP socket that sends the request
//! target byte for byte. Normal HTTP clients normalize URLs (resolve `..`,
//! re-encode `%2f`, reject `\`), which would hide exactly the path spellings
//! the edge must withstand.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::edge::EdgeResponse;

/// Sends one request with `Connection: close` and reads the whole response.
pub async fn request(
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<EdgeResponse> {
    request_bytes(port, method, target.as_bytes(), headers, body).await
}

/// [`request`] with a target that need not be UTF-8 (or even valid HTTP):
/// the bytes go on the request line as they are.
pub async fn request_bytes(
    port: u16,
    method: &str,
    target_bytes: &[u8],
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<EdgeResponse> {
    let target = String::from_utf8_lossy(target_bytes);
    let mut request = format!("{method} ").into_bytes();
    request.extend_from_slice(target_bytes);
    request.extend_from_slice(format!(" HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n").as_bytes());
    for (name, value) in headers {
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    request.extend_from_slice(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(&request).await?;
        let mut bytes = Vec::new();
        let mut buf = [0u8; 8192];
        // Stop at the end of the message rather than at EOF: after a local
        // reply Envoy may wait (delayed close) for the client to hang up.
        while !is_complete(&bytes) {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(bytes)
    };
    let bytes = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| {
            std::io::Error::other(format!("{method} {target}: no full answer in 20 s"))
        })??;
    parse_response(&bytes)
        .ok_or_else(|| std::io::Error::other(format!("{method} {target}: unparsable response")))
}

/// True once `bytes` hold a whole response with a known length (a
/// `Content-Length` body or a finished chunked body).
fn is_complete(bytes: &[u8]) -> bool {
    let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    let body = &bytes[head_end + 4..];
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            match (name.trim(), value.trim()) {
                ("content-length", n) => {
                    return n.parse::<usize>().is_ok_and(|n| body.len() >= n);
                }
                ("transfer-encoding", v) if v.contains("chunked") => {
                    return dechunk(body).is_some();
                }
                _ => {}
            }
        }
    }
    false
}

fn parse_response(bytes: &[u8]) -> Option<EdgeResponse> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    let raw_body = &bytes[head_end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let body = match (chunked, length) {
        (true, _) => dechunk(raw_body)?,
        (false, Some(n)) => raw_body.get(..n)?.to_vec(),
        (false, None) => raw_body.to_vec(),
    };
    Some(EdgeResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunked_and_plain_bodies() {
        let plain = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\nX-A: b\r\n\r\n{}";
        let r = parse_response(plain).unwrap();
        assert_eq!((r.status, r.body.as_str()), (403, "{}"));
        assert_eq!(r.header("x-a"), Some("b"));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap().body, "abcde");
        assert!(parse_response(b"garbage").is_none());
        assert!(is_complete(plain));
        assert!(!is_complete(&plain[..plain.len() - 1]));
        assert!(is_complete(chunked));
        assert!(!is_complete(&chunked[..chunked.len() - 5]));
    }
}
