//! Token checks with each kind of key, and the settings that must be refused at start-up.

use service_runtime::auth::{AuthConfig, Verifier};
use tonic::Code;

fn es256_token(private_pem: &str, roles: &[&str], ttl_s: i64) -> String {
    let exp = chrono::Utc::now().timestamp() + ttl_s;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &serde_json::json!({ "aud": "orders", "exp": exp, "iss": "https://issuer.test", "scope": roles.join(" ") }),
        &jsonwebtoken::EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[test]
fn an_es256_public_key_checks_signature_issuer_expiry_and_scope() {
    let key = rcgen::KeyPair::generate().unwrap();
    let public = std::env::temp_dir().join(format!("orders-es256-{}.pem", std::process::id()));
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let verifier = Verifier::from_config(&AuthConfig {
        auth_public_key: Some(public.clone()),
        auth_issuer: Some("https://issuer.test".into()),
        ..AuthConfig::default()
    })
    .unwrap()
    .expect("authentication is on");
    let private = key.serialize_pem();
    let bearer = |t: String| format!("Bearer {t}");
    assert!(
        verifier
            .check(
                Some(&bearer(es256_token(
                    &private,
                    &["orders.read", "orders.write"],
                    60
                ))),
                "orders.write"
            )
            .is_ok()
    );
    let denied = verifier.check(
        Some(&bearer(es256_token(&private, &["orders.read"], 60))),
        "orders.write",
    );
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    let expired = verifier.check(
        Some(&bearer(es256_token(&private, &["orders.write"], -60))),
        "orders.write",
    );
    assert_eq!(expired.unwrap_err().message(), "the token has expired");
    let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let forged = verifier.check(
        Some(&bearer(es256_token(&other, &["orders.write"], 60))),
        "orders.write",
    );
    assert_eq!(forged.unwrap_err().code(), Code::Unauthenticated);
    std::fs::remove_file(public).unwrap();
}

#[test]
fn unusable_settings_are_refused_at_start_up() {
    let short = AuthConfig {
        auth_hs256_secret: Some("short".into()),
        ..AuthConfig::default()
    };
    assert!(
        Verifier::from_config(&short).is_err(),
        "a secret under 32 bytes"
    );
    let both = AuthConfig {
        auth_hs256_secret: Some("x".repeat(32)),
        auth_public_key: Some("/nonexistent".into()),
        ..AuthConfig::default()
    };
    assert!(Verifier::from_config(&both).is_err(), "two kinds of key");
    let missing = AuthConfig {
        auth_public_key: Some("/nonexistent/key.pem".into()),
        ..AuthConfig::default()
    };
    assert!(
        Verifier::from_config(&missing).is_err(),
        "a key file that is not there"
    );
    assert!(
        Verifier::from_config(&AuthConfig::default())
            .unwrap()
            .is_none(),
        "off by default"
    );
}

#[test]
fn the_defaults_are_the_flags_defaults() {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        server: service_runtime::server::ServerConfig,
    }
    let parsed = <Cli as clap::Parser>::parse_from(["test"]).server;
    let default = service_runtime::server::ServerConfig::default();
    assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
}
