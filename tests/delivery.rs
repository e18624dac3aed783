//! Reliable delivery (SPEC sections 2 and 5): `seq` order under concurrent pushers,
//! history and `resume` (complete, incomplete, across epochs, only readable streams, no
//! duplicates for pushes that arrived before the resume), slow consumers closed with 4008
//! while others keep receiving, and indexes emptied when everyone leaves.

mod common;

use common::*;
use futures_util::future::join_all;
use minipush::protocol::now_secs;
use serde_json::{json, Value};

async fn pushes(c: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(c.next_where(|v| v["type"] == "push").await);
    }
    out
}

/// Sends `resume` from `streams` and returns the reply's data.
async fn resume(c: &mut Client, streams: Value, epoch: &Value) -> Value {
    let msg = json!({"type": "resume", "streams": streams, "epoch": epoch});
    c.request("resume", msg).await["data"].clone()
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn resume_replays_what_was_missed_in_order() {
    let srv = TestServer::start().await;
    let (mut c, w) = srv.connect(Some("u1")).await;
    let epoch = w["epoch"].as_str().unwrap().to_string();
    for i in 1..=3 {
        srv.push(json!({"uid": "u1", "data": i})).await;
    }
    assert_eq!(seqs(&pushes(&mut c, 3).await), [1, 2, 3]);
    c.close().await;
    for i in 4..=7 {
        srv.push(json!({"uid": "u1", "data": i})).await;
    }
    srv.push(json!({"all": true, "data": "to all"})).await;
    let (mut c, w) = srv.connect(Some("u1")).await;
    assert_eq!(w["epoch"], epoch.as_str());
    c.send(json!({"type": "resume", "id": "r", "streams": {"u:u1": 3, "all": 0}, "epoch": epoch}))
        .await;
    let mut got = Vec::new();
    let reply = loop {
        let v = c.next().await;
        if v["type"] == "reply" {
            break v;
        }
        got.push(v);
    };
    let user: Vec<&Value> = got.iter().filter(|v| v["stream"] == "u:u1").collect();
    assert_eq!(
        user.iter()
            .map(|v| v["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );
    assert_eq!(
        user.iter()
            .map(|v| v["data"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );
    assert!(got.iter().any(|v| v["stream"] == "all" && v["seq"] == 1));
    assert_eq!(reply["ref"], "r");
    assert_eq!(reply["data"], json!({"resumed": 5, "complete": true}));
    // Nothing is re-sent unasked.
    c.silent_for(200).await;
}

#[tokio::test]
async fn resume_is_incomplete_when_history_no_longer_reaches_back() {
    let srv = TestServer::start_with(|c| c.history.size = 3).await;
    for i in 1..=10 {
        srv.push(json!({"uid": "u1", "data": i})).await;
    }
    let (mut c, w) = srv.connect(Some("u1")).await;
    c.send(json!({"type": "resume", "id": "r", "streams": {"u:u1": 2}, "epoch": w["epoch"]}))
        .await;
    assert_eq!(seqs(&pushes(&mut c, 3).await), [8, 9, 10]);
    assert_eq!(
        c.next().await["data"],
        json!({"resumed": 3, "complete": false})
    );
    // Within reach it is complete.
    let (mut c, w) = srv.connect(Some("u1")).await;
    c.send(json!({"type": "resume", "id": "s", "streams": {"u:u1": 8}, "epoch": w["epoch"]}))
        .await;
    assert_eq!(seqs(&pushes(&mut c, 2).await), [9, 10]);
    assert_eq!(
        c.next().await["data"],
        json!({"resumed": 2, "complete": true})
    );
}

#[tokio::test]
async fn resume_across_epochs_is_incomplete_and_replays_all_history() {
    let srv = TestServer::start().await;
    srv.push(json!({"uid": "u1", "data": 1})).await;
    srv.push(json!({"uid": "u1", "data": 2})).await;
    let (mut c, _) = srv.connect(Some("u1")).await;
    c.send(
        json!({"type": "resume", "id": "r", "streams": {"u:u1": 40}, "epoch": "another-server"}),
    )
    .await;
    assert_eq!(seqs(&pushes(&mut c, 2).await), [1, 2]);
    let r = c.next().await;
    assert_eq!(r["data"], json!({"resumed": 2, "complete": false}));
}

#[tokio::test]
async fn resume_on_a_connection_that_saw_everything_live_replays_nothing() {
    let srv = TestServer::start().await;
    let (mut c, w) = srv.connect(Some("u1")).await;
    srv.push(json!({"uid": "u1", "data": 1})).await;
    srv.push(json!({"uid": "u1", "data": 2})).await;
    pushes(&mut c, 2).await;
    assert_eq!(
        resume(&mut c, json!({"u:u1": 0}), &w["epoch"]).await,
        json!({"resumed": 0, "complete": true})
    );
}

#[tokio::test]
async fn resume_ignores_streams_the_connection_may_not_read() {
    let srv = TestServer::start().await;
    let (mut c, w) = srv.connect(Some("u1")).await;
    srv.push(json!({"uid": "u2", "data": "secret"})).await;
    srv.push(json!({"group": "g1", "data": "members only"}))
        .await;
    srv.push(json!({"conn": w["conn"], "data": "direct"})).await;
    c.next().await; // the direct push
    let streams = json!({"u:u2": 0, "g:g1": 0, "c:x": 0, "nonsense": 0});
    assert_eq!(
        resume(&mut c, streams, &w["epoch"]).await,
        json!({"resumed": 0, "complete": true})
    );
    // Once a member, the group's history is readable.
    c.request("j", json!({"type": "join", "group": "g1"})).await;
    assert_eq!(
        resume(&mut c, json!({"g:g1": 0}), &w["epoch"]).await,
        json!({"resumed": 1, "complete": true})
    );
    let e = c
        .request(
            "bad",
            json!({"type": "resume", "streams": {"all": -1}, "epoch": w["epoch"]}),
        )
        .await;
    assert_eq!(e["code"], "bad_request");
}

#[tokio::test]
async fn pushes_between_welcome_and_resume_are_not_sent_twice() {
    let srv = TestServer::start().await;
    let (c, w) = srv.connect(Some("u1")).await;
    c.close().await;
    for i in 1..=3 {
        srv.push(json!({"uid": "u1", "data": i})).await;
    }
    let (mut c, _) = srv.connect(Some("u1")).await;
    // Seq 4 arrives live before the client asks to resume from 0.
    srv.push(json!({"uid": "u1", "data": 4})).await;
    assert_eq!(c.next().await["seq"], 4);
    assert_eq!(
        resume(&mut c, json!({"u:u1": 0}), &w["epoch"]).await,
        json!({"resumed": 3, "complete": true})
    );
    srv.push(json!({"uid": "u1", "data": 5})).await;
    assert_eq!(c.next().await["seq"], 5);
}

#[tokio::test]
async fn welcome_and_join_say_where_live_pushes_start() {
    let srv = TestServer::start().await;
    for i in 0..3 {
        srv.push(json!({"all": true, "data": i})).await;
        srv.push(json!({"group": "g", "data": i})).await;
    }
    srv.push(json!({"uid": "u1", "data": 0})).await;
    let (mut c, w) = srv.connect(Some("u1")).await;
    assert_eq!(w["seqs"], json!({"all": 3, "u:u1": 1}));
    let (_, anon) = srv.connect(None).await;
    assert_eq!(anon["seqs"], json!({"all": 3}));
    let r = c.request("j", json!({"type": "join", "group": "g"})).await;
    assert_eq!(r["data"], json!({"joined": "g", "seq": 3}));
    srv.push(json!({"group": "g", "data": "live"})).await;
    assert_eq!(c.next().await["seq"], 4);
    // Resuming from those numbers replays nothing and misses nothing.
    let streams = json!({"all": 3, "u:u1": 1, "g:g": 3});
    assert_eq!(
        resume(&mut c, streams, &w["epoch"]).await,
        json!({"resumed": 0, "complete": true})
    );
}

#[tokio::test]
async fn group_pushes_between_join_and_resume_are_not_sent_twice() {
    let srv = TestServer::start().await;
    // g1 is joined by the client, g2 through the API membership of its uid.
    let (status, _) = srv
        .api("POST", "/api/groups/g2/members", Some(json!({"uid": "u1"})))
        .await;
    assert_eq!(status, 200);
    for i in 1..=2 {
        srv.push(json!({"group": "g1", "data": i})).await;
        srv.push(json!({"group": "g2", "data": i})).await;
    }
    let (mut c, w) = srv.connect(Some("u1")).await;
    let r = c.request("j", json!({"type": "join", "group": "g1"})).await;
    assert_eq!(r["data"]["seq"], 2);
    srv.push(json!({"group": "g1", "data": "live"})).await;
    srv.push(json!({"group": "g2", "data": "live"})).await;
    let live = pushes(&mut c, 2).await;
    assert!(live.iter().all(|p| p["seq"] == 3 && p["data"] == "live"));
    c.send(json!({"type": "resume", "id": "r", "streams": {"g:g1": 0, "g:g2": 0}, "epoch": w["epoch"]}))
        .await;
    let replayed = pushes(&mut c, 4).await;
    assert!(replayed.iter().all(|p| p["seq"] != 3), "{replayed:?}");
    assert_eq!(
        c.next().await["data"],
        json!({"resumed": 4, "complete": true})
    );
}

#[tokio::test]
async fn concurrent_pushers_keep_seq_order_without_gaps() {
    let srv = TestServer::start().await;
    let (mut a, _) = srv.connect(Some("u1")).await;
    let (mut b, _) = srv.connect(Some("u1")).await;
    let pushers = (0..8).map(|p| {
        let http = srv.http.clone();
        let url = srv.url("/api/push");
        async move {
            for i in 0..50 {
                let res = http
                    .post(&url)
                    .bearer_auth(KEY)
                    .json(&json!({"uid": "u1", "data": {"p": p, "i": i}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
            }
        }
    });
    let (_, sa, sb) = tokio::join!(
        join_all(pushers),
        async { seqs(&pushes(&mut a, 400).await) },
        async { seqs(&pushes(&mut b, 400).await) },
    );
    let expected: Vec<u64> = (1..=400).collect();
    assert_eq!(sa, expected);
    assert_eq!(sb, expected);
}

#[tokio::test]
async fn a_slow_consumer_is_closed_with_4008_and_others_keep_up() {
    let srv = TestServer::start_with(|c| c.limits.outbound_queue = 16).await;
    // A client that never reads anything.
    let _slow = RawClient::open(srv.addr, &ticket(TOKEN, now_secs(), Some("slow"))).await;
    let (mut fast, _) = srv.connect(Some("fast")).await;
    let big = "x".repeat(60_000);
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(None::<u64>);
    let producer = async {
        for sent in 1..=3000u64 {
            srv.push(json!({"all": true, "data": big})).await;
            let (_, state) = srv.api("GET", "/api/online/slow", None).await;
            if state["online"] == false {
                done_tx.send(Some(sent)).unwrap();
                return sent;
            }
        }
        panic!("the slow client was never closed");
    };
    let reader = async {
        let mut received = 0u64;
        loop {
            if done_rx.borrow().is_some_and(|total| received >= total) {
                return received;
            }
            tokio::select! {
                v = fast.next() => {
                    assert_eq!(v["seq"], received + 1);
                    received += 1;
                }
                _ = done_rx.changed() => {}
            }
        }
    };
    let (sent, received) = tokio::join!(producer, reader);
    assert_eq!(received, sent);
    let (_, metrics) = srv.api_as(None, "GET", "/metrics", None).await;
    let line = metrics
        .as_str()
        .unwrap()
        .lines()
        .find(|l| l.starts_with("minipush_dropped_total{reason=\"slow_consumer\"}"))
        .unwrap()
        .to_string();
    assert!(!line.ends_with(" 0"), "{line}");
}

#[tokio::test]
async fn indexes_are_empty_after_every_client_left() {
    let srv = TestServer::start().await;
    let mut clients = Vec::new();
    for i in 0..30 {
        let uid = format!("u{}", i % 7);
        let (mut c, _) = srv
            .connect(if i % 3 == 0 { None } else { Some(uid.as_str()) })
            .await;
        c.request(
            "j",
            json!({"type": "join", "group": format!("room{}", i % 4)}),
        )
        .await;
        clients.push(c);
    }
    let (_, stats) = srv.api("GET", "/api/stats", None).await;
    assert_eq!(stats["total"]["connections"], 30);
    assert_eq!(stats["total"]["groups"], 4);
    for c in clients {
        c.close().await;
    }
    let app = srv.server.as_ref().unwrap().app().clone();
    assert!(eventually(|| async { app.hub.is_empty() }).await);
    let (_, stats) = srv.api("GET", "/api/stats", None).await;
    assert_eq!(stats["total"]["connections"], 0, "{stats}");
    assert_eq!(stats["total"]["uids"], 0, "{stats}");
    assert_eq!(stats["total"]["groups"], 0, "{stats}");
}
