//! The local Chroma Sync stand-in, as a server (see the library, `chroma_sync_standin`).

#![forbid(unsafe_code)]

use chroma_sync_standin::{Faults, RunPlan, StandIn, Tokens};
use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Local stand-in for the Chroma Sync API (sources and invocations endpoints, /health)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "STANDIN_LISTEN", default_value = "127.0.0.1:8089")]
    listen: String,
    /// A database that exists (repeat for more).
    #[arg(
        long = "database",
        env = "STANDIN_DATABASES",
        value_delimiter = ',',
        default_value = "default"
    )]
    databases: Vec<String>,
    /// A token of a team owner or admin (repeat for more).
    #[arg(
        long = "token",
        env = "STANDIN_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    tokens: Vec<String>,
    /// A token of a member who may read but not create or delete.
    #[arg(long = "viewer-token", value_delimiter = ',', hide_env_values = true)]
    viewer_tokens: Vec<String>,
    /// How long a new invocation stays pending (changeable at `PUT /_standin/runs`).
    #[arg(long, env = "STANDIN_RUN_PENDING_MS", default_value_t = RunPlan::default().pending_ms)]
    run_pending_ms: u64,
    /// How long a new invocation then processes before it completes.
    #[arg(long, env = "STANDIN_RUN_PROCESSING_MS", default_value_t = RunPlan::default().processing_ms)]
    run_processing_ms: u64,
    /// Limited mode: calls per second per token, above which the answer is 429 with
    /// `Retry-After: 1` (0: no limit; changeable at `PUT /_standin/faults`).
    #[arg(long, env = "STANDIN_CALLS_PER_SECOND", default_value_t = 0.0)]
    calls_per_second: f64,
    /// Limited mode's burst per token (0: one second's worth).
    #[arg(long, env = "STANDIN_BURST", default_value_t = 0)]
    burst: u32,
    /// A fixed delay before each call is answered.
    #[arg(long, env = "STANDIN_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let tokens = Tokens {
        admin: args.tokens.into_iter().collect(),
        viewer: args.viewer_tokens.into_iter().collect(),
    };
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    eprintln!(
        "chroma-sync stand-in listening on http://{}",
        listener.local_addr()?
    );
    let standin = StandIn::new(args.databases, tokens);
    standin.set_run_plan(RunPlan {
        pending_ms: args.run_pending_ms,
        processing_ms: args.run_processing_ms,
        fail_with: None,
    });
    standin.set_faults(Faults {
        calls_per_second: args.calls_per_second,
        burst: args.burst,
        latency_ms: args.latency_ms,
        ..Default::default()
    });
    standin.serve(listener).await
}
