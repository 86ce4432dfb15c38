//! notbetrieb: tells citizens, per town and per service, what works while their
//! administration's IT is down, and where else to go. Everything lives in the library crate;
//! `cli` parses the command line.

#[tokio::main]
async fn main() {
    notbetrieb::cli::main().await
}
