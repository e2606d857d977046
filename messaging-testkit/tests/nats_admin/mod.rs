//! What the NATS tests look at on the server itself (streams, consumers, the server's
//! version) and remove when they are done, through async-nats directly.

#![allow(dead_code)] // each test binary uses part of it

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

/// A JetStream connection of the test's own.
pub(crate) struct Admin {
    runtime: tokio::runtime::Runtime,
    client: async_nats::Client,
    context: jetstream::Context,
}

impl Admin {
    /// Connects to `host:port` (a `nats://` URL without options).
    pub(crate) fn connect(url: &str) -> Admin {
        // A thread of its own keeps the connection alive (and reconnecting) between
        // requests.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let address = url
            .split('?')
            .next()
            .unwrap()
            .trim_start_matches("nats://")
            .to_owned();
        let (client, context) = runtime.block_on(async {
            let client = async_nats::connect(address)
                .await
                .expect("the test connects to NATS");
            let context = jetstream::new(client.clone());
            (client, context)
        });
        Admin {
            runtime,
            client,
            context,
        }
    }

    /// The server's version, e.g. `2.9.10`.
    pub(crate) fn server_version(&self) -> String {
        self.client.server_info().version
    }

    /// A stream's state and configuration, if it exists.
    pub(crate) fn stream(&self, name: &str) -> Option<stream::Info> {
        self.runtime.block_on(async {
            let mut stream = self.context.get_stream(name).await.ok()?;
            stream.info().await.ok().cloned()
        })
    }

    /// A consumer's state and configuration, if it exists.
    pub(crate) fn consumer(&self, stream: &str, name: &str) -> Option<consumer::Info> {
        self.runtime.block_on(async {
            let stream = self.context.get_stream(stream).await.ok()?;
            stream.consumer_info(name).await.ok()
        })
    }

    /// Removes a stream and its consumers (nothing if it does not exist).
    pub(crate) fn delete_stream(&self, name: &str) {
        let _ = self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), self.context.delete_stream(name)).await
        });
    }
}

/// Removes the streams of the given subject prefixes when dropped, even if the test
/// failed.
pub(crate) struct Streams {
    admin: Admin,
    names: Vec<String>,
}

impl Streams {
    /// Remembers the stream of each prefix (`<prefix>_NOTIFICATIONS`).
    pub(crate) fn of(url: &str, prefixes: &[String]) -> Streams {
        Streams {
            admin: Admin::connect(url),
            names: prefixes.iter().map(|p| stream_name(p)).collect(),
        }
    }

    /// The admin connection, to look at them.
    pub(crate) fn admin(&self) -> &Admin {
        &self.admin
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        for name in &self.names {
            self.admin.delete_stream(name);
        }
    }
}

/// The stream the transport stores notifications of a subject prefix in.
pub(crate) fn stream_name(prefix: &str) -> String {
    format!("{prefix}_NOTIFICATIONS")
}

/// The durable consumer of a pool-less listener of `topic` at `priority`
/// (`info`, ...) on the default exchange.
pub(crate) fn poolless_consumer(topic: &str, priority: &str) -> String {
    format!("n-openstack-{topic}-{priority}--")
}

/// A nats-server of the test's own, with JetStream, on a port and storage directory
/// of its own (never the shared server on 4222): for tests that kill the server or
/// flood it. Killed (and its directory removed) when dropped. The fault tests'
/// `start-stop-daemon --stop --exec` stops every nats-server, this one included: a
/// test using one takes turns with them.
pub(crate) struct OwnServer {
    child: Option<std::process::Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl OwnServer {
    /// Starts one on the first free port from 14000 + (this process's id % 1000), and
    /// returns once it accepts connections.
    pub(crate) fn start() -> OwnServer {
        let first = 14_000 + (std::process::id() % 1000) as u16;
        let port = (first..first + 500)
            .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
            .expect("a free port for an own nats-server");
        let dir = std::env::temp_dir().join(format!("nats3-own-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        let child = std::process::Command::new("/usr/sbin/nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let server = OwnServer {
            child: Some(child),
            port,
            dir,
        };
        let started = std::time::Instant::now();
        while !server.reachable() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the own nats-server on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn reachable(&self) -> bool {
        std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_millis(200),
        )
        .is_ok()
    }

    /// Kills it (by its own process id) and returns once its port is closed.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        while self.reachable() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
