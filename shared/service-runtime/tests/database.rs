//! `OwnConnection` against a real PostgreSQL: one connection kept across statements and
//! errors PostgreSQL reports, made again once it is broken.

test_support::database_for_tests!();

use service_runtime::database::OwnConnection;
use sqlx::{PgPool, postgres::PgPoolOptions};

async fn backend(own: &mut OwnConnection) -> Result<i32, sqlx::Error> {
    let conn = own.get().await?;
    let pid = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await;
    own.settle(&pid);
    pid
}

#[sqlx::test(migrations = false)]
async fn an_own_connection_is_kept_until_it_breaks_then_made_again(pool: PgPool) {
    let with_setting = PgPoolOptions::new().max_connections(1).connect_lazy_with(
        (*pool.connect_options())
            .clone()
            .options([("statement_timeout", "7s")]),
    );
    let mut own = OwnConnection::new(
        &with_setting,
        "own connection test",
        &[("plan_cache_mode", "force_custom_plan")],
    );
    let first = backend(&mut own).await.unwrap();
    assert_eq!(backend(&mut own).await.unwrap(), first);

    let (name, mode): (String, String) = sqlx::query_as(
        "SELECT current_setting('application_name'), current_setting('plan_cache_mode')",
    )
    .fetch_one(own.get().await.unwrap())
    .await
    .unwrap();
    assert_eq!(
        (name.as_str(), mode.as_str()),
        ("own connection test", "force_custom_plan")
    );
    // The pool's settings come along.
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(own.get().await.unwrap())
        .await
        .unwrap();
    assert_eq!(timeout, "7s");

    // An error PostgreSQL reports leaves the connection as it was.
    let failed = sqlx::query("SELECT 1 / 0")
        .execute(own.get().await.unwrap())
        .await;
    assert!(
        matches!(failed, Err(sqlx::Error::Database(_))),
        "{failed:?}"
    );
    own.settle(&failed);
    assert_eq!(backend(&mut own).await.unwrap(), first);

    // A connection that dies fails its next statement, and the one after gets a new one.
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ended);
    assert!(backend(&mut own).await.is_err());
    let second = backend(&mut own).await.unwrap();
    assert_ne!(second, first);
    assert_eq!(backend(&mut own).await.unwrap(), second);
}
