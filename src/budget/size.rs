//! Sizes as people write them: `256MiB` on the command line, `256 MiB` in the logs.

use std::fmt;

/// Bytes shown the way people write them: `256 MiB`, `1.5 GiB`, `300 B`.
#[derive(Clone, Copy, Debug)]
pub struct Size(pub usize);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (unit, name) in units {
            if self.0 >= unit {
                let value = self.0 as f64 / unit as f64;
                return if self.0 % unit == 0 {
                    write!(f, "{} {name}", self.0 / unit)
                } else {
                    write!(f, "{value:.1} {name}")
                };
            }
        }
        write!(f, "{} B", self.0)
    }
}

/// Parses a size: bytes, or a number with `KiB`, `MiB`, `GiB` (or `K`, `M`, `G`,
/// `KB`, `MB`, `GB`, all powers of 1024), as in `256MiB` or `1.5 GiB`.
pub fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    let bytes = if let Ok(whole) = number.parse::<u64>() {
        whole.checked_mul(unit)?
    } else {
        let value: f64 = number.parse().ok()?;
        let bytes = value * unit as f64;
        (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)?
    };
    usize::try_from(bytes).ok()
}
