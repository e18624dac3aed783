//! The browser demo routes: served with `--dev` only; `/demo/ticket` signs working tickets.

mod common;

use common::*;

#[tokio::test]
async fn demo_routes_exist_only_in_dev_mode() {
    let srv = TestServer::start().await;
    for path in ["/demo", "/demo/minipush.js", "/demo/ticket?uid=u1"] {
        let (status, body) = srv.api_as(None, "GET", path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
}

#[tokio::test]
async fn dev_mode_serves_the_page_the_library_and_working_tickets() {
    let srv = TestServer::start_with(|c| c.dev = true).await;
    let page = srv.http.get(srv.url("/demo")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("/demo/minipush.js"));
    let lib = srv
        .http
        .get(srv.url("/demo/minipush.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(lib.status(), 200);
    assert_eq!(
        lib.text().await.unwrap(),
        include_str!("../miniprogram-demo/utils/minipush.js")
    );

    let (status, t) = srv.api_as(None, "GET", "/demo/ticket?uid=u1", None).await;
    assert_eq!(status, 200);
    let header = format!(
        "{}, {}, {}",
        t["sig"].as_str().unwrap(),
        t["ts"],
        t["uid"].as_str().unwrap()
    );
    let mut c = srv.open(Some(&header)).await;
    assert_eq!(c.next().await["uid"], "u1");

    let (_, t) = srv.api_as(None, "GET", "/demo/ticket", None).await;
    assert_eq!(t["uid"], serde_json::Value::Null);
    let mut c = srv
        .open(Some(&format!(
            "{}, {}",
            t["sig"].as_str().unwrap(),
            t["ts"]
        )))
        .await;
    assert_eq!(c.next().await["type"], "welcome");

    let (status, _) = srv
        .api_as(None, "GET", "/demo/ticket?uid=bad%20uid", None)
        .await;
    assert_eq!(status, 400);
}
