//! A PostgreSQL hot standby of the test cluster, for replica tests: `scripts/pg
//! standby-start` with a folder and port of its own, stopped and removed on drop.

use std::{path::PathBuf, process::Command};

use sqlx::PgPool;

/// A running (or stopped) standby of the cluster behind a test pool.
pub struct Standby {
    dir: PathBuf,
    primary_port: u16,
    port: u16,
    database: String,
}

impl Standby {
    /// Copies the cluster behind `pool` (with `pg_basebackup`) and starts the copy as a
    /// streaming hot standby on a free port.
    pub fn start(pool: &PgPool) -> Self {
        let options = pool.connect_options();
        let dir = std::env::temp_dir().join(format!("orders-standby.{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a folder for the standby");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let standby = Self {
            dir,
            primary_port: options.get_port(),
            port,
            database: options
                .get_database()
                .expect("the test pool names its database")
                .to_owned(),
        };
        standby.run("standby-start");
        standby
    }

    /// The standby's URL for the test's database.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.port, self.database
        )
    }

    /// Stops the standby; its data stays, so [`Standby::resume`] starts it again.
    pub fn stop(&self) {
        self.run("standby-stop");
    }

    /// Starts a stopped standby again, on the same port; it catches up by streaming.
    pub fn resume(&self) {
        self.run("standby-start");
    }

    fn run(&self, what: &str) {
        let out = Command::new(crate::database::scripts_pg())
            .arg(what)
            .env("PG_PORT", self.primary_port.to_string())
            .env("PG_STANDBY_PORT", self.port.to_string())
            .env("PG_STANDBY_DIR", self.dir.join("standby"))
            .env("PG_DIR", &self.dir)
            .output()
            .expect("scripts/pg runs");
        assert!(
            out.status.success(),
            "scripts/pg {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = Command::new(crate::database::scripts_pg())
            .arg("standby-stop")
            .env("PG_STANDBY_DIR", self.dir.join("standby"))
            .env("PG_DIR", &self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
