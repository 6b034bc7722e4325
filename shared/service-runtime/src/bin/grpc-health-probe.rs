//! `grpc-health-probe ADDR [SERVICE] [--ca FILE [--cert FILE --key FILE]]`: exits 0 when
//! the gRPC health check at ADDR says SERVING, 1 otherwise, 2 on a usage error. The
//! container health check of every service (no shell needed).
//!
//! With `--ca` (or an `https://` ADDR) it speaks TLS, trusting that CA; with `--cert` and
//! `--key` it presents a client certificate, for servers that require mutual TLS.

use std::{path::PathBuf, time::Duration};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn usage() -> ! {
    eprintln!("usage: grpc-health-probe ADDR [SERVICE] [--ca FILE [--cert FILE --key FILE]]");
    std::process::exit(2);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut positional = Vec::new();
    let (mut ca, mut cert, mut key) = (None::<PathBuf>, None::<PathBuf>, None::<PathBuf>);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().map(PathBuf::from).unwrap_or_else(|| usage());
        match arg.as_str() {
            "--ca" => ca = Some(value()),
            "--cert" => cert = Some(value()),
            "--key" => key = Some(value()),
            flag if flag.starts_with("--") => usage(),
            _ => positional.push(arg),
        }
    }
    let (addr, service) = match positional.as_slice() {
        [addr] => (addr.clone(), String::new()),
        [addr, service] => (addr.clone(), service.clone()),
        _ => usage(),
    };
    if cert.is_some() != key.is_some() || (cert.is_some() && ca.is_none()) {
        usage();
    }
    let tls = ca.is_some() || addr.starts_with("https://");
    let url = if addr.contains("://") {
        addr
    } else if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let check = async {
        let mut endpoint = tonic::transport::Endpoint::from_shared(url)?;
        if let Some(ca) = &ca {
            let identity = cert.as_deref().zip(key.as_deref());
            endpoint = endpoint.tls_config(service_runtime::tls::client(ca, identity, None)?)?;
        }
        let channel = endpoint.connect().await?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest { service })
            .await?;
        Ok::<_, anyhow::Error>(response.into_inner().status())
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(ServingStatus::Serving)) => println!("SERVING"),
        Ok(Ok(status)) => {
            println!("{status:?}");
            std::process::exit(1);
        }
        Ok(Err(err)) => {
            eprintln!("health check failed: {err:#}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("health check timed out");
            std::process::exit(1);
        }
    }
}
