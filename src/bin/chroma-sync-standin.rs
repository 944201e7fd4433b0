//! The local Chroma Sync stand-in, as a server (see `chroma_sync_operator::standin`).

use chroma_sync_operator::standin::{StandIn, Tokens};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Local stand-in for the Chroma Sync API (sources endpoints and /health)")]
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
    StandIn::new(args.databases, tokens).serve(listener).await
}
