//! TLS, one stack for the whole binary: rustls with the `ring` crypto provider, and
//! one set of trusted roots for every client.
//!
//! Every TLS client of the process — object storage (`object_store`'s reqwest), a
//! guest's outbound HTTP (`ureq`), the broker (`amqps://`, lapin), the command line
//! talking to an operator over `https://` — trusts the system's roots (read by
//! `rustls-native-certs`, so `SSL_CERT_FILE` and `SSL_CERT_DIR` apply) plus the PEM
//! certificates of `--ca-file` (`WASMBATCH_CA_FILE`). The operator's listener serves
//! `--tls-cert` / `--tls-key` (PEM) with the same provider. `ring` is the one provider
//! compiled in (`cargo tree -i aws-lc-rs` finds nothing): it builds for musl with a
//! plain C compiler, and it is what lapin and ureq use already.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// Extra roots (`--ca-file`): the file's PEM text, set once at start.
static EXTRA_CA: OnceLock<Option<String>> = OnceLock::new();

/// Installs the process's crypto provider (once; later calls do nothing).
pub fn install_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // Fails only when a provider is installed already, which is what we want.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Sets up TLS for the process: the provider, and `ca_file`'s certificates trusted
/// beside the system's. Call once, before any client is made.
pub fn init(ca_file: Option<&Path>) -> Result<(), TlsError> {
    install_provider();
    let pem = match ca_file {
        None => None,
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| TlsError(format!("--ca-file {}: {e}", path.display())))?;
            let certs = CertificateDer::pem_slice_iter(text.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError(format!("--ca-file {}: not PEM certificates: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(TlsError(format!("--ca-file {}: holds no certificate", path.display())));
            }
            Some(text)
        }
    };
    EXTRA_CA.set(pem).map_err(|_| TlsError("TLS is set up already".into()))
}

fn extra_ca() -> Option<&'static str> {
    EXTRA_CA.get().and_then(|pem| pem.as_deref())
}

/// The roots every client trusts: the system's and `--ca-file`'s.
fn root_store() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!("system certificates: {error}");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(pem) = extra_ca() {
        roots.add_parsable_certificates(CertificateDer::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok));
    }
    roots
}

/// The client configuration of the process's own clients (ureq, the operator client).
pub fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            install_provider();
            Arc::new(rustls::ClientConfig::builder().with_root_certificates(root_store()).with_no_client_auth())
        })
        .clone()
}

/// Client options of an object store: those its provider's environment gives
/// (`AWS_ALLOW_HTTP`, `AWS_TIMEOUT`, … for `s3`; `GOOGLE_…`, `AZURE_…`), and the
/// `--ca-file` roots beside the system's.
pub fn object_store_options(scheme: &str) -> object_store::ClientOptions {
    install_provider();
    let prefix = match scheme {
        "s3" => "aws_",
        "gs" => "google_",
        _ => "azure_",
    };
    let mut options = object_store::ClientOptions::new();
    for (key, value) in std::env::vars() {
        let key = key.to_ascii_lowercase();
        if let Some(name) = key.strip_prefix(prefix)
            && let Ok(config_key) = name.parse::<object_store::ClientConfigKey>()
        {
            options = options.with_config(config_key, value);
        }
    }
    if let Some(pem) = extra_ca()
        && let Ok(certs) = object_store::Certificate::from_pem_bundle(pem.as_bytes())
    {
        for cert in certs {
            options = options.with_root_certificate(cert);
        }
    }
    options
}

/// The broker's TLS settings (`amqps://`): the `--ca-file` roots beside the system's.
pub fn amqp_config() -> lapin::tcp::OwnedTLSConfig {
    install_provider();
    lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: extra_ca().map(str::to_string) }
}

/// A server configuration from a PEM certificate chain and private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    install_provider();
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("--tls-cert {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!("--tls-cert {}: holds no certificate", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError(format!("--tls-key {}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError(format!("--tls-cert and --tls-key do not make a key pair: {e}")))?;
    Ok(Arc::new(config))
}
