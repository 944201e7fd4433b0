//! The local Chroma Sync stand-in, as the tests and the benchmark run it.

use chroma_sync_standin::{StandIn, Tokens};

/// The one database the stand-in holds.
pub const DATABASE: &str = "docs";

/// A stand-in holding [`DATABASE`], where `admin` may create and delete and each of `viewers`
/// may only read, served on a free loopback port in the background; and its base URL.
pub async fn start(admin: &str, viewers: &[&str]) -> (StandIn, String) {
    let standin = StandIn::new(
        [DATABASE.to_owned()],
        Tokens {
            admin: [admin.to_owned()].into(),
            viewer: viewers.iter().map(|&v| v.to_owned()).collect(),
        },
    );
    let url = standin.start_local().await.expect("start the stand-in");
    (standin, url)
}
