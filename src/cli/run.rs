//! `wafstream run`: the embedded pipeline (see [`crate::embedded`]).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::RunArgs;
use crate::embedded::{self, Config, Outputs};
use crate::ingress::Limits;

fn addr(s: &str, what: &str) -> anyhow::Result<Option<SocketAddr>> {
    if s.is_empty() || s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .with_context(|| format!("--listen-{what} {s:?}: expected ip:port or `off`"))
}

pub(super) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let opts = args.mapping.options()?;
    let cfg = Config {
        tcp: addr(&args.listen_tcp, "tcp")?,
        udp: addr(&args.listen_udp, "udp")?,
        limits: Limits {
            max_message_bytes: args.max_message_bytes,
            max_connections: args.max_connections,
            idle_timeout: Duration::from_millis(args.idle_timeout_ms.max(1)),
        },
        bus_capacity: args.bus_capacity,
    };
    if cfg.tcp.is_none() && cfg.udp.is_none() {
        anyhow::bail!("nothing to listen on: both --listen-tcp and --listen-udp are off");
    }
    let docs: Box<dyn Write + Send> = if args.output == "-" {
        Box::new(BufWriter::with_capacity(1 << 16, io::stdout()))
    } else {
        Box::new(BufWriter::new(
            File::create(&args.output).with_context(|| format!("creating {}", args.output))?,
        ))
    };
    let dlq: Option<Box<dyn Write + Send>> = match &args.dlq {
        Some(p) => Some(Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        ))),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (summary, stats) = rt.block_on(embedded::run(
        cfg,
        opts,
        Outputs { docs, dlq },
        embedded::signal(),
        |kind, a| eprintln!("wafstream: listening on {kind} {a}"),
    ))?;
    eprintln!("{}", embedded::report(&summary, &stats));
    Ok(ExitCode::SUCCESS)
}
