//! The pattern framework in-process against a real nats-server.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use mediabus_e2e::EVENTS_SEEN;
use mediabus_rpc::{RpcClient, RpcError, ServiceConfig, codes};
use serde_json::{Value, json};

use crate::App;

#[tokio::test]
async fn a_nestjs_request_gets_one_disposed_reply_echoing_its_id() {
    let app = App::with_defaults().await;
    let reply = app.raw_request("rust.echo", r#"{"pattern":"rust.echo","data":{"a":[1,"é"]},"id":"req-1"}"#).await;
    assert_eq!(reply, json!({"response":{"a":[1,"é"]},"isDisposed":true,"id":"req-1"}));
}

#[tokio::test]
async fn a_raw_payload_is_the_data_of_a_plain_request() {
    let app = App::with_defaults().await;
    let reply = app.raw_request("rust.echo", r#"{"id":"not-the-request-id"}"#).await;
    assert_eq!(reply, json!({"response":{"id":"not-the-request-id"},"isDisposed":true}));
}

#[tokio::test]
async fn a_failing_handler_replies_with_the_err_object() {
    let app = App::with_defaults().await;
    let reply = app.raw_request("rust.fail", r#"{"pattern":"rust.fail","data":{},"id":"f"}"#).await;
    let err = json!({"status":422,"code":"RUST_FAIL","message":"rust says no"});
    assert_eq!(reply, json!({"err": err, "isDisposed": true, "id": "f"}));
}

#[tokio::test]
async fn bad_input_gets_error_envelopes_and_the_worker_keeps_serving() {
    let app = App::with_defaults().await;

    let malformed = app.raw_request("rust.echo", "{\"pattern\":\"rust.echo\",\"data\":").await;
    assert_eq!(malformed["err"]["status"], 400);
    assert_eq!(malformed["err"]["code"], codes::MALFORMED_PAYLOAD);

    let wrong_type = app.raw_request("rust.missing_type", r#"{"pattern":"p","data":{"n":"seven"},"id":"w"}"#).await;
    assert_eq!((wrong_type["err"]["status"].clone(), wrong_type["id"].clone()), (json!(400), json!("w")));
    assert_eq!(wrong_type["err"]["code"], codes::INVALID_PAYLOAD);
    assert!(wrong_type["err"]["message"].as_str().unwrap().contains("invalid type"), "{wrong_type}");

    let big = format!(r#"{{"pattern":"rust.echo","data":"{}","id":"big"}}"#, "x".repeat(2 * 1024 * 1024));
    let too_large = app.raw_request("rust.echo", big).await;
    assert_eq!((too_large["err"]["status"].clone(), too_large["id"].clone()), (json!(413), json!("big")));
    assert_eq!(too_large["err"]["code"], codes::PAYLOAD_TOO_LARGE);

    let panicked = app.raw_request("rust.panic", r#"{"pattern":"rust.panic","data":null,"id":"p"}"#).await;
    let err = json!({"status":500,"code":"INTERNAL","message":"internal error"});
    assert_eq!(panicked, json!({"err": err, "isDisposed": true, "id": "p"}));

    let still_ok: Value = app.rpc().call("rust.echo", &json!("alive")).await.unwrap();
    assert_eq!(still_ok, json!("alive"));
}

#[tokio::test]
async fn a_packet_without_id_is_an_event_handled_without_reply() {
    let app = App::with_defaults().await;
    let mut seen = app.nats.subscribe(EVENTS_SEEN).await.unwrap();
    let mut inbox = app.nats.subscribe("test.inbox").await.unwrap();
    app.nats.flush().await.unwrap();

    // Even with a reply inbox attached, a NestJS packet without id gets no reply.
    let event = r#"{"pattern":"rust.event","data":{"seq":1}}"#;
    app.nats.publish_with_reply("rust.event", "test.inbox", event.into()).await.unwrap();
    app.rpc().emit("rust.event", &json!({"seq": 2}), Default::default()).await.unwrap();

    for seq in [1, 2] {
        let msg = tokio::time::timeout(Duration::from_secs(5), seen.next()).await.unwrap().unwrap();
        let report: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(report["data"], json!({"seq": seq}));
    }
    let reply = tokio::time::timeout(Duration::from_millis(300), inbox.next()).await;
    assert!(reply.is_err(), "an event must not be answered");
}

/// A deadline bounds a request's wait; an event has no one waiting, so one that carries a
/// deadline already past (copied from the request that caused it) still runs.
#[tokio::test]
async fn an_event_runs_whatever_deadline_it_carries() {
    let app = App::with_defaults().await;
    let mut seen = app.nats.subscribe(EVENTS_SEEN).await.unwrap();
    app.nats.flush().await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(mediabus_rpc::DEADLINE_HEADER, "1");
    app.rpc().emit("rust.event", &json!({"seq": "late"}), headers).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), seen.next()).await.expect("the event ran").unwrap();
    let report: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(report["data"], json!({"seq": "late"}));
}

#[tokio::test]
async fn a_request_to_an_event_only_subject_is_a_404() {
    let app = App::with_defaults().await;
    let err = app.rpc().call::<_, Value>("rust.event", &json!({})).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (404, codes::PATTERN_NOT_FOUND));
}

#[tokio::test]
async fn the_client_maps_no_responders_to_503_and_timeouts_to_504() {
    let app = App::with_defaults().await;
    let err = app.rpc().call::<_, Value>("nobody.home", &json!({})).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (503, codes::UNAVAILABLE));

    let impatient = app.rpc().with_timeout(Duration::from_millis(100));
    let err = impatient.call::<_, Value>("rust.slow", &json!({"ms": 1000})).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (504, codes::TIMEOUT));
}

#[tokio::test]
async fn the_client_gets_remote_errors_and_forwards_headers() {
    let app = App::with_defaults().await;
    let err = app.rpc().call::<_, Value>("rust.fail", &json!({})).await.unwrap_err();
    assert_eq!(err, RpcError::new(422, "RUST_FAIL", "rust says no"));

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", "Bearer t0k3n");
    headers.insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let seen: Value = app.rpc().call_with_headers("rust.headers", &json!({}), headers).await.unwrap();
    assert_eq!(seen["bearer"], "t0k3n");
    assert_eq!(seen["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
}

#[tokio::test]
async fn a_handler_past_its_timeout_gets_a_504() {
    let mut config = ServiceConfig::new("test", "0.1.0");
    config.request_timeout = Duration::from_millis(100);
    let app = App::spawn(config).await;
    let err = app.rpc().call::<_, Value>("rust.slow", &json!({"ms": 2000})).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (504, codes::TIMEOUT));
}

#[tokio::test]
async fn requests_past_the_concurrency_limit_wait_their_turn() {
    let mut config = ServiceConfig::new("test", "0.1.0");
    config.max_concurrency = 2;
    let app = App::spawn(config).await;
    let rpc = app.rpc();
    let slow = json!({"ms": 50});
    let calls = (0..12).map(|_| rpc.call::<_, Value>("rust.slow", &slow));
    let results = futures_util::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(app.state.peak_in_flight.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_service_api_lists_endpoints_and_counts_requests_and_errors() {
    let app = App::with_defaults().await;
    let rpc = app.rpc();
    for _ in 0..3 {
        rpc.call::<_, Value>("rust.echo", &json!(1)).await.unwrap();
    }
    for _ in 0..2 {
        rpc.call::<_, Value>("rust.fail", &json!(1)).await.unwrap_err();
    }
    app.raw_request("rust.echo", "not json").await;

    let ping = app.raw_request("$SRV.PING.test", "").await;
    assert_eq!(ping["name"], "test");

    let info = app.raw_request("$SRV.INFO.test", "").await;
    let mut subjects: Vec<&str> =
        info["endpoints"].as_array().unwrap().iter().map(|e| e["subject"].as_str().unwrap()).collect();
    subjects.sort();
    let expected = [
        "rust.bytes",
        "rust.echo",
        "rust.event",
        "rust.fail",
        "rust.guarded",
        "rust.headers",
        "rust.missing_type",
        "rust.panic",
        "rust.slow",
        "rust.whoami",
    ];
    assert_eq!(subjects, expected);
    assert!(info["endpoints"].as_array().unwrap().iter().all(|e| e["queue_group"] == "test"), "{info}");

    let stats = app.raw_request("$SRV.STATS.test", "").await;
    let endpoint = |subject: &str| {
        stats["endpoints"].as_array().unwrap().iter().find(|e| e["subject"] == subject).cloned().unwrap()
    };
    assert_eq!(
        (endpoint("rust.echo")["num_requests"].clone(), endpoint("rust.echo")["num_errors"].clone()),
        (json!(4), json!(1))
    );
    assert_eq!(
        (endpoint("rust.fail")["num_requests"].clone(), endpoint("rust.fail")["num_errors"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(endpoint("rust.fail")["last_error"], "422:rust says no");
}

#[tokio::test]
async fn the_service_comes_back_when_nats_restarts() {
    let mut app = App::with_defaults().await;
    let rpc = RpcClient::new(app.nats.clone()).with_timeout(Duration::from_millis(500));
    app.server.kill();
    app.server.resume();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match rpc.call::<_, Value>("rust.echo", &json!("back")).await {
            Ok(v) => break assert_eq!(v, json!("back")),
            Err(_) if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("service did not come back: {e}"),
        }
    }
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_then_stops_answering() {
    let app = App::with_defaults().await;
    let rpc = app.rpc();
    let in_flight: Vec<_> = (0..8)
        .map(|_| {
            let rpc = rpc.clone();
            tokio::spawn(async move { rpc.call::<_, Value>("rust.slow", &json!({"ms": 300})).await })
        })
        .collect();
    // Shut down only once all 8 are in their handlers (polled: no fixed sleep).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.state.in_flight.load(Ordering::SeqCst) < 8 {
        assert!(tokio::time::Instant::now() < deadline, "8 requests in flight");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.running.shutdown().await;
    for call in in_flight {
        call.await.unwrap().expect("request in flight at shutdown is answered");
    }
    let err = rpc.call::<_, Value>("rust.echo", &json!(1)).await.unwrap_err();
    assert_eq!(err.status, 503);
}

#[tokio::test]
async fn a_binary_route_takes_raw_bytes_with_header_metadata_or_json() {
    let app = App::with_defaults().await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Part-Number", "3");
    let chunk = bytes::Bytes::from(vec![0u8, 159, 146, 150, 255]);
    let reply = app.nats.request_with_headers("rust.bytes", headers, chunk).await.unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply, json!({"response": {"binaryLen": 5, "part": "3"}, "isDisposed": true}));

    let json_reply = app.raw_request("rust.bytes", r#"{"pattern":"rust.bytes","data":{"a":1},"id":"b"}"#).await;
    assert_eq!(json_reply, json!({"response": {"json": {"a": 1}}, "isDisposed": true, "id": "b"}));

    // A typed route still refuses bytes that are not JSON.
    let refused = app.raw_request("rust.echo", vec![0u8, 159, 146]).await;
    assert_eq!(refused["err"]["code"], codes::MALFORMED_PAYLOAD);
}

/// A route's guard (`Router::guard`) answers before the body is decoded: without the token a
/// malformed body gets the guard's 401 (not 400), with the request id echoed; with it, the body
/// is decoded as usual.
#[tokio::test]
async fn a_guard_refuses_before_the_body_is_decoded() {
    let app = App::with_defaults().await;
    let malformed = r#"{"pattern":"rust.guarded","id":"g1","data":"#;
    let refused = app.raw_request("rust.guarded", malformed).await;
    assert_eq!((refused["err"]["status"].clone(), refused["err"]["code"].clone()), (json!(401), json!("UNAUTHORIZED")));
    let packet = r#"{"pattern":"rust.guarded","id":"g2","data":{"a":1}}"#;
    let refused = app.raw_request("rust.guarded", packet).await;
    assert_eq!((refused["err"]["status"].clone(), refused["id"].clone()), (json!(401), json!("g2")), "{refused}");

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", "Bearer let-me-in");
    let request = |body: &'static str| {
        let (nats, headers) = (app.nats.clone(), headers.clone());
        async move {
            let reply = nats.request_with_headers("rust.guarded", headers, body.into()).await.unwrap();
            serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };
    assert_eq!(request(packet).await["response"], json!({"json": {"a": 1}}));
    let decoded = request(r#"{"pattern":"rust.guarded","id":"g1","data":"#).await;
    assert_eq!(decoded["response"], json!({"binaryLen": malformed.len()}), "past the guard: bytes");
}
