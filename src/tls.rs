//! Built-in TLS: loads `server.tls_cert` (a PEM certificate chain, leaf first) and
//! `server.tls_key` (a PEM private key: PKCS#8, PKCS#1 or SEC1) into a rustls server
//! configuration with the `ring` provider. Config validation and the server start both
//! call [`server_config`], so `minipush check-config` catches a missing, unreadable or
//! mismatched file. Errors name the key and the file, never the key material.

use std::sync::Arc;

use rustls::{
    crypto::ring,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    ServerConfig,
};

/// The rustls configuration for `server.tls_cert` and `server.tls_key`.
pub fn server_config(cert_path: &str, key_path: &str) -> Result<ServerConfig, String> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("`server.tls_cert`: cannot load {cert_path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "`server.tls_cert`: {cert_path} holds no PEM certificate"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("`server.tls_key`: cannot load a private key from {key_path}: {e}"))?;
    ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!("`server.tls_key`: {key_path} does not fit the certificate in `server.tls_cert` ({e})")
        })
}
