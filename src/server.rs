//! Wiring: builds the shared [`App`] state from a [`Config`], binds the listener, runs the
//! actix-web server, and shuts it down gracefully (every client gets 1001 first).

use std::{
    io,
    net::{SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_web::{dev::ServerHandle, web, HttpServer};

use crate::{
    api,
    broker::{Broker, MemoryBroker},
    config::Config,
    gateway,
    handlers::{Handler, Handlers},
    hub::{Hub, Target},
    metrics::Metrics,
    protocol::close,
};

/// State shared by every worker thread: configuration, hub, broker, handlers, counters.
pub struct App {
    pub config: Config,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub handlers: Handlers,
    pub metrics: Arc<Metrics>,
    pub node_id: String,
    conn_prefix: String,
    conn_seq: AtomicU64,
}

impl App {
    /// A connection id unique to this node's lifetime: `c<node tag>.<counter>`.
    pub fn new_conn_id(&self) -> Arc<str> {
        let n = self.conn_seq.fetch_add(1, Ordering::Relaxed);
        format!("{}{n:x}", self.conn_prefix).into()
    }
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| crate::config::is_name_char(*c))
        .take(48)
        .collect();
    let host = if host.is_empty() { "node".into() } else { host };
    format!("{host}-{}", crate::random_id(6))
}

/// Sets `TCP_USER_TIMEOUT` on each accepted socket: a peer that leaves our data
/// unacknowledged (it stopped reading, or vanished) for `limit` is dropped by the kernel.
/// Our own queues are already freed when such a client is closed with 4008; this frees the
/// socket and the few buffers the HTTP layer still holds for it.
fn drop_peers_that_stop_reading(io: &dyn std::any::Any, limit: Duration) {
    if let Some(tcp) = io.downcast_ref::<actix_web::rt::net::TcpStream>() {
        if let Err(e) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(limit)) {
            tracing::debug!("cannot set TCP_USER_TIMEOUT: {e}");
        }
    }
}

/// Builds a server: a configuration plus any Rust handlers.
pub struct ServerBuilder {
    config: Config,
    handlers: Handlers,
}

impl ServerBuilder {
    /// Registers a Rust handler for message types matching `pattern` (`"game.move"` or
    /// `"game.*"`), after the built-in and upstream ones.
    pub fn handler(mut self, pattern: &str, handler: impl Handler) -> Result<Self, String> {
        self.handlers.register(pattern, handler)?;
        Ok(self)
    }

    /// Binds `server.listen` (port 0 picks a free port) and starts serving.
    pub async fn start(self) -> io::Result<Server> {
        let listener = TcpListener::bind(self.config.listen_addr())?;
        self.start_on(listener).await
    }

    /// Starts serving on an already bound listener.
    pub async fn start_on(self, listener: TcpListener) -> io::Result<Server> {
        let config = self.config;
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(config.limits.max_conns_per_uid, metrics.clone()));
        let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(
            hub.clone(),
            metrics.clone(),
            config.history.size,
            Duration::from_secs(config.history.ttl_secs),
        ));
        let node_id = config
            .server
            .node_id
            .clone()
            .unwrap_or_else(default_node_id);
        let app = Arc::new(App {
            conn_prefix: format!("c{}.", crate::random_id(6)),
            conn_seq: AtomicU64::new(1),
            hub,
            broker,
            handlers: self.handlers,
            metrics,
            node_id,
            config,
        });
        let addr = listener.local_addr()?;
        let data = web::Data::from(app.clone());
        let ws_path = app.config.server.ws_path.clone();
        let json = api::json_config(app.config.api.max_body_bytes);
        let max_conns = app.config.limits.max_connections;
        let dev = app.config.dev;
        let unacked_limit = Duration::from_secs(app.config.heartbeat.timeout_secs);
        let server = HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .app_data(json.clone())
                .route(&ws_path, web::get().to(gateway::ws_route))
                .configure(api::routes)
                .configure(|cfg| {
                    if dev {
                        crate::demo::routes(cfg)
                    }
                })
                .default_service(web::to(api::not_found))
        })
        .on_connect(move |io, _| drop_peers_that_stop_reading(io, unacked_limit))
        .disable_signals()
        .shutdown_timeout(app.config.server.shutdown_grace_secs)
        // Our own limit answers 4009 after the upgrade; leave room above it for HTTP calls.
        .max_connections(max_conns.saturating_add(1024))
        .listen(listener)?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        tracing::info!(%addr, node = %app.node_id, "minipush listening");
        Ok(Server {
            addr,
            handle,
            app,
            task,
        })
    }
}

/// A running minipush server.
pub struct Server {
    addr: SocketAddr,
    handle: ServerHandle,
    app: Arc<App>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl Server {
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder {
            handlers: Handlers::from_config(&config),
            config,
        }
    }

    /// Starts a server with the built-in handlers only.
    pub async fn start(config: Config) -> io::Result<Server> {
        Self::builder(config).start().await
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops accepting, closes every connection with 1001 (after flushing what is queued),
    /// and waits for the server to finish, at most `server.shutdown_grace_secs`.
    pub async fn shutdown(self) -> io::Result<()> {
        let stopped = self.handle.stop(true);
        let n = self
            .app
            .hub
            .close_target(&Target::All, close::GOING_AWAY, "server shutting down");
        tracing::info!(connections = n, "shutting down");
        stopped.await;
        self.task.await.map_err(io::Error::other)?
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_signal(self) -> io::Result<()> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        self.shutdown().await
    }
}
