//! Static files from the public folder, or the page compiled into the binary.
//!
//! The one rule that matters: nothing outside the public folder is ever served. A
//! request path is decoded once, split into segments, and any `..`, backslash or NUL
//! refuses the request. What remains is joined to the folder and resolved with
//! `canonicalize` (which follows symlinks), and the result must still lie inside the
//! folder, so a symlink pointing elsewhere is refused too. Dotfiles and dot-folders
//! (`.env`, `.git/`, `.htpasswd`) are never served: they hold secrets and version
//! history far more often than content, so any segment starting with `.` is a 404.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::protocol::url::percent_decode;

/// The bundled page, served when the public folder does not exist, so the binary
/// works from any directory.
const BUNDLED: &[(&str, &[u8])] = &[
    ("/index.html", include_bytes!("../../public/index.html")),
    ("/app.js", include_bytes!("../../public/app.js")),
    (
        "/connection.js",
        include_bytes!("../../public/connection.js"),
    ),
    ("/outbox.js", include_bytes!("../../public/outbox.js")),
    ("/inspector.js", include_bytes!("../../public/inspector.js")),
    ("/protocol.js", include_bytes!("../../public/protocol.js")),
    (
        "/transports.js",
        include_bytes!("../../public/transports.js"),
    ),
    ("/style.css", include_bytes!("../../public/style.css")),
    ("/favicon.svg", include_bytes!("../../public/favicon.svg")),
];
/// Served for a directory.
const INDEX_FILE: &str = "index.html";
/// Longest request path we try to resolve; longer ones are refused (400) unread.
pub const MAX_PATH_BYTES: usize = 1024;

/// A file ready to send.
pub struct Found {
    /// The content.
    pub body: Box<dyn Read + Send>,
    /// Its size in bytes.
    pub len: usize,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

/// The outcome of looking a path up.
pub enum Lookup {
    /// Send this file.
    Found(Found),
    /// 404: no such file (or outside the folder, which we do not admit exists).
    NotFound,
    /// 400: the path itself is malformed (bad escape, NUL, backslash, too long).
    BadRequest,
}

/// Where the files come from.
#[derive(Debug)]
pub struct StaticFiles {
    /// The public folder, canonicalized; `None` means the bundled page.
    root: Option<PathBuf>,
}

impl StaticFiles {
    /// Serves from `dir` if it is a folder, else the bundled page.
    pub fn new(dir: &Path) -> Self {
        match dir.canonicalize() {
            Ok(root) if root.is_dir() => {
                log::info!("serving static files from {}", root.display());
                StaticFiles { root: Some(root) }
            }
            _ => {
                log::info!(
                    "{} not found; serving the page built into the binary",
                    dir.display()
                );
                StaticFiles { root: None }
            }
        }
    }

    /// Finds the file for a request path such as `/app.js` (query already removed).
    pub fn lookup(&self, url_path: &str) -> Lookup {
        let Some(segments) = safe_segments(url_path) else {
            return Lookup::BadRequest;
        };
        let Some(segments) = segments else {
            return Lookup::NotFound;
        };
        match &self.root {
            Some(root) => lookup_on_disk(root, &segments),
            None => lookup_bundled(&segments),
        }
    }
}

/// Splits a request path into safe segments. `None`: malformed (400).
/// `Some(None)`: well-formed but reaching outside the folder (404).
fn safe_segments(url_path: &str) -> Option<Option<Vec<String>>> {
    if url_path.len() > MAX_PATH_BYTES || !url_path.starts_with('/') {
        return None;
    }
    let decoded = percent_decode(url_path)?;
    // A second round of decoding would turn `%252e` into `.`: we decode exactly once,
    // and refuse anything that still looks encoded, NULs and Windows separators.
    if decoded.contains(['\0', '\\', '%']) {
        return None;
    }
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Some(None),
            s if s.starts_with('.') => return Some(None), // dotfiles: never served
            s => segments.push(s.to_string()),
        }
    }
    Some(Some(segments))
}

