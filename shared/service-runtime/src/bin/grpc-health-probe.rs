//! `grpc-health-probe ADDR [SERVICE]`: exits 0 when the gRPC health check at ADDR says
//! SERVING, 1 otherwise. The container health check of every service (no shell needed).

use std::time::Duration;

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next() else {
        eprintln!("usage: grpc-health-probe ADDR [SERVICE]");
        std::process::exit(2);
    };
    let service = args.next().unwrap_or_default();
    let url = if addr.contains("://") {
        addr
    } else {
        format!("http://{addr}")
    };
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(url)?
            .connect()
            .await?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest { service })
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(response.into_inner().status())
    };
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(ServingStatus::Serving)) => println!("SERVING"),
        Ok(Ok(status)) => {
            println!("{status:?}");
            std::process::exit(1);
        }
        Ok(Err(err)) => {
            eprintln!("health check failed: {err}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("health check timed out");
            std::process::exit(1);
        }
    }
}
