//! Certificates and tokens made at test time: a CA, server and client certificates signed
//! by it (rcgen), and JWTs (jsonwebtoken) valid, expired, for another audience or signed
//! with another key.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A test CA and what it signed, written as PEM files into a temporary folder (removed on
/// drop).
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA, a certificate for `localhost`/`127.0.0.1` and a client certificate; also an
    /// unrelated CA, for a client the server must not trust.
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("orders-pki-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        for (prefix, sans) in [("", true), ("other-", false)] {
            let ca_key = KeyPair::generate().unwrap();
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca_params
                .distinguished_name
                .push(rcgen::DnType::CommonName, format!("orders test {prefix}CA"));
            let ca = ca_params.self_signed(&ca_key).unwrap();
            write(&format!("{prefix}ca.pem"), ca.pem());
            let issuer = Issuer::from_params(&ca_params, &ca_key);
            let names: Vec<String> = if sans {
                vec!["localhost".into(), "127.0.0.1".into()]
            } else {
                vec!["client".into()]
            };
            let server_key = KeyPair::generate().unwrap();
            let server = CertificateParams::new(names)
                .unwrap()
                .signed_by(&server_key, &issuer)
                .unwrap();
            let role = if sans { "server" } else { "client" };
            write(&format!("{prefix}{role}.pem"), server.pem());
            write(
                &format!("{prefix}{role}-key.pem"),
                server_key.serialize_pem(),
            );
            let client_key = KeyPair::generate().unwrap();
            let client = CertificateParams::new(vec!["client".to_owned()])
                .unwrap()
                .signed_by(&client_key, &issuer)
                .unwrap();
            write(&format!("{prefix}client.pem"), client.pem());
            write(
                &format!("{prefix}client-key.pem"),
                client_key.serialize_pem(),
            );
        }
        Pki { dir }
    }

    /// The path of one of the PEM files: `ca.pem`, `server.pem`, `server-key.pem`,
    /// `client.pem`, `client-key.pem`, and `other-ca.pem`, `other-client.pem`,
    /// `other-client-key.pem` (signed by a CA the server does not trust).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The text of one of the PEM files.
    pub fn pem(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("a PEM file")
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The HS256 secret test services check tokens with.
pub const SECRET: &str = "a test secret of at least thirty-two bytes!";

/// A token for `audience` with `roles`, signed with `secret`, expiring `ttl_s` seconds from
/// now (negative: already expired).
pub fn token_with(secret: &str, audience: &str, roles: &[&str], ttl_s: i64) -> String {
    let exp = chrono::Utc::now().timestamp() + ttl_s;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": "test", "aud": audience, "exp": exp, "roles": roles }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("an HS256 key"),
    )
    .expect("a token")
}

/// A valid token (for the `orders` audience, signed with [`SECRET`]) with `roles`.
pub fn token(roles: &[&str]) -> String {
    token_with(SECRET, "orders", roles, 600)
}
