//! How the load generator reaches the services: one HTTP/2 connection per channel, over
//! TLS when `BENCH_CA` names a CA certificate, with `authorization: Bearer $BENCH_TOKEN`
//! on every call when that is set (`scripts/bench --secure` sets both), so the secured
//! configuration is measured the way clients would call it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{body::Body, metadata::MetadataValue, transport::Endpoint};

/// A channel that adds the bench's token to every request.
#[derive(Clone)]
pub struct Channel {
    inner: tonic::transport::Channel,
    token: Option<http::HeaderValue>,
}

/// Connects one channel to `url`.
pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())?.tcp_nodelay(true);
    if let Ok(ca) = std::env::var("BENCH_CA") {
        let pem = std::fs::read(&ca)?;
        endpoint = endpoint.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        )?;
    }
    let token = match std::env::var("BENCH_TOKEN") {
        Ok(token) => {
            let value: MetadataValue<_> = format!("Bearer {token}").parse()?;
            Some(http::HeaderValue::from_bytes(value.as_bytes())?)
        }
        Err(_) => None,
    };
    Ok(Channel {
        inner: endpoint.connect().await?,
        token,
    })
}

impl tower_service::Service<http::Request<Body>> for Channel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some(token) = &self.token {
            request.headers_mut().insert("authorization", token.clone());
        }
        Box::pin(tower_service::Service::call(&mut self.inner, request))
    }
}
