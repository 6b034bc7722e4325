//! RED metrics for every RPC of every service, as one tower layer: requests by service,
//! method and gRPC status code, and a latency histogram. Named as go-grpc-prometheus names
//! them, so existing dashboards and alerts read them:
//!
//! - `grpc_server_handled_total{service, grpc_service, grpc_method, grpc_code}`
//! - `grpc_server_handling_seconds{service, grpc_service, grpc_method}`
//!
//! The status is read from the response headers (a trailers-only error) or, for answers
//! with a body, from the trailers, so the response body is wrapped to see them. A call the
//! client abandons before the trailers counts as `Cancelled`. Health and reflection calls
//! are not counted.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body, Frame};
use tower_layer::Layer;
use tower_service::Service;

/// The layer; `service` names the process (`command-service`, ...).
#[derive(Debug, Clone, Copy)]
pub struct RpcMetricsLayer {
    service: &'static str,
}

impl RpcMetricsLayer {
    /// Metrics labelled with `service`.
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics {
            inner,
            service: self.service,
        }
    }
}

/// The layer's service.
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    service: &'static str,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = Call::start(self.service, request.uri().path());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let (parts, body) = response.into_parts();
            let mut pending = call;
            if let Some(code) = parts.headers.get("grpc-status")
                && let Some(call) = pending.take()
            {
                call.finish(code.as_bytes());
            }
            Ok(http::Response::from_parts(
                parts,
                MeteredBody {
                    inner: body,
                    pending,
                },
            ))
        })
    }
}

/// One call being measured.
struct Call {
    service: &'static str,
    grpc_service: String,
    grpc_method: String,
    started: Instant,
    finished: bool,
}

impl Call {
    /// `None` for calls that are not counted (health, reflection, anything not gRPC).
    fn start(service: &'static str, path: &str) -> Option<Call> {
        let (grpc_service, grpc_method) = path.trim_start_matches('/').split_once('/')?;
        if grpc_service.starts_with("grpc.") {
            return None;
        }
        Some(Call {
            service,
            grpc_service: grpc_service.to_owned(),
            grpc_method: grpc_method.to_owned(),
            started: Instant::now(),
            finished: false,
        })
    }

    fn finish(mut self, code: &[u8]) {
        self.record(code_name(code));
    }

    fn record(&mut self, code: &'static str) {
        self.finished = true;
        let labels = [
            ("service", self.service.to_owned()),
            ("grpc_service", self.grpc_service.clone()),
            ("grpc_method", self.grpc_method.clone()),
        ];
        metrics::histogram!("grpc_server_handling_seconds", &labels)
            .record(self.started.elapsed().as_secs_f64());
        let [a, b, c] = labels;
        metrics::counter!(
            "grpc_server_handled_total",
            &[a, b, c, ("grpc_code", code.to_owned())]
        )
        .increment(1);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.finished {
            self.record("Cancelled");
        }
    }
}

/// gRPC's name for a status code, as grpc-status sends it.
fn code_name(code: &[u8]) -> &'static str {
    let code = std::str::from_utf8(code)
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .unwrap_or(2);
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

/// A response body that records its call when the trailers (or the end) go by.
pub struct MeteredBody<B> {
    inner: B,
    pending: Option<Call>,
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = this.pending.take()
                {
                    match trailers.get("grpc-status") {
                        Some(code) => call.finish(code.as_bytes()),
                        None => call.finish(b"2"),
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = this.pending.take() {
                    call.finish(b"13");
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = this.pending.take() {
                    call.finish(b"0");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
