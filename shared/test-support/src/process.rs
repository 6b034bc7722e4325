//! A service binary run as a real process, the way users and containers run it: its address
//! and configuration from the environment, its logs to a file, stopped with SIGTERM (or
//! killed).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A running service process.
pub struct Process {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its standard output and error.
    pub log: PathBuf,
    child: Child,
}

impl Process {
    /// Starts `binary` listening on a free port, named by `addr_var` (e.g.
    /// `COMMAND_SERVICE_ADDR`), with `env` added to this process's environment.
    pub fn start(binary: &str, addr_var: &str, env: &[(&str, &str)]) -> Process {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let log = std::env::temp_dir().join(format!(
            "orders-process-{}-{}.log",
            addr.port(),
            std::process::id()
        ));
        let out = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(binary)
            .env(addr_var, addr.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::from(out.try_clone().expect("a log file")))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        Process { addr, log, child }
    }

    /// Waits (up to 30 s) until its health check says SERVING; panics with its log if it
    /// exits or never does.
    pub async fn wait_serving(&mut self) {
        let url = format!("http://{}", self.addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the process exited ({status}) during start-up:\n{}",
                    self.logs()
                );
            }
            if let Ok(channel) = tonic::transport::Endpoint::from_shared(url.clone())
                .expect("endpoint")
                .connect()
                .await
            {
                let check = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                if check.is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the process never reported SERVING:\n{}", self.logs());
    }

    /// Waits (up to `within`) for the process to exit by itself.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "the process did not exit within {within:?}:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits (up to 20 s) for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -TERM failed");
        self.wait_exit(Duration::from_secs(20)).await
    }

    /// What it wrote to standard output and error.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
