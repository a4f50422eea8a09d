//! Command-line options, the clock, and the JSON-line report.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call; used for timestamps inside payloads
/// (sender and receiver are this one process).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// `--key value` options; every key a mode reads is marked used, and
/// `finish` rejects any left over so typos do not pass silently.
pub struct Opts {
    values: HashMap<String, String>,
    used: std::cell::RefCell<Vec<String>>,
}

impl Opts {
    pub fn parse(args: &[String]) -> Result<Opts, String> {
        let mut values = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let key = a.strip_prefix("--").ok_or_else(|| format!("expected --option, got {a:?}"))?;
            let value = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            values.insert(key.to_string(), value.clone());
        }
        Ok(Opts { values, used: Default::default() })
    }

    pub fn get<T: FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        self.used.borrow_mut().push(key.to_string());
        match self.values.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("bad value for --{key}: {v:?}")),
        }
    }

    pub fn get_str(&self, key: &str, default: &str) -> String {
        self.used.borrow_mut().push(key.to_string());
        self.values.get(key).cloned().unwrap_or_else(|| default.to_string())
    }

    pub fn finish(&self) -> Result<(), String> {
        let used = self.used.borrow();
        let mut unknown: Vec<&String> = self.values.keys().filter(|k| !used.contains(k)).collect();
        unknown.sort();
        if unknown.is_empty() { Ok(()) } else { Err(format!("unknown options: {unknown:?}")) }
    }
}

/// One JSON object, built field by field and printed as a single line.
#[derive(Default)]
pub struct Report {
    fields: Vec<(String, String)>,
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Report {
    pub fn str(&mut self, key: &str, v: &str) -> &mut Self {
        self.fields.push((key.into(), json_string(v)));
        self
    }
    pub fn int(&mut self, key: &str, v: impl Into<i128>) -> &mut Self {
        self.fields.push((key.into(), v.into().to_string()));
        self
    }
    pub fn num(&mut self, key: &str, v: f64) -> &mut Self {
        let text = if v.is_finite() { format!("{:.6}", v).trim_end_matches('0').trim_end_matches('.').to_string() } else { "null".into() };
        self.fields.push((key.into(), text));
        self
    }
    pub fn opt_num(&mut self, key: &str, v: Option<f64>) -> &mut Self {
        match v {
            Some(v) => self.num(key, v),
            None => {
                self.fields.push((key.into(), "null".into()));
                self
            }
        }
    }
    pub fn bool(&mut self, key: &str, v: bool) -> &mut Self {
        self.fields.push((key.into(), v.to_string()));
        self
    }
    pub fn counts(&mut self, key: &str, m: &BTreeMap<String, u64>) -> &mut Self {
        let inner: Vec<String> = m.iter().map(|(k, v)| format!("{}:{}", json_string(k), v)).collect();
        self.fields.push((key.into(), format!("{{{}}}", inner.join(","))));
        self
    }
    pub fn line(&self) -> String {
        let inner: Vec<String> = self.fields.iter().map(|(k, v)| format!("{}:{}", json_string(k), v)).collect();
        format!("{{{}}}", inner.join(","))
    }
}

/// Nanoseconds to microseconds, for the report.
pub fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Sets bit `n` of the bitmap `bits` (growing it if needed) and says whether it was
/// clear: `false` means message `n` was seen before (a duplicate).
pub fn mark(bits: &mut Vec<u64>, n: usize) -> bool {
    let (word, bit) = (n / 64, 1u64 << (n % 64));
    if bits.len() <= word {
        bits.resize(word + 1, 0);
    }
    let fresh = bits[word] & bit == 0;
    bits[word] |= bit;
    fresh
}