fn lookup_on_disk(root: &Path, segments: &[String]) -> Lookup {
    let mut path = root.to_path_buf();
    path.extend(segments);
    // canonicalize follows symlinks: the real file must still be inside the root.
    let Ok(mut real) = path.canonicalize() else {
        return Lookup::NotFound;
    };
    if real.is_dir() {
        match real.join(INDEX_FILE).canonicalize() {
            Ok(index) => real = index,
            Err(_) => return Lookup::NotFound, // no directory listings
        }
    }
    if !real.starts_with(root) || !real.is_file() {
        return Lookup::NotFound;
    }
    match File::open(&real).and_then(|f| Ok((f.metadata()?.len(), f))) {
        Ok((len, file)) => Lookup::Found(Found {
            body: Box::new(file),
            len: len as usize,
            content_type: content_type(&real.to_string_lossy()),
        }),
        Err(_) => Lookup::NotFound,
    }
}

fn lookup_bundled(segments: &[String]) -> Lookup {
    let path = match segments {
        [] => format!("/{INDEX_FILE}"),
        _ => format!("/{}", segments.join("/")),
    };
    match BUNDLED.iter().find(|(name, _)| *name == path) {
        Some((name, bytes)) => Lookup::Found(Found {
            body: Box::new(*bytes),
            len: bytes.len(),
            content_type: content_type(name),
        }),
        None => Lookup::NotFound,
    }
}

/// The `Content-Type` for a file name, by extension.
pub fn content_type(name: &str) -> &'static str {
    let extension = name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("a/index.HTML"), "text/html; charset=utf-8");
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x.wasm"), "application/wasm");
        assert_eq!(content_type("x.svg"), "image/svg+xml");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn traversal_in_any_spelling_is_refused() {
        assert!(matches!(safe_segments("/../etc/passwd"), Some(None)));
        assert!(matches!(
            safe_segments("/a/%2e%2e/%2E%2E/etc/passwd"),
            Some(None)
        ));
        assert!(
            safe_segments("/a/%252e%252e/x").is_none(),
            "double encoding"
        );
        assert!(safe_segments("/..\\..\\x").is_none(), "backslashes");
        assert!(safe_segments("/a%00.html").is_none(), "NUL");
        assert!(safe_segments("/%zz").is_none());
        assert!(safe_segments(&format!("/{}", "a".repeat(2000))).is_none());
        assert!(safe_segments("relative").is_none());
    }

    #[test]
    fn dotfiles_and_dot_folders_are_not_found() {
        for path in [
            "/.env",
            "/.git/config",
            "/a/.htpasswd",
            "/%2egit/HEAD",
            "/.well-known/x",
        ] {
            assert!(matches!(safe_segments(path), Some(None)), "{path}");
        }
    }

    #[test]
    fn ordinary_paths_split_into_segments() {
        assert_eq!(
            safe_segments("/a//b/./c.js"),
            Some(Some(vec!["a".into(), "b".into(), "c.js".into()]))
        );
        assert_eq!(safe_segments("/"), Some(Some(vec![])));
    }

    #[test]
    fn the_bundled_page_has_an_index() {
        let files = StaticFiles { root: None };
        assert!(matches!(files.lookup("/"), Lookup::Found(_)));
        assert!(matches!(files.lookup("/app.js"), Lookup::Found(_)));
        assert!(matches!(files.lookup("/nope.js"), Lookup::NotFound));
    }

    #[test]
    fn every_file_of_the_page_is_built_in() {
        // A page file left out would work from public/ and break in a binary without it.
        let files = StaticFiles { root: None };
        let public = concat!(env!("CARGO_MANIFEST_DIR"), "/public");
        for entry in std::fs::read_dir(public).unwrap() {
            let name = format!("/{}", entry.unwrap().file_name().to_string_lossy());
            assert!(
                matches!(files.lookup(&name), Lookup::Found(_)),
                "{name} is not bundled"
            );
        }
    }
}
