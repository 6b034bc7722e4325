//! TLS for the servers (rustls through tonic's `tls-ring`), optionally mutual: with a
//! client CA, a client must present a certificate it signed. Off unless a certificate and
//! key are given.
//!
//! Health stays reachable for probes: it is served on the same TLS port, and
//! `grpc-health-probe https://ADDR SERVICE --ca FILE [--cert FILE --key FILE]` speaks TLS
//! (with a client certificate when mutual TLS is on).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A server's TLS settings (`--help` lists the flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsConfig {
    /// PEM certificate chain to serve TLS with (with --tls-key).
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate clients must present a certificate from (mutual TLS).
    #[arg(long, env = "TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))
}

impl TlsConfig {
    /// The server's TLS configuration; `None` when TLS is off.
    pub fn server(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let identity = Identity::from_pem(read(cert, "TLS_CERT")?, read(key, "TLS_KEY")?);
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.tls_client_ca {
            config = config.client_ca_root(Certificate::from_pem(read(ca, "TLS_CLIENT_CA")?));
        }
        Ok(Some(config))
    }
}

/// A client's TLS settings for calling a TLS server: the CA to trust and, for mutual TLS,
/// the client's own certificate and key.
pub fn client(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    domain: Option<&str>,
) -> anyhow::Result<ClientTlsConfig> {
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "CA")?));
    if let Some((cert, key)) = identity {
        config = config.identity(Identity::from_pem(
            read(cert, "client certificate")?,
            read(key, "client key")?,
        ));
    }
    if let Some(domain) = domain {
        config = config.domain_name(domain);
    }
    Ok(config)
}
