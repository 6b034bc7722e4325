//! `OwnConnection` against a real PostgreSQL: one connection kept across statements and
//! errors PostgreSQL reports, made again once it is broken, and made through an outage.

test_support::database_for_tests!();

use std::time::Duration;

use service_runtime::database::OwnConnection;
use sqlx::{PgPool, postgres::PgPoolOptions};
use test_support::proxy::{Mode, Proxy};

async fn backend(own: &mut OwnConnection) -> Result<i32, sqlx::Error> {
    own.run(async |conn| {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conn)
            .await
    })
    .await
}

/// A pool with `pool`'s settings and some of its own, as a service's pool has.
fn service_pool(pool: &PgPool, acquire_timeout: Duration) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(
            (*pool.connect_options())
                .clone()
                .application_name("the pool")
                .options([("statement_timeout", "7s")]),
        )
}

#[sqlx::test(migrations = false)]
async fn an_own_connection_is_kept_until_it_breaks_then_made_again(pool: PgPool) {
    let mut own = OwnConnection::new(
        &service_pool(&pool, Duration::from_secs(5)),
        "own connection test",
        &[("plan_cache_mode", "force_custom_plan")],
    );
    let first = backend(&mut own).await.unwrap();
    assert_eq!(backend(&mut own).await.unwrap(), first);

    // Its own name and settings, and the pool's settings.
    let settings: (String, String, String) = own
        .run(async |conn| {
            sqlx::query_as(
                "SELECT current_setting('application_name'), current_setting('plan_cache_mode'), \
                   current_setting('statement_timeout')",
            )
            .fetch_one(conn)
            .await
        })
        .await
        .unwrap();
    assert_eq!(
        settings,
        (
            "own connection test".to_owned(),
            "force_custom_plan".to_owned(),
            "7s".to_owned()
        )
    );

    // An error PostgreSQL reports leaves the connection as it was.
    let failed = own
        .run(async |conn| sqlx::query("SELECT 1 / 0").execute(conn).await)
        .await;
    assert!(
        matches!(failed, Err(sqlx::Error::Database(_))),
        "{failed:?}"
    );
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

#[sqlx::test(migrations = false)]
async fn an_own_connection_is_made_through_a_short_outage_and_gives_up_after_the_timeout(
    pool: PgPool,
) {
    let upstream = format!(
        "{}:{}",
        pool.connect_options().get_host(),
        pool.connect_options().get_port()
    );
    let proxy = Proxy::start(upstream.parse().unwrap(), Mode::Down).await;
    // A pool whose connections go through the proxy.
    let through = |timeout| {
        PgPoolOptions::new()
            .acquire_timeout(timeout)
            .connect_lazy_with(
                (*pool.connect_options())
                    .clone()
                    .host("127.0.0.1")
                    .port(proxy.addr.port()),
            )
    };

    // Down for longer than the timeout: an error, once the timeout has passed.
    let mut own = OwnConnection::new(&through(Duration::from_millis(300)), "outage test", &[]);
    let started = std::time::Instant::now();
    assert!(backend(&mut own).await.is_err());
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );

    // Down for a moment: the statement waits, retrying, and runs once the server is back.
    let mut own = OwnConnection::new(&through(Duration::from_secs(10)), "outage test", &[]);
    let waiting = tokio::spawn(async move { backend(&mut own).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished());
    proxy.set(Mode::Pass);
    assert!(waiting.await.unwrap().is_ok());
}
