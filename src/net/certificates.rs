//! TLS certificates (`--features tls`): reading the certificate chain and private key
//! from PEM files into rustls's server configuration, with errors that name the file,
//! and swapping in a new pair on SIGHUP without a restart.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key could not be loaded. Never contains key material.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read (missing, no permission).
    Unreadable(PathBuf, io::Error),
    /// The certificate file holds no `CERTIFICATE` section (or a broken one).
    NoCertificate(PathBuf, String),
    /// The key file holds no private key (PKCS#8, PKCS#1 or SEC1) (or a broken one).
    NoKey(PathBuf, String),
    /// rustls refused the pair: the key does not match the certificate, or is of a
    /// kind it does not support.
    Rejected(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Unreadable(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            TlsError::NoCertificate(path, why) => write!(
                f,
                "{}: no PEM certificate (-----BEGIN CERTIFICATE-----) found: {why}",
                path.display()
            ),
            TlsError::NoKey(path, why) => write!(
                f,
                "{}: no PEM private key (-----BEGIN PRIVATE KEY-----) found: {why}",
                path.display()
            ),
            TlsError::Rejected(why) => write!(f, "TLS certificate and key not usable: {why}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
    }
}

/// Reads a certificate chain (leaf first, then intermediates) and its private key from
/// PEM files, and builds the server side of TLS 1.3 and 1.2 with rustls's `ring`
/// provider. Checks that the key belongs to the certificate.
///
/// # Errors
/// A `TlsError` naming the file and what is wrong with it.
pub fn load_server_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certificates(cert_path)?;
    let key = read_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rejected(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rejected(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The certificate and key in use, and where they came from. [`Certificates::reload`]
/// reads the files again (the binary does on SIGHUP), so a renewed certificate is
/// served without a restart: every connection accepted afterwards gets the new one,
/// connections already open keep theirs.
#[derive(Debug)]
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Arc<ServerConfig>>,
}

impl Certificates {
    /// Loads the pair (see [`load_server_config`]).
    ///
    /// # Errors
    /// As [`load_server_config`].
    pub fn load(cert: &Path, key: &Path) -> Result<Certificates, TlsError> {
        Ok(Certificates {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: Mutex::new(load_server_config(cert, key)?),
        })
    }

    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Reads both files again and uses them from the next connection on. A pair that
    /// does not load (a renewal half written, a wrong key) changes nothing.
    ///
    /// # Errors
    /// As [`load_server_config`]; the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load_server_config(&self.cert, &self.key)?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut certs = Vec::new();
    let sections = CertificateDer::pem_file_iter(path).map_err(|e| file_error(path, e))?;
    for cert in sections {
        certs.push(cert.map_err(|e| TlsError::NoCertificate(path.into(), e.to_string()))?);
    }
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(
            path.into(),
            "the file has none".into(),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::Io(_) => file_error(path, e),
        pem::Error::NoItemsFound => TlsError::NoKey(path.into(), "the file has none".into()),
        other => TlsError::NoKey(path.into(), other.to_string()),
    })
}

fn file_error(path: &Path, e: pem::Error) -> TlsError {
    match e {
        pem::Error::Io(e) => TlsError::Unreadable(path.into(), e),
        other => TlsError::Unreadable(path.into(), io::Error::other(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named_in_the_error() {
        let missing = Path::new("/nonexistent/threadcast/cert.pem");
        let e = load_server_config(missing, missing).unwrap_err();
        assert!(matches!(e, TlsError::Unreadable(..)), "{e:?}");
        assert!(
            e.to_string().contains("/nonexistent/threadcast/cert.pem"),
            "{e}"
        );
    }

    #[test]
    fn a_file_without_pem_sections_has_no_certificate_or_key() {
        let dir = std::env::temp_dir().join(format!("threadcast-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        assert!(matches!(
            read_certificates(&junk),
            Err(TlsError::NoCertificate(..))
        ));
        assert!(matches!(read_key(&junk), Err(TlsError::NoKey(..))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
