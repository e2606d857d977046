//! Extra RabbitMQ nodes for the tests that need a broker configured otherwise than the
//! machine's (TLS listeners, clusters): each runs as the `rabbitmq` user on loopback
//! with its own name, ports, data and log directories under `/tmp`, and is stopped and
//! removed when dropped, whether the test passed or not. The pre-started node on 5672
//! is left alone. All share the Erlang cookie of `/var/lib/rabbitmq`, so they can be
//! clustered ([`RabbitNode::join_cluster`]); faults: [`RabbitNode::stop_app`] /
//! [`RabbitNode::start_app`], and [`RabbitNode::kill9`] / [`RabbitNode::restart`]
//! (same name, ports and data: the node rejoins its cluster).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether extra nodes can be started here (root, the rabbitmq user, the server
/// scripts); tests that need one say why they were skipped otherwise.
pub(crate) fn available() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("starting RabbitMQ nodes needs root (they run as the rabbitmq user)".into());
    }
    if !Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server").exists() {
        return Err("no /usr/lib/rabbitmq/bin/rabbitmq-server".into());
    }
    Ok(())
}

/// A free loopback port (bound then released: another process could take it first,
/// which would fail the node's start loudly, not silently).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One extra node.
pub(crate) struct RabbitNode {
    /// `name@localhost`.
    pub(crate) node: String,
    pub(crate) dir: PathBuf,
    /// The AMQP port of its plain listener, if the config has one.
    pub(crate) amqp_port: u16,
    /// Its Erlang distribution port (kept across restarts, as the AMQP port is).
    dist_port: u16,
    /// The `runuser … rabbitmq-server` process of its current run.
    child: Child,
}

impl RabbitNode {
    /// Starts a node named `msgtest-<tag>-<pid>` whose `rabbitmq.conf` is `config`
    /// (`{amqp_port}` and `{dir}` replaced), with `plugins` enabled; waits until it
    /// runs (at most 90 s). `prepare` may write files into its directory first.
    pub(crate) fn start(
        tag: &str,
        config: &str,
        plugins: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> RabbitNode {
        let node = format!("msgtest-{tag}-{}@localhost", std::process::id());
        let dir = std::env::temp_dir().join(format!("msgtest-rabbit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mnesia")).unwrap();
        std::fs::create_dir_all(dir.join("log")).unwrap();
        prepare(&dir);
        let amqp_port = free_port();
        let dist_port = free_port();
        let config = config
            .replace("{amqp_port}", &amqp_port.to_string())
            .replace("{dir}", &dir.display().to_string());
        std::fs::write(dir.join("rabbitmq.conf"), config).unwrap();
        std::fs::write(
            dir.join("enabled_plugins"),
            format!("[{}].\n", plugins.join(",")),
        )
        .unwrap();
        let chown = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(chown.success(), "chown {}", dir.display());
        let child = spawn_server(&node, &dir, amqp_port, dist_port);
        let started = RabbitNode {
            node,
            dir,
            amqp_port,
            dist_port,
            child,
        };
        started.await_running(Duration::from_secs(90));
        started
    }

    /// Waits until the node's application runs, at most `limit`; panics with the
    /// server's output otherwise.
    fn await_running(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self
                .ctl(&["await_startup", "--timeout", "5"])
                .status
                .success()
            {
                return;
            }
            let out = std::fs::read_to_string(self.dir.join("server.out")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "node {} did not start within {limit:?}: {out}",
                self.node
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Makes this node a member of `other`'s cluster (`stop_app`, `join_cluster`,
    /// `start_app`); on return it runs as a cluster member. Both must share the
    /// Erlang cookie, as every node started here does (`HOME=/var/lib/rabbitmq`).
    pub(crate) fn join_cluster(&self, other: &RabbitNode) {
        self.must(&["stop_app"]);
        self.must(&["join_cluster", &other.node]);
        self.must(&["start_app"]);
        self.await_running(Duration::from_secs(60));
    }

    /// `rabbitmqctl stop_app`: the Erlang VM stays up, the broker application (its
    /// listeners and connections) stops. Returns once it has stopped.
    pub(crate) fn stop_app(&self) {
        self.must(&["stop_app"]);
    }

    /// `rabbitmqctl start_app`, then waits (at most 60 s) until the node runs.
    pub(crate) fn start_app(&self) {
        self.must(&["start_app"]);
        self.await_running(Duration::from_secs(60));
    }

    /// Kills the node's Erlang VM with SIGKILL (no goodbye to clients or peers) and
    /// reaps its server process; returns the pid killed. Bring it back with
    /// [`restart`](RabbitNode::restart).
    pub(crate) fn kill9(&mut self) -> u32 {
        let pid = self.beam_pid().expect("the node's pid file");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&cmdline).contains("beam"),
            "pid {pid} of {} is no Erlang VM",
            self.node
        );
        let killed = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success(), "kill -9 {pid}");
        let _ = self.child.wait();
        pid
    }

