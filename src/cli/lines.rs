//! Reading NDJSON lines with a bound: a line longer than the limit is not
//! held in memory; it is consumed and reported as too large.

use std::io::{self, BufRead};

/// What one read produced.
pub enum Line {
    /// A complete line (without its `\n` or `\r\n`) in the buffer.
    Complete,
    /// The line exceeded the limit; `len` bytes were consumed and dropped.
    TooLong { len: usize },
}

/// Read the next line into `buf` (cleared first); `None` at end of input.
/// The terminator (`\n` or `\r\n`) does not count toward `limit`.
pub fn read_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Option<Line>> {
    buf.clear();
    // One byte more than the limit may be a `\r` before the `\n`.
    let room = limit.saturating_add(1);
    let mut total = 0usize;
    let mut too_long = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            if total == 0 {
                return Ok(None);
            }
            break;
        }
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        total += take;
        if !too_long {
            if total > room {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        reader.consume(take + usize::from(done));
        if done {
            // Count the newline so an empty line is still a line.
            total += 1;
            break;
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    if too_long || buf.len() > limit {
        buf.clear();
        return Ok(Some(Line::TooLong { len: total }));
    }
    Ok(Some(Line::Complete))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_bounds_long_ones() {
        let data = b"ab\r\n\nxxxxxxxxxx\nlast";
        let mut r = io::BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        while let Some(line) = read_line(&mut r, &mut buf, 5).unwrap() {
            match line {
                Line::Complete => seen.push(String::from_utf8(buf.clone()).unwrap()),
                Line::TooLong { .. } => seen.push("<too long>".into()),
            }
        }
        assert_eq!(seen, ["ab", "", "<too long>", "last"]);
    }

    fn read_all(data: &[u8], limit: usize) -> Vec<String> {
        // A small buffer, so lines and terminators straddle reads.
        let mut r = io::BufReader::with_capacity(3, data);
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        while let Some(line) = read_line(&mut r, &mut buf, limit).unwrap() {
            match line {
                Line::Complete => seen.push(String::from_utf8(buf.clone()).unwrap()),
                Line::TooLong { len } => seen.push(format!("<too long: {len}>")),
            }
        }
        seen
    }

    #[test]
    fn crlf_does_not_count_toward_the_limit() {
        assert_eq!(
            read_all(b"12345\r\n12345\n123456\r\n123456\n1234\r\r\n", 5),
            ["12345", "12345", "<too long: 8>", "<too long: 7>", "1234\r"]
        );
        // At end of input without a newline, as before.
        assert_eq!(read_all(b"12345\r", 5), ["12345"]);
        assert_eq!(read_all(b"123456", 5), ["<too long: 6>"]);
    }
}
