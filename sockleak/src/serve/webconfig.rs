//! `sockleak serve --web-config FILE`: the Prometheus exporter-toolkit web configuration (the
//! file node_exporter and the official exporters read): `tls_server_config` for TLS and mTLS,
//! `basic_auth_users` with bcrypt hashes. Everything is read and checked before anything is
//! attached; each problem is one line naming the field.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
}

/// What `serve` enforces.
#[derive(Clone)]
pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    /// User -> bcrypt hash; None: no authentication.
    pub users: Option<Arc<BTreeMap<String, String>>>,
    /// Whether clients must present a certificate signed by `client_ca_file`.
    pub client_certs: bool,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.as_ref().map(|u| u.len()))
            .field("client_certs", &self.client_certs)
            .finish()
    }
}

/// A problem with the file, as `--web-config FILE: field: what`.
#[derive(Debug, PartialEq, Eq)]
pub struct WebConfigError(pub String);

type Res<T> = Result<T, WebConfigError>;

fn err<T>(field: &str, what: impl std::fmt::Display) -> Res<T> {
    Err(WebConfigError(format!("{field}: {what}")))
}

/// Reads and checks the file: certificates and keys load, hashes are bcrypt.
pub fn load(path: &Path) -> Res<WebConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| WebConfigError(format!("cannot read it: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, dir)
}

/// Parses the YAML; relative file paths are taken from `dir` (the file's own directory, as
/// exporter-toolkit does).
pub fn parse(text: &str, dir: &Path) -> Res<WebConfig> {
    // An empty file is a valid (empty) configuration.
    let file: File = if text.trim().is_empty() {
        File::default()
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| {
            WebConfigError(format!("not a valid web configuration: {e}").replace('\n', " "))
        })?
    };
    let users = match file.basic_auth_users {
        Some(u) if !u.is_empty() => {
            for (user, hash) in &u {
                check_bcrypt(hash).or_else(|w| err(&format!("basic_auth_users.{user}"), w))?;
            }
            Some(Arc::new(u))
        }
        _ => None,
    };
    let (tls, client_certs) = match file.tls_server_config {
        Some(t) => {
            let (c, certs) = tls_config(&t, dir)?;
            (Some(Arc::new(c)), certs)
        }
        None => (None, false),
    };
    Ok(WebConfig {
        tls,
        users,
        client_certs,
    })
}

/// `$2a$`, `$2b$`, `$2x$` or `$2y$`, a two-digit cost, and 53 characters of salt and hash.
fn check_bcrypt(hash: &str) -> Result<(), String> {
    let parts: Vec<&str> = hash.split('$').collect();
    let ok = parts.len() == 4
        && parts[0].is_empty()
        && ["2a", "2b", "2x", "2y"].contains(&parts[1])
        && parts[2].len() == 2
        && parts[2].parse::<u32>().is_ok_and(|c| (4..=31).contains(&c))
        && parts[3].len() == 53
        && parts[3]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    if ok {
        Ok(())
    } else {
        Err("not a bcrypt hash (expected $2y$<cost>$..., e.g. from `htpasswd -nBC 10 USER`)".into())
    }
}

fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn certs(field: &str, path: &Path) -> Res<Vec<CertificateDer<'static>>> {
    let v: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(path) {
        Ok(it) => it
            .collect::<Result<_, _>>()
            .or_else(|e| err(field, format!("{}: {e}", path.display())))?,
        Err(e) => return err(field, format!("cannot read {}: {e}", path.display())),
    };
    if v.is_empty() {
        return err(
            field,
            format!("{}: no PEM certificate in it", path.display()),
        );
    }
    Ok(v)
}

