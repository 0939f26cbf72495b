//! Sizes and rates as people type and read them.

/// Parses `1500`, `64K`, `1M`, `4MiB`, `2.8G` (binary multiples for K/M/G).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 1500, 64K, 4M)"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use K, M or G)")),
    };
    let v = n * mult as f64;
    if !(0.0..=(u64::MAX as f64)).contains(&v) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(v as u64)
}

/// Formats bytes as iperf does (`4.12 GBytes`).
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= (1u64 << 30) as f64 {
        format!("{:.2} GBytes", n / (1u64 << 30) as f64)
    } else if n >= (1u64 << 20) as f64 {
        format!("{:.1} MBytes", n / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KBytes", n / 1024.0)
    }
}

/// Formats a rate in bits per second (`35.4 Gbit/s`).
pub fn bitrate(bytes: u64, secs: f64) -> String {
    let bps = bytes as f64 * 8.0 / secs.max(1e-9);
    if bps >= 1e9 {
        format!("{:.2} Gbit/s", bps / 1e9)
    } else {
        format!("{:.1} Mbit/s", bps / 1e6)
    }
}

/// Gbit/s as a number.
pub fn gbits(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs.max(1e-9) / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
    }
}
