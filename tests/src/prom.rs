//! Helpers of the metrics tests: a plain HTTP GET from inside a
//! namespace, and a reader of the Prometheus text exposition format.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::lab::Lab;

/// `GET path` on `addr` from inside host `i`'s namespace: the status code
/// and the body (`Connection: close`, so the body ends with the stream).
pub fn http_get(
    lab: &Lab,
    i: usize,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    let path = path.to_owned();
    lab.ns[i]
        .spawn(move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw)?;
            let text = String::from_utf8(raw)?;
            let (head, body) = text
                .split_once("\r\n\r\n")
                .ok_or_else(|| anyhow::anyhow!("no HTTP header end in {text:?}"))?;
            let code = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("bad status line in {head:?}"))?;
            let body = if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked")
            {
                dechunk(body)?
            } else {
                body.to_owned()
            };
            Ok((code, body))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("GET thread panicked"))?
}

fn dechunk(mut s: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (len, rest) = s
            .split_once("\r\n")
            .ok_or_else(|| anyhow::anyhow!("bad chunk"))?;
        let n = usize::from_str_radix(len.trim(), 16)?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(
            rest.get(..n)
                .ok_or_else(|| anyhow::anyhow!("short chunk"))?,
        );
        s = rest.get(n + 2..).unwrap_or("");
    }
}

/// One sample of an exposition: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name (with `_bucket`, `_sum`, `_count` for histograms).
    pub name: String,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

/// The samples of an exposition text (comments skipped).
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or(f64::NAN),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
            None => (series, Vec::new()),
        };
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut val = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(match n {
                            'n' => '\n',
                            o => o,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => val.push(c),
            }
        }
        out.push((k.trim_start_matches(',').trim().to_owned(), val));
        rest = after.get(end..).unwrap_or("");
    }
    out
}

/// The sum of the samples named `name` whose labels include all of
/// `want` (0 if none).
pub fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .sum()
}

/// Whether a series named `name` with those labels exists.
pub fn has(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> bool {
    samples.iter().any(|s| {
        s.name == name
            && want
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_exposition_format() {
        let t = "# HELP x_total a\n# TYPE x_total counter\nx_total{a=\"1\",b=\"q\\\"z\"} 5\ny 2.5\nh_bucket{le=\"+Inf\"} 3\n";
        let s = parse(t);
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0].labels,
            vec![("a".into(), "1".into()), ("b".into(), "q\"z".into())]
        );
        assert_eq!(sum(&s, "x_total", &[("a", "1")]), 5.0);
        assert_eq!(sum(&s, "y", &[]), 2.5);
        assert!(has(&s, "h_bucket", &[("le", "+Inf")]));
        assert_eq!(
            dechunk("3\r\nabc\r\n0\r\n\r\n").ok().as_deref(),
            Some("abc")
        );
    }
}
