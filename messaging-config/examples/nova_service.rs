//! A service configured the way Nova is: `nova.conf` gives the RPC bus, the
//! notification bus, the timeout, the thread pool, ping and the notifier's drivers.
//!
//! ```sh
//! cargo run -p messaging-config --example nova_service                      # examples/nova.conf
//! cargo run -p messaging-config --example nova_service -- /etc/nova/nova.conf   # yours
//! ```
//!
//! The example is built with the RabbitMQ and NATS transports (the crate's
//! dev-dependencies), so a file naming rabbit:// or nats:// URLs runs on that bus.

use std::path::PathBuf;
use std::time::Duration;

use messaging_config::{Config, notification_transport, notifier, rpc_transport};
use messaging_core::dispatch::block_on;
use messaging_core::notify::{
    ListenerOptions, Notification, NotificationEndpoint, NotificationResult,
};
use messaging_core::rpc::{Endpoint, HandlerError, RpcClient, RpcDispatcher};
use messaging_core::{Context, Priority, Server, Subscription, Target};
use messaging_executors::{BlockingExecutor, ThreadPoolExecutor};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct GetState {
    instance_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct InstanceUpdate {
    instance_id: String,
    state: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/nova.conf"),
        PathBuf::from,
    );
    let config = Config::from_files([&path])?;
    println!("configuration: {config:?}"); // passwords hidden

    // The RPC side: [DEFAULT] transport_url, [oslo_messaging_rabbit], control_exchange,
    // executor_thread_pool_size and rpc_ping_enabled.
    let rpc = rpc_transport(&config)?;
    let endpoint = Endpoint::new().method("get_state", |_ctx: Context, args: GetState| {
        if args.instance_id.is_empty() {
            return Err(HandlerError::new("ValueError", "no instance id").expected());
        }
        Ok::<_, HandlerError>(format!("{} is ACTIVE", args.instance_id))
    });
    let dispatcher = RpcDispatcher::builder(vec![endpoint])
        .rpc_ping_enabled(config.rpc_ping_enabled())
        .build()?;
    let executor = ThreadPoolExecutor::new().with_max_workers(config.executor_thread_pool_size());
    let server = Server::builder(
        rpc.clone(),
        Subscription::Rpc(Target::new("compute").with_server("compute-1")),
        dispatcher,
        executor,
    )
    .build()?;
    server.start()?;

    let client =
        RpcClient::new(rpc, Target::new("compute")).with_timeout(config.rpc_response_timeout());
    let state: String = client.call_blocking(
        &Context::new(),
        "get_state",
        &GetState {
            instance_id: "1234".into(),
        },
    )?;
    println!("get_state: {state}");
    if config.rpc_ping_enabled() {
        println!("ping: {}", client.ping_blocking(&Context::new())?);
    }

    // The notification side: its own bus, and the notifier of
    // [oslo_messaging_notifications] (drivers, topics, retry).
    let notifications = notification_transport(&config)?;
    let notifier = notifier(&config, notifications.clone(), "compute.compute-1")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let on_info =
        NotificationEndpoint::new().on(Priority::Info, move |n: Notification<InstanceUpdate>| {
            let _ = tx.send((n.event_type, n.payload));
            NotificationResult::Handled
        });
    let topics = notifier
        .topics()
        .iter()
        .map(|t| Target::new(t.clone()))
        .collect();
    let listener = messaging_core::notify::listener(
        notifications,
        topics,
        vec![on_info],
        ListenerOptions::new(),
        BlockingExecutor::new(),
    )
    .build()?;
    listener.start()?;
    let listening = {
        let listener = listener.clone();
        std::thread::spawn(move || listener.execute())
    };
    let mut ctx = Context::new();
    ctx.insert("auth_token", "a-token-that-never-leaves");
    block_on(notifier.info(
        &ctx,
        "compute.instance.update",
        &InstanceUpdate {
            instance_id: "1234".into(),
            state: "ACTIVE".into(),
        },
    ))?;
    let (event_type, payload) = rx.recv_timeout(Duration::from_secs(10))?;
    println!("notification: {event_type} {payload:?}");

    for s in [&server, &listener] {
        s.stop()?;
        s.wait()?;
    }
    listening.join().expect("the listener's thread")?;
    Ok(())
}
