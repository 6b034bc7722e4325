//! The limits every server applies, from the same flags and environment variables, so no
//! service can be made to queue without bound, hold a connection for ever, or decode a
//! message of any size.

use std::time::Duration;

/// Server limits (`--help` lists the flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// The largest request or response message, in bytes (larger requests get
    /// OUT_OF_RANGE).
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 256 * 1024)]
    pub max_message_bytes: usize,
    /// The longest one call may run before it is cancelled with DEADLINE_EXCEEDED (ms); a
    /// shorter grpc-timeout from the client wins. Streams (WatchOrder) are not limited.
    #[arg(long, env = "CALL_TIMEOUT_MS", default_value_t = 30_000)]
    pub call_timeout_ms: u64,
    /// Calls one connection may have in flight; past this, new calls are refused at once
    /// with RESOURCE_EXHAUSTED instead of queueing.
    #[arg(long, env = "MAX_CALLS_PER_CONNECTION", default_value_t = 256)]
    pub max_calls_per_connection: usize,
    /// HTTP/2 streams one connection may open.
    #[arg(long, env = "MAX_STREAMS_PER_CONNECTION", default_value_t = 1_024)]
    pub max_streams_per_connection: u32,
    /// A connection is closed (gracefully) after this long, so clients rebalance (s).
    #[arg(long, env = "MAX_CONNECTION_AGE_S", default_value_t = 3_600)]
    pub max_connection_age_s: u64,
    /// HTTP/2 keep-alive ping interval; a peer that does not answer within 20 s is
    /// dropped (s).
    #[arg(long, env = "HTTP2_KEEPALIVE_S", default_value_t = 30)]
    pub http2_keepalive_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 256 * 1024,
            call_timeout_ms: 30_000,
            max_calls_per_connection: 256,
            max_streams_per_connection: 1_024,
            max_connection_age_s: 3_600,
            http2_keepalive_s: 30,
        }
    }
}

impl Limits {
    /// Applies the connection- and call-level limits to a server.
    pub fn apply<L>(&self, server: tonic::transport::Server<L>) -> tonic::transport::Server<L> {
        server
            .timeout(Duration::from_millis(self.call_timeout_ms.max(1)))
            .concurrency_limit_per_connection(self.max_calls_per_connection.max(1))
            .load_shed(true)
            .max_concurrent_streams(self.max_streams_per_connection.max(1))
            .max_connection_age(Duration::from_secs(self.max_connection_age_s.max(1)))
            .http2_keepalive_interval(Some(Duration::from_secs(self.http2_keepalive_s.max(1))))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
    }
}

/// Applies a [`Limits`]' message size to a generated gRPC server (every generated server
/// type has these two methods; no trait ties them together).
#[macro_export]
macro_rules! limit_messages {
    ($server:expr, $limits:expr) => {
        $server
            .max_decoding_message_size($limits.max_message_bytes)
            .max_encoding_message_size($limits.max_message_bytes)
    };
}
