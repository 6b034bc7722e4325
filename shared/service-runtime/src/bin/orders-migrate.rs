//! `orders-migrate`: applies the database migrations to `DATABASE_URL` and exits. The
//! compose file runs it once before the services start (they would apply them too).

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL must be set")?;
    let pool = service_runtime::database::connect(&url, 1).await?;
    pool.close().await;
    println!("migrations applied");
    Ok(())
}
