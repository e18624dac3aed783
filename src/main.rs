//! The `minipush` command line: `serve`, `sign`, `push`, `check-config`, `gen-secret`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use minipush::{auth, config::Secret, protocol::now_secs, Config, Server};

#[derive(Parser)]
#[command(
    name = "minipush",
    version,
    about = "Realtime push gateway for WeChat mini-programs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Development mode: 127.0.0.1, random token and API key printed, demo defaults.
        #[arg(long)]
        dev: bool,
    },
    /// Print a client ticket: line 1 the signature, line 2 the timestamp, line 3 the header.
    Sign {
        #[arg(long)]
        token: String,
        #[arg(long)]
        uid: Option<String>,
        /// Unix time in seconds (default: now).
        #[arg(long)]
        ts: Option<i64>,
    },
    /// Push JSON through a running gateway's HTTP API.
    Push(PushArgs),
    /// Validate a configuration file as `serve` would without --dev.
    CheckConfig { file: PathBuf },
    /// Print a random secret, for `auth.tokens` or `api.keys`.
    GenSecret,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("target").required(true))]
struct PushArgs {
    /// The gateway's base URL, e.g. http://127.0.0.1:9501
    #[arg(long)]
    url: String,
    /// An API key from `api.keys`.
    #[arg(long, env = "MINIPUSH_KEY")]
    key: String,
    #[arg(long, group = "target")]
    uid: Option<String>,
    #[arg(long, group = "target")]
    group: Option<String>,
    #[arg(long, group = "target")]
    conn: Option<String>,
    #[arg(long, group = "target")]
    all: bool,
    /// The JSON to push.
    json: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, dev } => serve(config, dev),
        Command::Sign { token, uid, ts } => {
            if let Some(u) = &uid {
                if !auth::valid_uid(u) {
                    eprintln!("error: --uid must be 1 to 64 characters from [A-Za-z0-9_.-]");
                    return ExitCode::FAILURE;
                }
            }
            let ts = ts.unwrap_or_else(now_secs);
            let sig = auth::sign(&token, ts, uid.as_deref());
            println!("{sig}\n{ts}");
            match uid {
                Some(u) => println!("Sec-WebSocket-Protocol: {sig}, {ts}, {u}"),
                None => println!("Sec-WebSocket-Protocol: {sig}, {ts}"),
            }
            ExitCode::SUCCESS
        }
        Command::Push(args) => push(args),
        Command::CheckConfig { file } => match Config::load(Some(&file), std::env::vars(), false) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        Command::GenSecret => {
            println!("{}", minipush::random_id(40));
            ExitCode::SUCCESS
        }
    }
}

fn serve(path: Option<PathBuf>, dev: bool) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MINIPUSH_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut config = match Config::load(path.as_deref(), std::env::vars(), dev) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let generated = dev.then(|| fill_dev_secrets(&mut config));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a Tokio runtime starts");
    let result = runtime.block_on(async move {
        let server = Server::start(config.clone()).await?;
        if let Some(generated) = generated {
            print_dev_banner(&config, server.addr(), &generated);
        }
        server.run_until_signal().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The dev token and API key: the configured ones, or fresh random ones.
struct DevSecrets {
    token: String,
    key: String,
}

fn fill_dev_secrets(config: &mut Config) -> DevSecrets {
    if config.auth.tokens.is_empty() {
        config.auth.tokens.push(Secret::new(format!(
            "dev-token-{}",
            minipush::random_id(24)
        )));
    }
    if config.api.keys.is_empty() {
        config
            .api
            .keys
            .push(Secret::new(format!("dev-key-{}", minipush::random_id(24))));
    }
    DevSecrets {
        token: config.auth.tokens[0].expose().to_string(),
        key: config.api.keys[0].expose().to_string(),
    }
}

/// `--dev` prints its secrets once, to standard output, by design, with a ready-to-paste
/// example: a browser console snippet and a `curl` push.
fn print_dev_banner(config: &Config, addr: std::net::SocketAddr, s: &DevSecrets) {
    let ts = now_secs();
    let sig = auth::sign(&s.token, ts, Some("demo"));
    let (ws, http) = if config.server.tls_cert.is_some() {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    let ws = format!("{ws}://{addr}{}", config.server.ws_path);
    let http = format!("{http}://{addr}");
    println!(
        r#"minipush (dev mode) listening on {http}
  client token: {token}
  API key:      {key}

1. In a browser console (ticket for uid "demo", valid {skew} s):
   const ws = new WebSocket("{ws}", ["{sig}", "{ts}", "demo"]);
   ws.onmessage = (e) => console.log(JSON.parse(e.data));

2. Push to it:
   curl -H 'Authorization: Bearer {key}' -d '{{"uid":"demo","data":{{"hello":"world"}}}}' {http}/api/push

3. Or open the browser demo: {http}/demo

New tickets: minipush sign --token {token} --uid demo
"#,
        token = s.token,
        key = s.key,
        skew = config.auth.max_skew_secs,
    );
}

fn push(args: PushArgs) -> ExitCode {
    // Kept as raw text so big integers and `1.0` reach the client unchanged.
    let data: Box<serde_json::value::RawValue> = match serde_json::from_str(&args.json) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: the JSON argument is not JSON: {e}");
            return ExitCode::FAILURE;
        }
    };
    let target = match (args.uid, args.group, args.conn) {
        (Some(u), _, _) => format!("\"uid\":{}", serde_json::json!(u)),
        (_, Some(g), _) => format!("\"group\":{}", serde_json::json!(g)),
        (_, _, Some(c)) => format!("\"conn\":{}", serde_json::json!(c)),
        _ => "\"all\":true".to_string(),
    };
    let body = format!("{{{target},\"data\":{}}}", data.get());
    let url = format!("{}/api/push", args.url.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime starts");
    let outcome = runtime.block_on(async {
        let res = reqwest::Client::new()
            .post(&url)
            .bearer_auth(&args.key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = res.status();
        Ok::<_, reqwest::Error>((status, res.text().await?))
    });
    match outcome {
        Ok((status, text)) => {
            println!("{text}");
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}
