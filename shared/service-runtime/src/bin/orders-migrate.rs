//! `orders-migrate`: applies the database migrations to `DATABASE_URL` (as the schema's
//! owner) and exits. The compose file runs it once before the services start (they would
//! apply them too).
//!
//! It also creates each service's login role, when its name and password are given:
//! `COMMAND_SERVICE_DB_USER` and `COMMAND_SERVICE_DB_PASSWORD` (a member of
//! `orders_command`), `QUERY_SERVICE_DB_USER`/`_PASSWORD` (`orders_query`),
//! `SAGA_SERVICE_DB_USER`/`_PASSWORD` (`orders_saga`). A role that exists gets the
//! password given.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL must be set")?;
    let pool = service_runtime::database::connect(&url, 1).await?;
    println!("migrations applied");
    for (service, group) in service_runtime::database::SERVICE_ROLES {
        let prefix = service.replace('-', "_").to_uppercase();
        let user = std::env::var(format!("{prefix}_DB_USER")).ok();
        let password = std::env::var(format!("{prefix}_DB_PASSWORD")).ok();
        match (user, password) {
            (Some(user), Some(password)) => {
                service_runtime::database::ensure_login_role(&pool, &user, &password, group)
                    .await?;
                println!("login role {user} ({group}) ready for {service}");
            }
            (None, None) => {}
            _ => {
                return Err(format!(
                    "set both {prefix}_DB_USER and {prefix}_DB_PASSWORD, or neither"
                )
                .into());
            }
        }
    }
    pool.close().await;
    Ok(())
}
