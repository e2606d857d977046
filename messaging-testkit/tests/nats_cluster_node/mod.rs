//! A three-node NATS cluster with JetStream for the tests that need one: nats-server
//! 2.9 (`/usr/sbin/nats-server`) on loopback, each node with its own client, cluster
//! (route) and monitoring ports (free ones), server name, configuration and store
//! directory under `/tmp`, routes to the others and one cluster name. The pre-started
//! server on 4222 is left alone.
//!
//! The nodes run a copy of the binary kept in the cluster's directory: the NATS fault
//! tests stop and start "the" server with `start-stop-daemon --exec
//! /usr/sbin/nats-server`, which matches processes by executable. With the same
//! executable, their `--stop` would stop these nodes too, and their `--start --oknodo`
//! would take a node for the shared server and not start it again.
//!
//! Teardown: dropping the [`NatsCluster`] kills its nodes and removes its directory,
//! and so does dropping a [`ClusterGuard`] (for the test's own thread, should a
//! watchdog abandon the worker holding the cluster). Nodes left behind by a test
//! process that died without either (`kill -9` of the test) are killed by
//! [`NatsCluster::start`] from their pid files, once it checked that each pid still
//! runs a node of that directory.
//!
//! Faults: [`NatsCluster::terminate`] (`SIGTERM`: the server closes its connections
//! and leaves the cluster cleanly), [`NatsCluster::kill9`] (`SIGKILL`: no goodbye) and
//! [`NatsCluster::restart`] (same name, ports, configuration and store: the node
//! rejoins and catches up). The monitoring endpoint is read over plain HTTP/1.0 with
//! a `TcpStream`: `/routez`, `/jsz` and `/healthz` to wait for the cluster, `/connz` to
//! find which node a client is connected to (the transport names its connections
//! `messaging-rs:<pid>`).

#![allow(dead_code)] // each test binary uses part of it

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The server the nodes run (a copy of it, see the module docs).
pub(crate) const NATS: &str = "/usr/sbin/nats-server";

/// What every cluster directory's name starts with, under the temporary directory:
/// `msgtest-natscluster-<tag>-<pid of the test process>`.
const DIR_PREFIX: &str = "msgtest-natscluster-";

/// How many nodes a cluster has.
pub(crate) const NODES: usize = 3;

/// Whether a cluster can be started here; tests that need one say why they were
/// skipped otherwise.
pub(crate) fn available() -> Result<(), String> {
    if !Path::new(NATS).exists() {
        return Err(format!("{NATS} is not installed"));
    }
    Ok(())
}

/// One node's ports and process.
pub(crate) struct NatsNode {
    /// `<cluster>-n<i>`: its JetStream server name.
    pub(crate) name: String,
    pub(crate) client_port: u16,
    pub(crate) cluster_port: u16,
    pub(crate) http_port: u16,
    dir: PathBuf,
    /// Its current run; `None` while it is down.
    child: Option<Child>,
}