fn tls_config(t: &TlsFile, dir: &Path) -> Res<(ServerConfig, bool)> {
    const T: &str = "tls_server_config";
    let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) else {
        return err(T, "cert_file and key_file are both required to serve TLS");
    };
    let chain = certs(&format!("{T}.cert_file"), &resolve(dir, cert))?;
    let key_path = resolve(dir, key);
    let key = PrivateKeyDer::from_pem_file(&key_path).or_else(|e| {
        err(
            &format!("{T}.key_file"),
            format!("{}: no usable private key ({e})", key_path.display()),
        )
    })?;
    let versions = versions(t)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .or_else(|e| err(&format!("{T}.min_version"), e))?;
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let (builder, client_certs) = match auth {
        "NoClientCert" => (builder.with_no_client_auth(), false),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let Some(ca) = &t.client_ca_file else {
                return err(
                    &format!("{T}.client_ca_file"),
                    format!("required with client_auth_type {auth}"),
                );
            };
            let mut roots = RootCertStore::empty();
            for c in certs(&format!("{T}.client_ca_file"), &resolve(dir, ca))? {
                roots
                    .add(c)
                    .or_else(|e| err(&format!("{T}.client_ca_file"), e))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if auth == "VerifyClientCertIfGiven" {
                v.allow_unauthenticated()
            } else {
                v
            };
            let v = v
                .build()
                .or_else(|e| err(&format!("{T}.client_ca_file"), e))?;
            (
                builder.with_client_cert_verifier(v),
                auth != "VerifyClientCertIfGiven",
            )
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return err(
                &format!("{T}.client_auth_type"),
                format!(
                    "{auth} accepts unverified certificates, which sockleak does not do: use RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file"
                ),
            );
        }
        other => {
            return err(
                &format!("{T}.client_auth_type"),
                format!(
                    "{other:?} is not one of NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                ),
            );
        }
    };
    let mut config = builder.with_single_cert(chain, key).or_else(|e| {
        err(
            &format!("{T}.key_file"),
            format!("does not match cert_file: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, client_certs))
}

fn versions(t: &TlsFile) -> Res<Vec<&'static rustls::SupportedProtocolVersion>> {
    let rank = |field: &str, v: &Option<String>, default: u8| -> Res<u8> {
        match v.as_deref() {
            None => Ok(default),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some(o) => err(
                &format!("tls_server_config.{field}"),
                format!("{o:?}: sockleak serves TLS12 and TLS13 only"),
            ),
        }
    };
    let (lo, hi) = (
        rank("min_version", &t.min_version, 12)?,
        rank("max_version", &t.max_version, 13)?,
    );
    if lo > hi {
        return err("tls_server_config.min_version", "is above max_version");
    }
    let mut v = Vec::new();
    if lo <= 13 && hi >= 13 {
        v.push(&rustls::version::TLS13);
    }
    if lo <= 12 && hi >= 12 {
        v.push(&rustls::version::TLS12);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

    fn msg(r: Res<WebConfig>) -> String {
        r.expect_err("an error").0
    }

    #[test]
    fn users_need_bcrypt_hashes() {
        let ok = parse(
            &format!("basic_auth_users:\n  alice: {HASH}\n"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(ok.users.unwrap()["alice"], HASH);
        assert!(ok.tls.is_none());
        let bad = msg(parse("basic_auth_users:\n  bob: secret\n", Path::new(".")));
        assert!(
            bad.starts_with("basic_auth_users.bob: not a bcrypt hash"),
            "{bad}"
        );
        let md5 = msg(parse(
            "basic_auth_users:\n  eve: $apr1$abc$abcdefghijklmnopqrstuv\n",
            Path::new("."),
        ));
        assert!(md5.starts_with("basic_auth_users.eve:"), "{md5}");
    }

    #[test]
    fn malformed_and_unknown_fields_are_named() {
        let e = msg(parse("tls_server_config: [\n", Path::new(".")));
        assert!(e.starts_with("not a valid web configuration"), "{e}");
        assert!(!e.contains('\n'));
        let e = msg(parse(
            "tls_server_config:\n  cert_file: a\n  cipher_suites: [x]\n",
            Path::new("."),
        ));
        assert!(e.contains("cipher_suites"), "{e}");
        let e = msg(parse("basic_auth_user:\n  a: b\n", Path::new(".")));
        assert!(e.contains("basic_auth_user"), "{e}");
        assert!(parse("", Path::new(".")).unwrap().users.is_none());
    }

    #[test]
    fn tls_fields_are_checked() {
        let e = msg(parse(
            "tls_server_config:\n  cert_file: a.pem\n",
            Path::new("."),
        ));
        assert!(
            e.contains("cert_file and key_file are both required"),
            "{e}"
        );
        let e = msg(parse(
            "tls_server_config:\n  cert_file: /nonexistent/a.pem\n  key_file: /nonexistent/a.key\n",
            Path::new("."),
        ));
        assert!(
            e.starts_with("tls_server_config.cert_file: cannot read /nonexistent/a.pem"),
            "{e}"
        );
        let t = TlsFile {
            min_version: Some("TLS10".into()),
            ..Default::default()
        };
        assert!(versions(&t).is_err());
        let t = TlsFile {
            min_version: Some("TLS13".into()),
            ..Default::default()
        };
        assert_eq!(versions(&t).unwrap().len(), 1);
        assert_eq!(versions(&TlsFile::default()).unwrap().len(), 2);
        let t = TlsFile {
            min_version: Some("TLS13".into()),
            max_version: Some("TLS12".into()),
            ..Default::default()
        };
        assert!(versions(&t).is_err());
    }
}
