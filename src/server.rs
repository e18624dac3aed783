//! Wiring: builds the shared [`App`] state from a [`Config`], binds the listener, runs the
//! actix-web server (over TLS when `server.tls_cert` is set) and the legacy text port,
//! and shuts them down gracefully (every client gets 1001 first).

use std::{
    io,
    net::{SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use actix_http::HttpService;
use actix_server::ServerHandle;
use actix_service::{map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::{
    body::BoxBody,
    dev::{AppConfig, ServiceResponse},
    web,
};

use crate::{
    alerts::{Alert, AlertTuning, Alerts},
    api,
    broker::{Broker, MemoryBroker, RedisBroker},
    config::Config,
    gateway,
    handlers::{Handler, Handlers},
    hub::{Hub, Target},
    legacy::LegacyPort,
    metrics::Metrics,
    protocol::close,
    wechat::Wechat,
};

/// State shared by every worker thread: configuration, hub, broker, handlers, counters.
pub struct App {
    pub config: Config,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    pub handlers: Handlers,
    pub metrics: Arc<Metrics>,
    pub node_id: String,
    /// The WeChat client, when `wechat.appid` and `wechat.secret` are set.
    pub wechat: Option<Wechat>,
    /// Operator alerts (a no-op without `alerts.dingtalk.webhook`).
    pub alerts: Alerts,
    conn_prefix: String,
    conn_seq: AtomicU64,
    /// WebSocket connection tasks still running (closing ones included).
    live: Arc<AtomicUsize>,
}

/// Counts one running connection task until dropped.
pub struct LiveConnection(Arc<AtomicUsize>);

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl App {
    /// Marks a connection task as running until the returned guard is dropped.
    pub fn connection_started(&self) -> LiveConnection {
        self.live.fetch_add(1, Ordering::Relaxed);
        LiveConnection(self.live.clone())
    }

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

/// Pending connections the kernel may queue before we accept them. std's `bind` asks for
/// 128, which drops SYNs when thousands of clients reconnect at once (after a deploy or a
/// network blip); the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// How long shutdown waits for queued alerts (the "node stopping" one) to be sent.
const ALERTS_FLUSH: Duration = Duration::from_secs(3);

/// Builds a server: a configuration plus any Rust handlers.
pub struct ServerBuilder {
    config: Config,
    handlers: Handlers,
    alert_tuning: AlertTuning,
}

impl ServerBuilder {
    /// Registers a Rust handler for message types matching `pattern` (`"game.move"` or
    /// `"game.*"`), after the built-in and upstream ones.
    pub fn handler(mut self, pattern: &str, handler: impl Handler) -> Result<Self, String> {
        self.handlers.register(pattern, handler)?;
        Ok(self)
    }

    /// Changes the alerts' timing (tests shorten DingTalk's one-minute window).
    pub fn alert_tuning(mut self, tuning: AlertTuning) -> Self {
        self.alert_tuning = tuning;
        self
    }

    /// Binds `server.listen` (port 0 picks a free port) and starts serving.
    pub async fn start(self) -> io::Result<Server> {
        let listener = bind(self.config.listen_addr())?;
        self.start_on(listener).await
    }

    /// Starts serving on an already bound listener.
    pub async fn start_on(self, listener: TcpListener) -> io::Result<Server> {
        let config = self.config;
        let metrics = Arc::new(Metrics::default());
        let node_id = config
            .server
            .node_id
            .clone()
            .unwrap_or_else(default_node_id);
        // Before the broker: a cluster broker raises `BrokerLost`/`BrokerRegained` on it.
        let alerts = Alerts::start(&config.alerts, &node_id, metrics.clone(), self.alert_tuning);
        let hub = Arc::new(Hub::new(
            config.limits.max_conns_per_uid,
            config.limits.outbound_queue,
            metrics.clone(),
        ));
        let ttl = Duration::from_secs(config.history.ttl_secs);
        let broker: Arc<dyn Broker> = match &config.broker.url {
            None => Arc::new(MemoryBroker::new(
                hub.clone(),
                metrics.clone(),
                config.history.size,
                ttl,
            )),
            Some(url) => Arc::new(
                RedisBroker::connect(
                    url.expose(),
                    hub.clone(),
                    metrics.clone(),
                    node_id.clone(),
                    config.history.size,
                    ttl,
                    alerts.clone(),
                )
                .await
                .map_err(io::Error::other)?,
            ),
        };
        let app = Arc::new(App {
            wechat: Wechat::new(&config.wechat, metrics.clone()),
            alerts,
            conn_prefix: format!("c{}.", crate::random_id(6)),
            conn_seq: AtomicU64::new(1),
            live: Arc::new(AtomicUsize::new(0)),
            hub,
            broker,
            handlers: self.handlers,
            metrics,
            node_id,
            config,
        });
        let addr = listener.local_addr()?;
        let tls = match (&app.config.server.tls_cert, &app.config.server.tls_key) {
            (Some(cert), Some(key)) => Some(
                crate::tls::server_config(cert, key)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            ),
            _ => None,
        };
        // actix-web serves every route; upgrade requests (WebSockets) go to the gateway
        // with their raw socket (TCP, or TLS over TCP), so no HTTP-layer buffers stay
        // attached to a connection.
        let server = actix_server::Server::build()
            .disable_signals()
            .shutdown_timeout(app.config.server.shutdown_grace_secs)
            // Our own limit answers 4009 after the upgrade; leave room above it.
            .max_concurrent_connections(app.config.limits.max_connections.saturating_add(1024));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let factory_app = app.clone();
        let server = match tls {
            None => server.listen("minipush", listener, move || {
                HttpService::build()
                    .local_addr(addr)
                    .tcp_nodelay(true)
                    .upgrade(gateway::upgrade_service(factory_app.clone()))
                    .finish(http_routes(&factory_app))
                    .tcp()
            })?,
            Some(tls) => server.listen("minipush-tls", listener, move || {
                HttpService::build()
                    .local_addr(addr)
                    .tcp_nodelay(true)
                    .upgrade(gateway::upgrade_service(factory_app.clone()))
                    .finish(http_routes(&factory_app))
                    .rustls_0_23(tls.clone())
            })?,
        };
        // Bound last, so that a failure above leaves no text port running.
        let legacy = match app.config.legacy.text_listen {
            Some(at) => Some(LegacyPort::start(app.clone(), at).await.map_err(|e| {
                io::Error::new(e.kind(), format!("`legacy.text_listen` {at}: {e}"))
            })?),
            None => None,
        };
        let server = server.run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        tracing::info!(%addr, scheme, node = %app.node_id, "minipush listening");
        app.alerts.notify(Alert::NodeStarted { addr });
        Ok(Server {
            addr,
            handle,
            app,
            task,
            legacy,
        })
    }
}

/// Every HTTP route (API, health, metrics, demo with `--dev`) as one service factory.
fn http_routes(
    app: &Arc<App>,
) -> impl actix_service::ServiceFactory<
    actix_http::Request,
    Config = (),
    Response = ServiceResponse<BoxBody>,
    Error = actix_web::HttpResponse,
    InitError = (),
> {
    let dev = app.config.dev;
    let routes = actix_web::App::new()
        .app_data(web::Data::from(app.clone()))
        .app_data(api::json_config(app.config.api.max_body_bytes))
        .route(
            &app.config.server.ws_path,
            web::get().to(gateway::not_websocket),
        )
        .configure(api::routes)
        .configure(|cfg| {
            if dev {
                crate::demo::routes(cfg)
            }
        })
        .default_service(web::to(api::not_found));
    let routes = routes
        .into_factory()
        .map_err(|err: actix_web::Error| err.error_response());
    map_config(routes, |_| AppConfig::default())
}

/// A running minipush server.
pub struct Server {
    addr: SocketAddr,
    handle: ServerHandle,
    app: Arc<App>,
    task: tokio::task::JoinHandle<io::Result<()>>,
    legacy: Option<LegacyPort>,
}

impl Server {
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder {
            handlers: Handlers::from_config(&config),
            config,
            alert_tuning: AlertTuning::default(),
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

    /// The address of the legacy text port, when `legacy.text_listen` is set.
    pub fn legacy_addr(&self) -> Option<SocketAddr> {
        self.legacy.as_ref().map(LegacyPort::addr)
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Stops accepting, closes every connection with 1001 (after flushing what is queued),
    /// waits for them to finish, at most `server.shutdown_grace_secs`, then stops.
    pub async fn shutdown(self) -> io::Result<()> {
        self.handle.pause().await;
        if let Some(legacy) = self.legacy {
            legacy.stop().await;
        }
        let n = self
            .app
            .hub
            .close_target(&Target::All, close::GOING_AWAY, "server shutting down");
        tracing::info!(connections = n, "shutting down");
        self.app
            .alerts
            .notify(Alert::NodeStopping { connections: n });
        let grace = Duration::from_secs(self.app.config.server.shutdown_grace_secs);
        let deadline = tokio::time::Instant::now() + grace;
        while self.app.live.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.app.broker.stop().await;
        self.handle.stop(true).await;
        self.app.alerts.shutdown(ALERTS_FLUSH).await;
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
