//! What an idle connection costs the server: the real binary's resident memory grows by
//! less than 4 KiB per authenticated connection (issue 5's target). This is the debug
//! build under a gentle load, so it guards the budget, not the figure: BENCHMARKS.md has
//! the release build's, measured under load.

mod common;

use common::*;
use minipush::protocol::now_secs;

#[tokio::test]
async fn an_idle_connection_costs_less_than_4_kib() {
    const CLIENTS: usize = 3000;
    let server = spawn_binary(&[("MINIPUSH_AUTH_TOKENS", TOKEN), ("MINIPUSH_API_KEYS", KEY)]).await;
    let pid = server.child.id().unwrap();
    let srv = TestServer::at(server.addr);
    // Warm up allocator pools and maps with a first round that comes and goes.
    let mut warm = Vec::new();
    for i in 0..200 {
        warm.push(
            srv.open(Some(&ticket(TOKEN, now_secs(), Some(&format!("w{i}")))))
                .await,
        );
    }
    drop(warm);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let before = proc_status_kb(pid, "VmRSS");
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut c = srv
            .open(Some(&ticket(TOKEN, now_secs(), Some(&format!("u{i}")))))
            .await;
        assert_eq!(c.next().await["type"], "welcome");
        clients.push(c);
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = proc_status_kb(pid, "VmRSS");
    let per_conn = (after.saturating_sub(before) * 1024) as f64 / CLIENTS as f64;
    assert!(
        per_conn < 4096.0,
        "{per_conn:.0} bytes per idle connection ({before} kB -> {after} kB)"
    );
}