impl NatsNode {
    /// Whether it runs (its process has not exited).
    pub(crate) fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id of its current run.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A monitoring endpoint's JSON (`/connz`, `/jsz?...`), or `None` if the node does
    /// not answer, or not with 200 and JSON.
    pub(crate) fn monitor(&self, path: &str) -> Option<Value> {
        let (status, body) = http_get(self.http_port, path)?;
        if status != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// The names of the client connections it holds (`/connz`), one per connection.
    pub(crate) fn connection_names(&self) -> Option<Vec<String>> {
        let connz = self.monitor("/connz?limit=100000")?;
        Some(
            connz["connections"]
                .as_array()?
                .iter()
                .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
                .collect(),
        )
    }

    /// Whether `/healthz` says the node is healthy: it has a JetStream meta leader and
    /// every stream and consumer it keeps a copy of is current.
    fn healthy(&self) -> Result<(), String> {
        match http_get(self.http_port, "/healthz") {
            Some((200, _)) => Ok(()),
            Some((status, body)) => Err(format!("{status} {}", body.trim())),
            None => Err("no answer".to_owned()),
        }
    }

    fn spawn(&mut self, binary: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("the node's log file");
        let child = Command::new(binary)
            .arg("-c")
            .arg(self.dir.join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the node's log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", binary.display()));
        self.child = Some(child);
    }

    /// Its log's lines that contain `text`, for a failure's diagnosis.
    pub(crate) fn log_lines(&self, text: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("server.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(text))
            .map(str::to_owned)
            .collect()
    }

    /// The end of its log, for a failure's message.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Three nodes, clustered; see the module docs.
pub(crate) struct NatsCluster {
    /// The cluster's name, `msgtest-<tag>-<pid>`.
    pub(crate) name: String,
    pub(crate) nodes: Vec<NatsNode>,
    dir: PathBuf,
    binary: PathBuf,
}

impl NatsCluster {
    /// Starts three nodes clustered as `msgtest-<tag>-<pid>` and returns once the
    /// cluster has formed (every node routed to the two others, a JetStream meta
    /// leader that all three know, each healthy), at most 60 s; panics with the nodes'
    /// logs otherwise. Kills the nodes of earlier test processes that died first.
    pub(crate) fn start(tag: &str) -> NatsCluster {
        let name = format!("msgtest-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{tag}-{}", std::process::id()));
        reap_leftovers(&dir);
        std::fs::create_dir_all(&dir).expect("the cluster's directory");
        let binary = dir.join("nats-server");
        std::fs::copy(NATS, &binary).expect("a copy of nats-server");
        let ports = free_ports(3 * NODES);
        let routes: Vec<String> = (0..NODES)
            .map(|i| format!("\"nats://127.0.0.1:{}\"", ports[3 * i + 1]))
            .collect();
        let mut cluster = NatsCluster {
            name: name.clone(),
            nodes: Vec::new(),
            dir: dir.clone(),
            binary,
        };
        for i in 0..NODES {
            let node_dir = dir.join(format!("n{}", i + 1));
            std::fs::create_dir_all(node_dir.join("store")).expect("the node's directory");
            let node = NatsNode {
                name: format!("{name}-n{}", i + 1),
                client_port: ports[3 * i],
                cluster_port: ports[3 * i + 1],
                http_port: ports[3 * i + 2],
                dir: node_dir,
                child: None,
            };
            // Every node lists every route, its own included (the server skips it).
            let config = format!(
                "server_name: \"{}\"\n\
                 listen: \"127.0.0.1:{}\"\n\
                 http: \"127.0.0.1:{}\"\n\
                 pid_file: \"{}\"\n\
                 jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}\n\
                 cluster {{\n  name: \"{name}\"\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                node.name,
                node.client_port,
                node.http_port,
                node.dir.join("pid").display(),
                node.dir.join("store").display(),
                node.cluster_port,
                routes.join(", "),
            );
            std::fs::write(node.dir.join("nats.conf"), config).expect("the node's configuration");
            cluster.nodes.push(node);
        }
        let binary = cluster.binary.clone();
        for node in &mut cluster.nodes {
            node.spawn(&binary);
        }
        cluster.await_formed(Duration::from_secs(60));
        cluster
    }

    /// A `nats://` URL naming every node (in the order of `order`, node indexes), with
    /// `options` (`key=value&...`, may be empty).
    pub(crate) fn url(&self, order: &[usize], options: &str) -> String {
        let hosts: Vec<String> = order
            .iter()
            .map(|&i| format!("127.0.0.1:{}", self.nodes[i].client_port))
            .collect();
        let query = if options.is_empty() {
            String::new()
        } else {
            format!("?{options}")
        };
        format!("nats://{}{query}", hosts.join(","))
    }

    /// Waits until the running nodes form the cluster: each routed to every other
    /// running node, agreeing on a JetStream meta leader of a cluster of three, and
    /// healthy (`/healthz`: every stream and consumer copy it keeps is current). Panics
    /// after `limit` with what was missing and the logs of the nodes.
    pub(crate) fn await_formed(&mut self, limit: Duration) {
        let started = Instant::now();
        loop {
            let missing = self.not_formed();
            if missing.is_empty() {
                return;
            }
            if started.elapsed() > limit {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| format!("--- {} ---\n{}", n.name, n.log_tail()))
                    .collect();
                panic!(
                    "the NATS cluster did not form within {limit:?}: {}\n{}",
                    missing.join("; "),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What keeps the running nodes from being a formed, healthy cluster.
    fn not_formed(&mut self) -> Vec<String> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect();
        let mut missing = Vec::new();
        let mut leaders = Vec::new();
        for &i in &running {
            let node = &self.nodes[i];
            match node.monitor("/routez") {
                Some(routez)
                    if routez["num_routes"].as_u64()
                        == Some(running.len().saturating_sub(1) as u64) => {}
                Some(routez) => missing.push(format!(
                    "{}: {} routes of {}",
                    node.name,
                    routez["num_routes"],
                    running.len() - 1
                )),
                None => missing.push(format!("{}: no /routez", node.name)),
            }
            match node.monitor("/jsz") {
                Some(jsz) => {
                    let meta = &jsz["meta_cluster"];
                    let leader = meta["leader"].as_str().unwrap_or_default().to_owned();
                    if leader.is_empty() || meta["cluster_size"].as_u64() != Some(NODES as u64) {
                        missing.push(format!("{}: no meta leader yet ({meta})", node.name));
                    }
                    leaders.push(leader);
                }
                None => missing.push(format!("{}: no /jsz", node.name)),
            }
            if let Err(why) = node.healthy() {
                missing.push(format!("{}: /healthz {why}", node.name));
            }
        }
        leaders.sort();
        leaders.dedup();
        if leaders.len() > 1 {
            missing.push(format!(
                "the nodes name different meta leaders: {leaders:?}"
            ));
        }
        missing
    }

    /// The node holding a client connection named `name`, if one does.
    pub(crate) fn node_of(&self, name: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.nodes[i]
                .connection_names()
                .is_some_and(|names| names.iter().any(|n| n == name))
        })
    }

    /// How many client connections named `name` each node holds (0 for a node that
    /// does not answer).
    pub(crate) fn connections_named(&self, name: &str) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|node| {
                node.connection_names()
                    .map_or(0, |names| names.iter().filter(|n| *n == name).count())
            })
            .collect()
    }

    /// Sends `SIGTERM` to node `i` and waits (at most 20 s) until it has exited: the
    /// server closes its client connections and routes and stops JetStream cleanly.
    pub(crate) fn terminate(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let mut child = node.child.take().expect("the node runs");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {}", child.id());
        let started = Instant::now();
        while matches!(child.try_wait(), Ok(None)) {
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit within 20 s of SIGTERM", node.name);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills node `i` with `SIGKILL` (no goodbye to clients or peers) and reaps it.
    pub(crate) fn kill9(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("the node runs");
        child.kill().expect("SIGKILL to the node");
        let _ = child.wait();
    }

    /// Starts node `i` again with its name, ports, configuration and store, and waits
    /// (at most 60 s) until the cluster has formed again with it, every copy it keeps
    /// current ([`await_formed`](NatsCluster::await_formed)).
    pub(crate) fn restart(&mut self, i: usize) {
        assert!(
            !self.nodes[i].is_running(),
            "{} still runs",
            self.nodes[i].name
        );
        let binary = self.binary.clone();
        self.nodes[i].spawn(&binary);
        self.await_formed(Duration::from_secs(60));
    }

    /// A guard that tears the cluster down when dropped, as dropping it does.
    pub(crate) fn guard(&self) -> ClusterGuard {
        ClusterGuard {
            dir: self.dir.clone(),
        }
    }

    /// Every stream copy the nodes report (`/jsz` with configurations and consumers):
    /// `(node name, stream detail)`.
    fn stream_copies(&self) -> Vec<(String, Value)> {
        let mut copies = Vec::new();
        for node in &self.nodes {
            let Some(jsz) =
                node.monitor("/jsz?accounts=true&streams=true&consumers=true&config=true")
            else {
                continue;
            };
            for account in jsz["account_details"].as_array().into_iter().flatten() {
                for stream in account["stream_detail"].as_array().into_iter().flatten() {
                    copies.push((node.name.clone(), stream.clone()));
                }
            }
        }
        copies
    }

    /// A stream as its leader reports it (configuration, state, the other copies,
    /// consumers), if a node leads it.
    pub(crate) fn stream_report(&self, stream: &str) -> Option<Value> {
        self.stream_copies()
            .into_iter()
            .find(|(node, s)| s["name"] == stream && s["cluster"]["leader"] == node.as_str())
            .map(|(_, s)| s)
    }

    /// A consumer as its leader reports it (`num_pending`, `num_ack_pending`,
    /// `delivered`, the other copies, ...), if a node leads it.
    pub(crate) fn consumer_report(&self, stream: &str, consumer: &str) -> Option<Value> {
        self.stream_copies()
            .into_iter()
            .filter(|(_, s)| s["name"] == stream)
            .find_map(|(node, s)| {
                s["consumer_detail"]
                    .as_array()?
                    .iter()
                    .find(|c| c["name"] == consumer && c["cluster"]["leader"] == node.as_str())
                    .cloned()
            })
    }

    /// The names of the nodes leading a stream and one of its consumers, as the first
    /// node that knows says.
    pub(crate) fn leaders(&self, stream: &str, consumer: &str) -> (Option<String>, Option<String>) {
        let copies = self.stream_copies();
        let Some((_, s)) = copies.iter().find(|(_, s)| s["name"] == stream) else {
            return (None, None);
        };
        let name = |v: &Value| v.as_str().filter(|l| !l.is_empty()).map(str::to_owned);
        let consumer_leader = s["consumer_detail"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == consumer)
            .and_then(|c| name(&c["cluster"]["leader"]));
        (name(&s["cluster"]["leader"]), consumer_leader)
    }
}

/// Tears a cluster down by its directory; see [`NatsCluster::guard`].
pub(crate) struct ClusterGuard {
    dir: PathBuf,
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        tear_down(&self.dir);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        tear_down(&self.dir);
    }
}

/// Kills every node of the cluster in `dir` still running (by its pid file, once
/// `/proc` shows that the pid runs that node's configuration, not a pid reused by
/// another process) and removes the directory.
fn tear_down(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let node_dir = entry.path();
        let Some(pid) = std::fs::read_to_string(node_dir.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let config = node_dir.join("nats.conf");
        if String::from_utf8_lossy(&cmdline).contains(&*config.to_string_lossy()) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Tears down the clusters whose test process is gone (the pid in the directory's
/// name runs no more), and one left in `ours` (this process's, same tag).
fn reap_leftovers(ours: &Path) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
            continue;
        };
        let Some(owner) = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if entry.path() != ours && Path::new(&format!("/proc/{owner}")).exists() {
            continue; // a test process that still runs: its cluster
        }
        eprintln!("removing the NATS cluster a dead test process left: {name}");
        tear_down(&entry.path());
    }
}

/// `count` distinct free loopback ports: all bound at once, then released (another
/// process could take one first, which fails the node's start loudly, not silently).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound port").port())
        .collect()
}

/// `GET path` from the monitoring port: `(status, body)`, or `None` if the node does
/// not answer within a second.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}