    /// Starts the node again (after [`kill9`](RabbitNode::kill9)) with the same name,
    /// ports and data, so it rejoins its cluster; waits (at most 90 s) until it runs.
    pub(crate) fn restart(&mut self) {
        let _ = self.child.try_wait();
        self.child = spawn_server(&self.node, &self.dir, self.amqp_port, self.dist_port);
        self.await_running(Duration::from_secs(90));
    }

    /// Waits (at most `limit`) until stopping this node would leave every quorum queue
    /// with a majority (`rabbitmq-queues check_if_node_is_quorum_critical`): the
    /// other members caught up after an earlier fault. Panics otherwise.
    pub(crate) fn await_not_quorum_critical(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let out = Command::new("rabbitmq-queues")
                .args(["-n", &self.node, "check_if_node_is_quorum_critical"])
                .output()
                .expect("rabbitmq-queues runs");
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "stopping {} still leaves a quorum queue without a majority after {limit:?}: {}",
                self.node,
                String::from_utf8_lossy(&out.stdout)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `rabbitmqctl -n <node> args…`.
    pub(crate) fn ctl(&self, args: &[&str]) -> Output {
        Command::new("rabbitmqctl")
            .args(["-n", &self.node])
            .args(args)
            .output()
            .expect("rabbitmqctl runs")
    }

    /// Like [`ctl`](RabbitNode::ctl), asserting success.
    pub(crate) fn must(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The Erlang VM's pid, from the node's pid file.
    pub(crate) fn beam_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Runs `rabbitmq-server` for a node as the `rabbitmq` user, its output appended to
/// `server.out` in its directory.
fn spawn_server(node: &str, dir: &Path, amqp_port: u16, dist_port: u16) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.out"))
        .unwrap();
    Command::new("runuser")
        .args(["-u", "rabbitmq", "--", "env"])
        .arg(format!("RABBITMQ_NODENAME={node}"))
        .arg(format!("RABBITMQ_NODE_PORT={amqp_port}"))
        .arg(format!("RABBITMQ_DIST_PORT={dist_port}"))
        .arg(format!(
            "RABBITMQ_CONFIG_FILE={}",
            dir.join("rabbitmq").display()
        ))
        .arg(format!(
            "RABBITMQ_MNESIA_BASE={}",
            dir.join("mnesia").display()
        ))
        .arg(format!("RABBITMQ_LOG_BASE={}", dir.join("log").display()))
        .arg(format!("RABBITMQ_PID_FILE={}", dir.join("pid").display()))
        .arg(format!(
            "RABBITMQ_ENABLED_PLUGINS_FILE={}",
            dir.join("enabled_plugins").display()
        ))
        .arg("RABBITMQ_CONF_ENV_FILE=/dev/null")
        .arg("ERL_EPMD_ADDRESS=127.0.0.1")
        .arg("ERL_FLAGS=-kernel inet_dist_use_interface {127,0,0,1}")
        .arg("HOME=/var/lib/rabbitmq")
        .arg("/usr/lib/rabbitmq/bin/rabbitmq-server")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("runuser starts rabbitmq-server")
}

/// Stops a node and removes its directory; for a test's own thread, so that a node a
/// timed-out worker still holds is stopped when the test fails
/// ([`guard`](RabbitNode::guard)).
pub(crate) struct NodeGuard {
    node: String,
    dir: PathBuf,
}

impl RabbitNode {
    /// A guard that stops this node when dropped (as dropping the node does).
    pub(crate) fn guard(&self) -> NodeGuard {
        NodeGuard {
            node: self.node.clone(),
            dir: self.dir.clone(),
        }
    }
}

/// Stops the node: `rabbitmqctl stop` (which waits for it to end), then, should its
/// Erlang VM still run, kills it — after checking that the pid is still a beam process
/// (not a pid reused by another), and removes its directory.
fn stop_node(node: &str, dir: &Path) {
    if !dir.exists() {
        return;
    }
    let _ = Command::new("timeout")
        .args(["20", "rabbitmqctl", "-n", node, "stop"])
        .output();
    let pid = std::fs::read_to_string(dir.join("pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    if let Some(pid) = pid {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("beam") {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        stop_node(&self.node, &self.dir);
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        stop_node(&self.node, &self.dir);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
