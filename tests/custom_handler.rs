//! SPEC section 3, Rust handlers: a handler implementing `minipush::handlers::Handler`,
//! registered with `ServerBuilder::handler`, sees the sender's identity (conn id, uid,
//! groups), replies to it, pushes to a uid or a group through `ctx.push`, and answers
//! errors with its own code; built-in types and bad patterns cannot be registered.

mod common;

use common::*;
use minipush::{
    handlers::{ClientMessage, Ctx, Handler, HandlerError, Reply},
    hub::Target,
    Server,
};
use serde_json::{json, Value};

/// A tiny game: `game.move` pushes the move to another player's uid, `game.shout` to a
/// group the sender is in, `game.whoami` reports the sender's identity.
struct Game;

#[async_trait::async_trait]
impl Handler for Game {
    async fn handle(&self, ctx: &Ctx, msg: &ClientMessage) -> Result<Reply, HandlerError> {
        match msg.ty() {
            "game.whoami" => Ok(json!({
                "conn": ctx.conn_id(),
                "uid": ctx.uid(),
                "groups": ctx.groups(),
            })
            .into()),
            "game.move" => {
                let to: String = msg.field("to")?;
                let pos: Value = msg.field("pos")?;
                let data = json!({"from": ctx.uid(), "conn": ctx.conn_id(), "pos": pos});
                let published = ctx.push(&Target::Uid(to), &data).await?;
                Ok(
                    json!({"moved": pos, "delivered": published.delivered, "seq": published.seq})
                        .into(),
                )
            }
            "game.shout" => {
                let group: String = msg.field("group")?;
                if !ctx.in_group(&group) {
                    return Err(HandlerError::new("not_playing", format!("join {group}")));
                }
                let text: String = msg.field("text")?;
                let published = ctx
                    .push(
                        &Target::Group(group),
                        &json!({"shout": text, "by": ctx.uid()}),
                    )
                    .await?;
                Reply::json(&json!({ "seq": published.seq }))
            }
            _ => Err(HandlerError::new("illegal_move", "no such move")),
        }
    }
}

async fn game_server() -> TestServer {
    let builder = Server::builder(base_config())
        .handler("game.*", Game)
        .expect("game.* can be registered");
    TestServer::from_builder(builder).await
}

#[tokio::test]
async fn handler_sees_the_senders_identity() {
    let srv = game_server().await;
    let (mut c, welcome) = srv.connect(Some("alice")).await;
    c.request("j", json!({"type": "join", "group": "arena"}))
        .await;
    let reply = c.request("1", json!({"type": "game.whoami"})).await;
    assert_eq!(reply["type"], "reply", "{reply}");
    assert_eq!(reply["ref"], "1");
    assert_eq!(
        reply["data"],
        json!({"conn": welcome["conn"], "uid": "alice", "groups": ["arena"]})
    );

    let (mut anon, welcome) = srv.connect(None).await;
    let reply = anon.request("2", json!({"type": "game.whoami"})).await;
    assert_eq!(
        reply["data"],
        json!({"conn": welcome["conn"], "uid": null, "groups": []})
    );
}

#[tokio::test]
async fn handler_replies_and_pushes_to_a_uid() {
    let srv = game_server().await;
    let (mut alice, welcome) = srv.connect(Some("alice")).await;
    let (mut bob, _) = srv.connect(Some("bob")).await;
    let (mut bob2, _) = srv.connect(Some("bob")).await;
    let reply = alice
        .request(
            "m1",
            json!({"type": "game.move", "to": "bob", "pos": [3, 4]}),
        )
        .await;
    assert_eq!(reply["type"], "reply", "{reply}");
    assert_eq!(
        reply["data"],
        json!({"moved": [3, 4], "delivered": 2, "seq": 1})
    );
    for c in [&mut bob, &mut bob2] {
        let push = c.next().await;
        assert_eq!(push["type"], "push", "{push}");
        assert_eq!(push["stream"], "u:bob");
        assert_eq!(push["seq"], 1);
        assert_eq!(
            push["data"],
            json!({"from": "alice", "conn": welcome["conn"], "pos": [3, 4]})
        );
    }
    alice.silent_for(300).await;
}

#[tokio::test]
async fn handler_pushes_to_a_group() {
    let srv = game_server().await;
    let (mut alice, _) = srv.connect(Some("alice")).await;
    let (mut bob, _) = srv.connect(Some("bob")).await;
    let (mut carol, _) = srv.connect(Some("carol")).await;
    for c in [&mut alice, &mut bob] {
        let r = c
            .request("j", json!({"type": "join", "group": "arena"}))
            .await;
        assert_eq!(r["data"], json!({"joined": "arena", "seq": 0}));
    }
    alice
        .send(json!({"type": "game.shout", "id": "s1", "group": "arena", "text": "go"}))
        .await;
    // The sender is a member too: it gets the push and its reply (in either order).
    let mut got_reply = false;
    let mut got_push = false;
    for _ in 0..2 {
        let frame = alice.next().await;
        match frame["type"].as_str() {
            Some("reply") => {
                assert_eq!(frame["ref"], "s1");
                assert_eq!(frame["data"], json!({"seq": 1}));
                got_reply = true;
            }
            Some("push") => {
                assert_eq!(frame["stream"], "g:arena");
                got_push = true;
            }
            _ => panic!("unexpected {frame}"),
        }
    }
    assert!(got_reply && got_push);
    let push = bob.next().await;
    assert_eq!(push["stream"], "g:arena", "{push}");
    assert_eq!(push["seq"], 1);
    assert_eq!(push["data"], json!({"shout": "go", "by": "alice"}));
    carol.silent_for(300).await;
}

#[tokio::test]
async fn handler_errors_reach_the_sender_with_their_code() {
    let srv = game_server().await;
    let (mut c, _) = srv.connect(Some("alice")).await;
    let answer = c
        .request(
            "x",
            json!({"type": "game.shout", "group": "arena", "text": "hi"}),
        )
        .await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "not_playing");
    let answer = c.request("y", json!({"type": "game.fly"})).await;
    assert_eq!(answer["code"], "illegal_move", "{answer}");
    // A missing field read with `msg.field` is a bad_request.
    let answer = c
        .request("z", json!({"type": "game.move", "to": "bob"}))
        .await;
    assert_eq!(answer["code"], "bad_request", "{answer}");
    // `game.*` does not claim `game` itself.
    let answer = c.request("w", json!({"type": "game"})).await;
    assert_eq!(answer["code"], "unknown_type", "{answer}");
    // The connection is still fine.
    let reply = c.request("e", json!({"type": "echo", "data": 1})).await;
    assert_eq!(reply["data"], json!({"echo": 1}));
}

#[tokio::test]
async fn built_in_types_and_bad_patterns_cannot_be_registered() {
    for pattern in [
        "echo", "chat", "ping", "join", "leave", "resume", "bind", "*", "", "a b",
    ] {
        let refused = Server::builder(base_config())
            .handler(pattern, Game)
            .is_err();
        assert!(refused, "{pattern:?} was accepted");
    }
    // Built-ins keep working on a server with a Rust handler.
    let srv = game_server().await;
    let (mut c, _) = srv.connect(None).await;
    let reply = c.request("e", json!({"type": "echo", "data": "x"})).await;
    assert_eq!(reply["data"], json!({"echo": "x"}));
}
