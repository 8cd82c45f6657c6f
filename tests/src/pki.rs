//! A throwaway certificate authority for the transport-security tests: a CA, server
//! certificates for the names a test chooses, and client certificates for mutual TLS, written
//! as PEM files into a temporary directory.
//!
//! Keys are ECDSA P-256, which OpenSSL (librdkafka, PostgreSQL) and rustls (tansu, sqlx) all
//! accept. Nothing here is a stand-in: the files are real X.509 that real servers load.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA that signs certificates into `dir`.
pub struct TestCa {
    dir: tempfile::TempDir,
    cert: Certificate,
    key: KeyPair,
    /// The CA certificate, for clients' trust settings.
    pub ca_file: PathBuf,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("saga-tracker-pki-")
            .tempdir()
            .context("creating a directory for test certificates")?;
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        let ca_file = dir.path().join(format!("{name}.ca.pem"));
        std::fs::write(&ca_file, cert.pem()).context("writing the CA certificate")?;
        Ok(Self {
            dir,
            cert,
            key,
            ca_file,
        })
    }

    /// The directory the files live in (removed when the CA is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for DNS names and IP addresses in `names`, saved as
    /// `<file_stem>.pem` / `<file_stem>.key`.
    pub fn server(&self, file_stem: &str, names: &[&str]) -> anyhow::Result<CertFiles> {
        self.issue(file_stem, names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with common name `name`, for mutual TLS.
    pub fn client(&self, name: &str) -> anyhow::Result<CertFiles> {
        self.issue(name, &[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        file_stem: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> anyhow::Result<CertFiles> {
        let key = KeyPair::generate().context("generating a key")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or(file_stem),
        );
        for name in names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into()?),
            });
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .context("signing a certificate")?;
        let files = CertFiles {
            cert: self.dir.path().join(format!("{file_stem}.pem")),
            key: self.dir.path().join(format!("{file_stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).context("writing a certificate")?;
        write_private(&files.key, key.serialize_pem().as_bytes())?;
        Ok(files)
    }
}

/// Writes `bytes` to `path` readable by its owner only, as PostgreSQL requires of its key.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))
}
