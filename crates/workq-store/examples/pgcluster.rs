//! Starts a throwaway PostgreSQL cluster, prints a database URL, and keeps it up for
//! `WORKQ_PG_SECONDS` (default 600) seconds: for trying workq against PostgreSQL by hand.
fn main() {
    let c = match workq_store::pgtest::Cluster::start() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start a cluster: {e}");
            std::process::exit(1);
        }
    };
    match c.create_db("workq") {
        Ok(url) => println!("{url}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
    let secs = std::env::var("WORKQ_PG_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    std::thread::sleep(std::time::Duration::from_secs(secs));
}
