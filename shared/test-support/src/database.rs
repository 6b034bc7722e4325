//! A PostgreSQL for `cargo test` when `DATABASE_URL` is not set.
//!
//! Every test binary that needs the database says `test_support::database_for_tests!();`
//! once. Before its tests run, that starts a throwaway cluster with `scripts/pg` (in a
//! temporary folder, on a free port, as scripts/test would) when `DATABASE_URL` is unset and
//! the server binaries are installed, points `DATABASE_URL` at it, and stops it when the
//! binary exits. When it cannot, it says in one line what to do.
//!
//! The only unsafe code in the workspace: setting an environment variable before `main`,
//! and registering the exit hook.
#![allow(unsafe_code)]

use std::{path::PathBuf, process::Command, sync::Mutex};

/// The cluster this process started, to stop at exit.
static STARTED: Mutex<Option<PathBuf>> = Mutex::new(None);

/// `scripts/pg` of this checkout.
pub(crate) fn scripts_pg() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg")
}

/// Starts a throwaway PostgreSQL unless `DATABASE_URL` is set. Runs before `main`, while
/// the process has one thread.
pub fn ensure_database() {
    if std::env::var_os("DATABASE_URL").is_some() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("orders-cargo-test-pg.{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(54_399);
    let started = Command::new(scripts_pg())
        .arg("start")
        .env("PG_DIR", &dir)
        .env("PG_PORT", port.to_string())
        .env(
            "PG_OPTIONS",
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        )
        .output();
    match started {
        Ok(out) if out.status.success() => {
            let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            // SAFETY: this runs before main, before any other thread exists.
            unsafe { std::env::set_var("DATABASE_URL", &url) };
            *STARTED.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir);
            // SAFETY: registers a plain function to run at exit.
            unsafe { atexit(stop_at_exit) };
            eprintln!("DATABASE_URL was not set: started a throwaway PostgreSQL at {url}");
        }
        Ok(out) => eprintln!(
            "DATABASE_URL is not set and no throwaway PostgreSQL could be started ({}): \
             install PostgreSQL's server binaries, or set DATABASE_URL (scripts/pg start prints one)",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => eprintln!(
            "DATABASE_URL is not set and scripts/pg could not run ({err}): set DATABASE_URL \
             to a PostgreSQL where tests may create databases"
        ),
    }
}

unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

extern "C" fn stop_at_exit() {
    stop_database();
}

/// Stops the cluster [`ensure_database`] started, if it did. Runs after `main`.
pub fn stop_database() {
    let Some(dir) = STARTED.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    let _ = Command::new(scripts_pg())
        .arg("stop")
        .env("PG_DIR", &dir)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Gives this test binary a database when `DATABASE_URL` is unset (see the module docs).
#[macro_export]
macro_rules! database_for_tests {
    () => {
        #[allow(unsafe_code)]
        #[$crate::ctor::ctor(unsafe, crate_path = $crate::ctor)]
        fn start_a_database_for_these_tests() {
            $crate::database::ensure_database();
        }
    };
}
