//! Bearer-token authentication and per-RPC authorisation, as one tower layer in front of
//! every service.
//!
//! A call carries `authorization: Bearer <JWT>`. The token is checked on every call:
//! signature (HS256 with a shared secret, or RS256/ES256 with a public key file), expiry,
//! audience and, when configured, issuer. A missing, malformed, expired or wrongly signed
//! token, or one for another audience, gets UNAUTHENTICATED; a valid token without the role
//! the RPC needs gets PERMISSION_DENIED. Roles come from the `roles` claim (a list) or the
//! `scope` claim (space-separated):
//!
//! - `orders.write`: every CommandService RPC;
//! - `orders.read`: every QueryService RPC (WatchOrder included), GetSaga and ListSagas;
//! - `sagas.admin`: RetrySaga and AbortSaga.
//!
//! Health and reflection stay open, so probes and grpcurl's `list` work without a token.
//! Without configuration the layer lets every call through, and the service says so at
//! start-up, loudly.

use std::{
    future::Future,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

/// Authentication settings (`--help` lists the flags).
#[derive(Debug, Clone, clap::Args)]
pub struct AuthConfig {
    /// Shared secret of HS256 tokens. Set this or --auth-public-key to turn authentication
    /// on.
    #[arg(long, env = "AUTH_HS256_SECRET", hide_env_values = true)]
    pub auth_hs256_secret: Option<String>,
    /// PEM public key (RSA or P-256 EC) of RS256 or ES256 tokens.
    #[arg(long, env = "AUTH_PUBLIC_KEY")]
    pub auth_public_key: Option<PathBuf>,
    /// The audience tokens must name (the `aud` claim).
    #[arg(long, env = "AUTH_AUDIENCE", default_value = "orders")]
    pub auth_audience: String,
    /// The issuer tokens must name (the `iss` claim), if any.
    #[arg(long, env = "AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
}

impl Default for AuthConfig {
    /// Off, with the flags' defaults.
    fn default() -> Self {
        AuthConfig {
            auth_hs256_secret: None,
            auth_public_key: None,
            auth_audience: "orders".into(),
            auth_issuer: None,
        }
    }
}

/// The role an RPC needs, by its path; `None` for the open ones (health, reflection).
pub fn required_role(path: &str) -> Option<&'static str> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    match service {
        "orders.v1.CommandService" => Some("orders.write"),
        "orders.v1.QueryService" => Some("orders.read"),
        "orders.v1.SagaService" => Some(match method {
            "RetrySaga" | "AbortSaga" => "sagas.admin",
            _ => "orders.read",
        }),
        // Health, reflection, and anything else unknown is answered UNIMPLEMENTED anyway.
        _ => None,
    }
}

/// Checks tokens.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Debug, serde::Deserialize)]
struct Claims {
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scope: Option<String>,
}

impl Verifier {
    /// The verifier `config` describes; `None` when authentication is off.
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Option<Verifier>> {
        let (key, algorithms) = match (&config.auth_hs256_secret, &config.auth_public_key) {
            (Some(_), Some(_)) => {
                anyhow::bail!("set AUTH_HS256_SECRET or AUTH_PUBLIC_KEY, not both")
            }
            (None, None) => return Ok(None),
            (Some(secret), None) => {
                if secret.len() < 32 {
                    anyhow::bail!("AUTH_HS256_SECRET must be at least 32 bytes");
                }
                let key = DecodingKey::from_secret(secret.as_bytes())
                    .map_err(|e| anyhow::anyhow!("AUTH_HS256_SECRET: {e}"))?;
                (key, vec![Algorithm::HS256])
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("AUTH_PUBLIC_KEY {}: {e}", path.display()))?;
                if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    (key, vec![Algorithm::RS256])
                } else {
                    let key = DecodingKey::from_ec_pem(&pem).map_err(|e| {
                        anyhow::anyhow!(
                            "AUTH_PUBLIC_KEY {}: not an RSA or EC public key: {e}",
                            path.display()
                        )
                    })?;
                    (key, vec![Algorithm::ES256])
                }
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.set_audience(&[&config.auth_audience]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        validation.leeway = 5;
        if let Some(issuer) = &config.auth_issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(Some(Verifier { key, validation }))
    }

    /// Checks a call's `authorization` header for `role`.
    pub fn check(&self, authorization: Option<&str>, role: &str) -> Result<(), Status> {
        let Some(header) = authorization else {
            return Err(Status::unauthenticated(
                "missing credentials: send `authorization: Bearer <token>`",
            ));
        };
        let Some(token) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
        else {
            return Err(Status::unauthenticated(
                "malformed authorization: expected `Bearer <token>`",
            ));
        };
        let claims = jsonwebtoken::decode::<Claims>(token.trim(), &self.key, &self.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::InvalidAudience => "the token is for another audience",
                    ErrorKind::InvalidIssuer => "the token is from another issuer",
                    ErrorKind::InvalidSignature => "the token's signature does not verify",
                    ErrorKind::InvalidAlgorithm => "the token is signed with another algorithm",
                    ErrorKind::MissingRequiredClaim(_) => {
                        "the token lacks a required claim (exp, aud)"
                    }
                    _ => "the token is malformed",
                };
                Status::unauthenticated(why)
            })?
            .claims;
        let scopes = claims.scope.iter().flat_map(|s| s.split_whitespace());
        if claims
            .roles
            .iter()
            .map(String::as_str)
            .chain(scopes)
            .any(|r| r == role)
        {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "this call needs the role {role}"
            )))
        }
    }
}

/// A client's token, sent as `authorization: Bearer <token>` on every call (or nothing when
/// there is no token).
#[derive(Debug, Clone, Default)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    /// Sends `token` (a JWT), if any.
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        token
            .map(|t| {
                format!("Bearer {}", t.trim())
                    .parse()
                    .map_err(|_| anyhow::anyhow!("the token is not valid header text"))
            })
            .transpose()
            .map(BearerToken)
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The layer; with no verifier every call passes.
#[derive(Clone, Default)]
pub struct AuthLayer {
    verifier: Option<Arc<Verifier>>,
}

impl AuthLayer {
    /// Checks calls with `verifier`, or none when `None`.
    pub fn new(verifier: Option<Verifier>) -> Self {
        Self {
            verifier: verifier.map(Arc::new),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The layer's service.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    verifier: Option<Arc<Verifier>>,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for Auth<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if let Some(verifier) = &self.verifier
            && let Some(role) = required_role(request.uri().path())
        {
            let authorization = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if let Err(status) = verifier.check(authorization, role) {
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        Box::pin(self.inner.call(request))
    }
}
